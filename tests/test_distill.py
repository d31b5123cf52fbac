"""Distilled inputs: an optional extra that the default path never imports."""

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx.errors import OptionsError


def bn_model():
    rng = np.random.default_rng(0)
    f = np.float32
    w = {"w": (rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(f), "s": np.ones(4, f),
         "b": np.zeros(4, f), "m": np.array([0.5, -0.5, 1.0, 0.0], f), "v": np.array([0.2, 2.0, 1.0, 0.5], f)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    g = helper.make_graph(nodes, "bn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                          [numpy_helper.from_array(v, k) for k, v in w.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_default_path_never_imports_torch():
    code = ("import sys, dfmpc_onnx.measure.synthetic, dfmpc_onnx.measure.fidelity, dfmpc_onnx.cli; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_is_an_options_error(monkeypatch):
    from dfmpc_onnx.measure.distill import distilled_inputs

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(OptionsError, match=r"dfmpc-onnx\[synth\]"):
        distilled_inputs(bn_model(), n=2, steps=1)


def test_statistics_move_to_the_running_ones():
    pytest.importorskip("torch")
    pytest.importorskip("onnx2torch")
    from dfmpc_onnx.measure.distill import distill

    model = bn_model()
    x, losses = distill(model, n=8, steps=40, lr=0.1, seed=1)
    again, _ = distill(model, n=8, steps=40, lr=0.1, seed=1)
    assert x["x"].shape == (8, 1, 8, 8) and x["x"].dtype == np.float32
    np.testing.assert_array_equal(x["x"], again["x"])
    assert losses[-1] < 0.5 * losses[0]


def test_a_model_without_batchnorm_is_refused():
    pytest.importorskip("torch")
    pytest.importorskip("onnx2torch")
    from dfmpc_onnx.measure.distill import distilled_inputs

    model = bn_model()
    model.graph.node[1].CopyFrom(helper.make_node("Relu", ["c"], ["y"]))
    with pytest.raises(OptionsError, match="BatchNormalization"):
        distilled_inputs(model, n=2, steps=1)
