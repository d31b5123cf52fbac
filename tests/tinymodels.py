"""Tiny models built in a few lines for the tests: random weights with a fixed seed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv_net(seed: int = 0, c: int = 8, bn: bool = False, act: str = "Relu",
             opset: int = 17) -> onnx.ModelProto:
    """input(N,3,8,8) -> conv0 -> [bn] -> act -> conv1 -> [bn] -> act -> conv2 -> act -> conv3
    -> GlobalAveragePool -> Flatten -> fc (Gemm). Pairs expected: (conv1, conv2)."""
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes = []
    x, cin = "input", 3
    for i in range(4):
        w = f"conv{i}.weight"
        inits[w] = (rng.standard_normal((c, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits[f"conv{i}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, w, f"conv{i}.bias"], [f"conv{i}_out"],
                                      name=f"conv{i}", pads=[1, 1, 1, 1]))
        x = f"conv{i}_out"
        if bn:
            for k, v in {"g": 0.5 + rng.random(c), "b": 0.2 * rng.standard_normal(c),
                         "m": 0.3 * rng.standard_normal(c), "v": 0.5 + rng.random(c)}.items():
                inits[f"bn{i}.{k}"] = v.astype(np.float32)
            nodes.append(helper.make_node(
                "BatchNormalization", [x] + [f"bn{i}.{k}" for k in "gbmv"], [f"bn{i}_out"],
                name=f"bn{i}"))
            x = f"bn{i}_out"
        if i < 3:
            x = add_activation(nodes, inits, x, act, f"act{i}", c)
        cin = c
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits["fc.weight"] = (rng.standard_normal((10, c)) / np.sqrt(c)).astype(np.float32)
    inits["fc.bias"] = np.zeros(10, np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"],
                                  name="fc", transB=1))
    return make_model(
        nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, opset)


def add_activation(nodes, inits, x: str, act: str, name: str, c: int) -> str:
    """Append an activation, spelled the way exporters do; returns the output tensor."""
    if act == "Relu":
        nodes.append(helper.make_node("Relu", [x], [f"{name}_out"], name=name))
    elif act == "SiLU":  # x * sigmoid(x), two nodes
        nodes.append(helper.make_node("Sigmoid", [x], [f"{name}_sig"], name=f"{name}_sigmoid"))
        nodes.append(helper.make_node("Mul", [x, f"{name}_sig"], [f"{name}_out"], name=f"{name}_mul"))
    elif act == "ReLU6":
        inits[f"{name}.lo"] = np.array(0.0, np.float32)
        inits[f"{name}.hi"] = np.array(6.0, np.float32)
        nodes.append(helper.make_node("Clip", [x, f"{name}.lo", f"{name}.hi"], [f"{name}_out"],
                                      name=name))
    elif act == "PRelu":
        inits[f"{name}.slope"] = np.full((c, 1, 1), 0.1, np.float32)
        nodes.append(helper.make_node("PRelu", [x, f"{name}.slope"], [f"{name}_out"], name=name))
    elif act == "HardSwish":
        nodes.append(helper.make_node("HardSwish", [x], [f"{name}_out"], name=name))
    elif act == "Identity":
        return x
    else:
        raise ValueError(act)
    return f"{name}_out"
