"""Tiny models that are valid at one given ai.onnx opset, spelling each op the way that opset
wants it (Clip bounds as attributes below 11, Squeeze axes as an input from 13, Upsample below 10,
...). tests/test_opset.py converts each at every opset from 9 to the newest onnx knows.

Every model reads ``input`` (1, 3, 8, 8), and after a first convolution has a Conv -> BN -> Relu
-> ... -> Conv chain, so the conversion has a pair (its first layer on the low-bit grid) and
layers to quantize whatever op sits in between.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

C = 8  # channels of the hidden layers


class _Builder:
    """Collects nodes and initializers; seeded weights."""

    def __init__(self, opset: int, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.value_info: list[onnx.ValueInfoProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = value
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, name: str, k: int = 3) -> str:
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
        b = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        return self.node("Conv", [x, self.const(f"{name}.w", w), self.const(f"{name}.b", b)], name,
                         pads=[k // 2] * 4)

    def bn(self, x: str, c: int, name: str) -> str:
        r = self.rng
        ins = [x] + [self.const(f"{name}.{k}", v.astype(np.float32)) for k, v in
                     (("g", 0.5 + r.random(c)), ("b", 0.2 * r.standard_normal(c)),
                      ("m", 0.3 * r.standard_normal(c)), ("v", 0.5 + r.random(c)))]
        return self.node("BatchNormalization", ins, name, epsilon=1e-5)

    def axes_op(self, op: str, x: str, axes: list[int], name: str, since: int, **attrs) -> str:
        """An op whose axes moved from an attribute to an input at opset ``since``."""
        if self.opset < since:
            return self.node(op, [x], name, axes=axes, **attrs)
        return self.node(op, [x, self.const(f"{name}.axes", np.array(axes, np.int64))], name, **attrs)

    def head(self, x: str, c: int, hw: int, flatten: str = "Flatten") -> str:
        """(1, c, hw, hw) -> logits (1, 10) by Flatten or Reshape, then Gemm."""
        if flatten == "Flatten":
            flat = self.node("Flatten", [x], "flatten", axis=1)
        else:
            flat = self.node("Reshape", [x, self.const("flat.shape", np.array([1, -1], np.int64))],
                             "reshape")
        w = (self.rng.standard_normal((10, c * hw * hw)) / np.sqrt(c * hw * hw)).astype(np.float32)
        b = np.zeros(10, np.float32)
        return self.node("Gemm", [flat, self.const("fc.w", w), self.const("fc.b", b)], "fc", transB=1)

    def first(self) -> str:
        """input -> Conv -> Relu: the first layer, which the default options keep at high bits,
        so that the pair after it gets the low bits."""
        return self.node("Relu", [self.conv("input", 3, C, "conv_in")], "relu_in")

    def stem(self) -> str:
        """first -> Conv -> BN -> Relu: the first layer of every model's pair."""
        return self.node("Relu", [self.bn(self.conv(self.first(), C, C, "conv0"), C, "bn0")], "relu0")

    def model(self, out: str, out_shape: list) -> onnx.ModelProto:
        self.nodes[-1].output[0] = "output"
        graph = helper.make_graph(
            self.nodes, f"opset{self.opset}",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()], value_info=self.value_info)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        # The lowest IR version that carries this opset: what the exporter of that time wrote.
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), True)
        return model


def conv_bn_reshape(opset: int, flatten: str = "Reshape") -> onnx.ModelProto:
    """Conv+BN+Relu -> Conv+BN+Relu -> Reshape (or Flatten) -> Gemm."""
    b = _Builder(opset)
    x = b.node("Relu", [b.bn(b.conv(b.stem(), C, C, "conv1"), C, "bn1")], "relu1")
    return b.model(b.head(x, C, 8, flatten), [1, 10])


def conv_bn_flatten(opset: int) -> onnx.ModelProto:
    return conv_bn_reshape(opset, "Flatten")


def upsample(opset: int) -> onnx.ModelProto:
    """Nearest 2x upsampling between the convolutions: Upsample below opset 10, Resize from 10
    (scales its second input at 10, its third from 11, after a roi that is required until 13)."""
    b = _Builder(opset)
    x = b.stem()
    scales = b.const("up.scales", np.array([1, 1, 2, 2], np.float32))
    if opset < 10:
        x = b.node("Upsample", [x, scales], "up", mode="nearest")
    elif opset == 10:
        x = b.node("Resize", [x, scales], "up", mode="nearest")
    elif opset < 13:  # roi became optional at 13
        x = b.node("Resize", [x, b.const("up.roi", np.zeros(0, np.float32)), scales], "up", mode="nearest")
    else:
        x = b.node("Resize", [x, "", scales], "up", mode="nearest")
    x = b.conv(x, C, C, "conv1")
    return b.model(b.node("GlobalAveragePool", [x], "gap"), [1, C, 1, 1])


def dropout(opset: int) -> onnx.ModelProto:
    """Dropout (inference: identity) between the convolutions; its ratio is an attribute below
    opset 12 and an optional input from 12, where it is left out."""
    b = _Builder(opset)
    x = b.stem()
    x = b.node("Dropout", [x], "drop", **({"ratio": 0.25} if opset < 12 else {}))
    return b.model(b.conv(x, C, C, "conv1"), [1, C, 8, 8])


def clip(opset: int) -> onnx.ModelProto:
    """Conv -> BN -> Clip(0, 6) -> Conv: bounds are attributes below opset 11, inputs from 11."""
    b = _Builder(opset)
    x = b.bn(b.conv(b.first(), C, C, "conv0"), C, "bn0")
    if opset < 11:
        x = b.node("Clip", [x], "relu6", min=0.0, max=6.0)
    else:
        x = b.node("Clip", [x, b.const("lo", np.array(0, np.float32)),
                            b.const("hi", np.array(6, np.float32))], "relu6")
    return b.model(b.conv(x, C, C, "conv1"), [1, C, 8, 8])


def pad(opset: int) -> onnx.ModelProto:
    """Zero padding between the convolutions (pads an attribute below opset 11, an input from 11),
    the second convolution unpadded."""
    b = _Builder(opset)
    x = b.stem()
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    if opset < 11:
        x = b.node("Pad", [x], "pad", pads=pads, mode="constant", value=0.0)
    else:
        x = b.node("Pad", [x, b.const("pad.pads", np.array(pads, np.int64))], "pad", mode="constant")
    w = (b.rng.standard_normal((C, C, 3, 3)) * np.sqrt(2 / (C * 9))).astype(np.float32)
    x = b.node("Conv", [x, b.const("conv1.w", w), b.const("conv1.b", np.zeros(C, np.float32))],
               "conv1")
    return b.model(x, [1, C, 8, 8])


def squeeze_unsqueeze(opset: int) -> onnx.ModelProto:
    """Unsqueeze then Squeeze axis 0 between the convolutions: axes an attribute below opset 13,
    an input from 13."""
    b = _Builder(opset)
    x = b.axes_op("Unsqueeze", b.stem(), [0], "unsq", 13)
    x = b.axes_op("Squeeze", x, [0], "sq", 13)
    return b.model(b.conv(x, C, C, "conv1"), [1, C, 8, 8])


def reduce_mean(opset: int) -> onnx.ModelProto:
    """Conv+BN+Relu -> Conv -> ReduceMean over H, W (axes an attribute below opset 18, an input
    from 18) -> Flatten -> Gemm."""
    b = _Builder(opset)
    x = b.conv(b.stem(), C, C, "conv1")
    x = b.axes_op("ReduceMean", x, [2, 3], "mean", 18, keepdims=1)
    return b.model(b.head(x, C, 1), [1, 10])


def stale_reshape(opset: int, output_rank: int | None = None) -> onnx.ModelProto:
    """The real exporter case: x.view(N, C, -1).flatten(1) written as Reshape(x, Concat(Shape(x)[0:2],
    [-1])) -> Reshape(., [1, -1]) -> Gemm, with value_info written by the exporter that declares the
    first Reshape's output with rank 2 (stale: it is rank 3). Reshape-5/13 infer no rank from a
    shape that is not constant, so the full checker accepts the model up to opset 13; Reshape-14
    infers rank 3 from the length of the shape input, and the stale entry then fails the full
    checker ("differ in rank: (3) vs (2)"). ONNX Runtime runs the model at every opset (it merges
    shapes leniently). ``output_rank`` also declares the graph output with that (stale) rank."""
    b = _Builder(opset)
    x = b.conv(b.stem(), C, C, "conv1")
    shape = b.node("Shape", [x], "shape")
    nc = b.node("Gather", [shape, b.const("first2", np.array([0, 1], np.int64))], "nc", axis=0)
    target = b.node("Concat", [nc, b.const("minus1", np.array([-1], np.int64))], "target", axis=0)
    view = b.node("Reshape", [x, target], "view")
    b.value_info.append(helper.make_tensor_value_info(view, TensorProto.FLOAT, [1, C * 64]))
    flat = b.node("Reshape", [view, b.const("flat.shape", np.array([1, -1], np.int64))], "flatten")
    w = (b.rng.standard_normal((10, C * 64)) / 8).astype(np.float32)
    y = b.node("Gemm", [flat, b.const("fc.w", w), b.const("fc.b", np.zeros(10, np.float32))], "fc",
               transB=1)
    if output_rank is not None:  # a stale graph output too: the Gemm's value declared 3-D
        y = b.node("Identity", [y], "out")
    return b.model(y, [1, 10] if output_rank is None else [1] * output_rank)


MODELS: dict[str, Callable[[int], onnx.ModelProto]] = {
    "conv_bn_reshape_gemm": conv_bn_reshape,
    "conv_bn_flatten_gemm": conv_bn_flatten,
    "upsample_resize": upsample,
    "dropout": dropout,
    "clip": clip,
    "pad": pad,
    "squeeze_unsqueeze": squeeze_unsqueeze,
    "reduce_mean": reduce_mean,
}
