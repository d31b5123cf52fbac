"""Which quantized layers ONNX Runtime fused, read from the graph it actually runs.

A quantized model's speed depends on what ORT's optimiser makes of its DequantizeLinear nodes: a
weight DequantizeLinear fused into MatMulNBits (or an integer Conv/MatMul with quantized
activations) reads integers at every call; one left standing dequantizes the whole weight at every
call (slower than float); one constant-folded (``session.disable_quant_qdq``) runs at float
speed. The only reliable answer is the optimised graph itself, so this asks ORT to write it
(``optimized_model_filepath``) and reads it back, rather than restating ORT's rules here.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import onnx
import onnxruntime as ort

# Operators ORT substitutes for a quantized pattern: integer-weight or integer-activation kernels.
FUSED_OPS = ("MatMulNBits", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
             "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention")


def fused_nodes(model_path: str | os.PathLike[str], config: Mapping[str, str] | None = None,
                providers: list[str] | None = None) -> dict:
    """What ORT runs for ``model_path`` with session config entries ``config`` (e.g.
    ``{"session.disable_quant_qdq": "1"}``; none: ORT's defaults) at the default optimisation
    level.

    Returns ``{"fused": {op: count}`` of FUSED_OPS in the optimised graph, ``"fused_names"``: the
    names of those nodes (ORT keeps the layer's name on MatMulNBits), ``"weight_dequantize"``:
    names of DequantizeLinear nodes on constant inputs left to run at every call, ``"ops"``: the
    optimised graph's operator counts}."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimised.onnx"
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(os.fspath(model_path), options,
                             providers=providers or ["CPUExecutionProvider"])
        graph = onnx.load(out, load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    ops = Counter(n.op_type for n in graph.node)
    return {
        "fused": {op: ops[op] for op in FUSED_OPS if ops[op]},
        "fused_names": [n.name for n in graph.node if n.op_type in FUSED_OPS],
        "weight_dequantize": [n.name for n in graph.node if n.op_type == "DequantizeLinear"
                              and n.input[0] in constants],
        "ops": dict(ops),
    }


def summary(result: dict) -> str:
    """One line for a report: '4 MatMulNBits in ONNX Runtime's optimised graph; 2 weight
    DequantizeLinear run at every call'."""
    fused = ", ".join(f"{n} {op}" for op, n in result["fused"].items()) or "no fused node"
    left = len(result["weight_dequantize"])
    tail = f"; {left} weight DequantizeLinear run at every call" if left else ""
    return f"{fused} in ONNX Runtime's optimised graph{tail}"


def runs_fused(model_path: str | os.PathLike[str]) -> bool:
    """Whether ORT's default session options suit this model best: something fuses (MatMulNBits
    reads the integers) and no weight DequantizeLinear is left to run at every call. Otherwise
    ``session.disable_quant_qdq`` (weights dequantized once at load, float speed) is faster: a
    DequantizeLinear left on a Conv weight costs more than the layer. False when ORT cannot
    optimise the model here (it then fails to load with its own message elsewhere)."""
    try:
        found = fused_nodes(model_path)
    except Exception:  # noqa: BLE001 - the caller's session reports why the model does not load
        return False
    return bool(found["fused"]) and not found["weight_dequantize"]


def fused_or_none(model_path: str | os.PathLike[str], disable_quant_qdq: bool) -> dict | None:
    """``fused_nodes`` under the one setting ``validate`` times with, or None where ORT cannot
    write the optimised graph (e.g. over 2 GB): a report line, never a failure."""
    try:
        return fused_nodes(model_path, {"session.disable_quant_qdq": "1"} if disable_quant_qdq else None)
    except Exception:  # noqa: BLE001 - the figure is optional; the run itself reports load errors
        return None
