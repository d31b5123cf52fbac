"""Which weight DequantizeLinear -> MatMul/Gemm patterns the installed ONNX Runtime fuses into
MatMulNBits on CPU, read from its optimised graphs (one tiny model per pattern).

    python -m benchmarks.matmul_fusion_probe

The answer depends on the ORT build, so it is measured, not restated: dfmpc_onnx/matmul_form.py
writes the converter's layers in the forms this finds fusing, and tests/test_matmul_form.py pins
the cases the converter relies on. Each line: the pattern, then the operators ORT runs for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx.validate.fusion import fused_nodes

_TYPES = {"int2": (ml_dtypes.int2, -2, 1), "int4": (ml_dtypes.int4, -8, 7),
          "uint4": (ml_dtypes.uint4, 0, 15), "int8": (np.int8, -128, 127), "uint8": (np.uint8, 0, 255)}


def pattern(k: int = 256, n: int = 64, block: int | None = 32, dtype: str = "int4",
            zero_point: bool = False, op: str = "MatMul", trans_b: int = 0, fp16: bool = False,
            after: str | None = None, consumers: int = 1, bias: bool = True) -> onnx.ModelProto:
    """x[n?, k] -> DequantizeLinear(q) -> op, blocks along K (or per column when block is None);
    ``after``: an activation and a Mul behind a bias Add (a layer inside a network)."""
    rng = np.random.default_rng(0)
    np_type, lo, hi = _TYPES[dtype]
    shape = (n, k) if trans_b else (k, n)
    k_axis = 1 if trans_b else 0
    if block is None:
        sshape, attrs = (n,), {"axis": 1 - k_axis}
    else:
        sshape = list(shape)
        sshape[k_axis] = -(-k // block)
        attrs = {"axis": k_axis, "block_size": block}
    float_type = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array(rng.integers(lo, hi + 1, shape).astype(np_type), "q"),
             numpy_helper.from_array(rng.uniform(0.01, 0.1, sshape).astype(float_type), "s"),
             numpy_helper.from_array(np.zeros(n, float_type), "b")]
    dq_in = ["q", "s"]
    if zero_point:
        inits.append(numpy_helper.from_array(np.full(sshape, (lo + hi + 1) // 2, np_type), "z"))
        dq_in.append("z")
    nodes = [helper.make_node("DequantizeLinear", dq_in, ["w"], **attrs)]
    nodes.append(helper.make_node(op, ["x", "w"], ["m"], **({"transB": trans_b} if op == "Gemm" else {})))
    outputs = ["m"]
    if consumers == 2:
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["m2"]))
        outputs.append("m2")
    if after:
        act_in = "m"
        if bias:
            nodes.append(helper.make_node("Add", ["m", "b"], ["a"]))
            act_in = "a"
        nodes += [helper.make_node(after, [act_in], ["r"]), helper.make_node("Mul", ["r", "b"], ["y"])]
        outputs = ["y"]
    t = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", t, ["n", k])],
                              [helper.make_tensor_value_info(o, t, None) for o in outputs], inits)
    opset = 25 if dtype == "int2" else 21
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=11)
    return onnx.shape_inference.infer_shapes(model)


CASES: list[tuple[str, dict]] = [
    *[(f"int4, blocks of {b} along K", {"block": b, "k": 1024}) for b in (8, 16, 32, 64, 128, 256, 512)],
    ("int4, blocks of 48 (not a power of two)", {"block": 48, "k": 192}),
    ("int4, blocks of 32, K=200 (last block short)", {"k": 200}),
    ("int4, one scale per column (axis 1)", {"block": None}),
    ("int4, per column, K=200", {"block": None, "k": 200}),
    ("uint4 with zero points, blocks of 32", {"dtype": "uint4", "zero_point": True}),
    ("int8, blocks of 32", {"dtype": "int8"}),
    ("int8, per column", {"dtype": "int8", "block": None}),
    ("uint8 with zero points, per column", {"dtype": "uint8", "zero_point": True, "block": None}),
    ("int2, blocks of 32 (opset 25)", {"dtype": "int2"}),
    ("int2, per column (opset 25)", {"dtype": "int2", "block": None}),
    ("float16 scales and activations", {"fp16": True}),
    ("weight read by two MatMuls", {"consumers": 2}),
    ("Gemm transB=0", {"op": "Gemm"}),
    ("Gemm transB=1 (weight [N, K]), per row", {"op": "Gemm", "trans_b": 1, "block": None}),
    ("Gemm transB=1, blocks along K", {"op": "Gemm", "trans_b": 1}),
    *[(f"MatMul -> Add -> {a} -> Mul", {"after": a}) for a in ("Relu", "Sigmoid", "Tanh", "Gelu")],
    ("MatMul -> Relu -> Mul (no bias)", {"after": "Relu", "bias": False}),
    ("Gemm transB=0 -> Relu -> Mul (no bias)", {"op": "Gemm", "after": "Relu", "bias": False}),
    ("Gemm transB=0 -> Add -> Relu -> Mul", {"op": "Gemm", "after": "Relu"}),
]


def probe(cases: list[tuple[str, dict]] = CASES) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, kw) in enumerate(cases):
            path = Path(tmp) / f"p{i}.onnx"
            onnx.save(pattern(**kw), path)
            ops = fused_nodes(path)["ops"]
            rows.append((label, ", ".join(f"{op} x{c}" if c > 1 else op for op, c in ops.items())))
    return rows


def main() -> None:
    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, default session options")
    print("| pattern | ORT runs |\n|---|---|")
    for label, ops in probe():
        print(f"| {label} | {ops} |")


if __name__ == "__main__":
    main()
