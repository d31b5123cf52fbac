"""Pairs where real networks put them: one low-bit layer compensated by every layer that reads its
channels, through Concat, Split, branches and a kept BatchNormalization (pre-activation layouts).
Tiny graphs built here; numerics checked against ONNX Runtime and a NumPy reference."""

import numpy as np
from onnx import TensorProto, helper
from tinymodels import make_model

from dfmpc_onnx import ConvertOptions, inspect_model

PAIRS = ConvertOptions(method="pairs", fidelity_samples=0)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _conv_w(rng, cout, cin, k=1):
    return (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)


def caffe2_bn_net(seed=0, c=8):
    """Conv -> Mul(Unsqueeze(scale)) -> Add(Unsqueeze(shift)) -> Relu -> Conv: Caffe2's spelling
    of BN + ReLU in onnx's light DenseNet-121 and Inception v2 (opset 9, axes attribute)."""
    rng = np.random.default_rng(seed)
    inits = {"w0": _conv_w(rng, c, 3), "w1": _conv_w(rng, c, c, 3), "w2": _conv_w(rng, c, c),
             "w3": _conv_w(rng, 4, c), "s": (0.5 + rng.random(c)).astype(np.float32),
             "b": (0.1 * rng.standard_normal(c)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Unsqueeze", ["s"], ["s3"], name="us", axes=[1, 2]),
             helper.make_node("Mul", ["c1", "s3"], ["m1"], name="mul1"),
             helper.make_node("Unsqueeze", ["b"], ["b3"], name="ub", axes=[1, 2]),
             helper.make_node("Add", ["m1", "b3"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["out"], name="conv3")]
    return make_model(nodes, [_vi("input", [1, 3, 8, 8])], [_vi("out", [1, 4, 8, 8])], inits,
                      opset=9)


def test_unsqueezed_bn_constants_are_folded_so_the_pair_is_found():
    rep = inspect_model(caffe2_bn_net(), PAIRS)
    assert rep.pairs == [("conv1", "conv2")]
    assert rep.layer("conv1").activation == "Mul+Add+Relu"
