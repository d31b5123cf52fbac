"""A ResNet-18-shaped ONNX model with random weights (11.7 M parameters), built with onnx.helper.

Random weights are enough to measure conversion time, file size and latency; accuracy figures
come from the trained examples. BatchNormalization is kept (so every correction path runs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def resnet18(seed: int = 0, classes: int = 1000, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        nodes.append(helper.make_node("Conv", [x, const(f"{name}.weight", w)], [f"{name}.conv"],
                                      name=f"{name}", kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[k // 2] * 4))
        bn = [const(f"{name}.bn.{p}", v) for p, v in (
            ("gamma", 0.5 + rng.random(cout)), ("beta", 0.1 * rng.standard_normal(cout)),
            ("mean", 0.1 * rng.standard_normal(cout)), ("var", 0.5 + rng.random(cout)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv"] + bn, [f"{name}.bn"],
                                      name=f"{name}.bn"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"],
                                      name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv_bn("input", "stem", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="maxpool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"layer{stage + 1}.{block}"
            h = conv_bn(x, f"{name}.conv1", cin, cout, 3, stride, True)
            h = conv_bn(h, f"{name}.conv2", cout, cout, 3, 1, False)
            skip = conv_bn(x, f"{name}.down", cin, cout, 1, stride, False) if (
                stride != 1 or cin != cout) else x
            nodes.append(helper.make_node("Add", [h, skip], [f"{name}.add"], name=f"{name}.add"))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"],
                                          name=f"{name}.out"))
            x, cin = f"{name}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    w = rng.standard_normal((classes, 512)) / np.sqrt(512)
    nodes.append(helper.make_node("Gemm", ["flat", const("fc.weight", w),
                                           const("fc.bias", np.zeros(classes))], ["logits"],
                                  name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model
