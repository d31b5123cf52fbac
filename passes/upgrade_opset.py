"""Upgrade the opset to what the quantized tensors need, just before they are emitted.

Each QuantizedTensor knows the lowest opset whose DequantizeLinear reads it (INT2 25; INT4, INT16
and block-wise scales 21; per-axis scales 13); float16/bfloat16 weights need scales of that type
(opset 19). The model is upgraded to the highest of these, and no further. Where the version
converter cannot do it and every tensor fits an 8-bit container, the grids are kept and stored in
int8 containers at the lowest opset that takes them (13, or the model's own), which the report says.
"""

from __future__ import annotations

import onnx

from dfmpc_onnx.errors import UnsupportedModelError
from dfmpc_onnx.model.graph import opset_version
from dfmpc_onnx.model.opset import OpsetUpgradeError, fit_runtime_opset, upgrade_opset
from dfmpc_onnx.quant.layer import count_bytes

from .base import Context, Fact

_HALF = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def needed_opset(model: onnx.ModelProto, ctx: Context, fmt: str) -> int:
    """The lowest opset that reads every quantized tensor of ``ctx`` in format ``fmt``."""
    if not ctx.quantized:
        return 0
    need = max(qt.min_opset(fmt) for qt in ctx.quantized.values())
    if ctx.options.integer_kernels:
        need = max(need, 13)  # per-channel int32 biases and activation Q/DQ
    if any(t.data_type in _HALF for t in model.graph.initializer):
        need = max(need, 19)
    return need


class UpgradeOpset:
    name = "upgrade-opset"
    requires = (Fact.OPSET_KNOWN, Fact.QUANTIZED)
    provides = (Fact.OPSET,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        current = opset_version(model)
        fmt = ctx.container_format or ctx.options.format
        target = max(current, needed_opset(model, ctx, fmt))
        try:
            changed = upgrade(model, target, ctx.report.notes)
        except UnsupportedModelError as exc:
            fallback = max(current, needed_opset(model, ctx, "int8"))
            if fmt == "int8" or fallback >= target:
                raise
            changed = upgrade(model, fallback, ctx.report.notes)  # raises for real if even that fails
            ctx.container_format = "int8"
            ctx.report.notes.append(
                f"{exc}; kept every grid but stored it in int8 containers at opset {fallback} "
                "instead (the file is larger than packed INT2/INT4 would be)")
            count_bytes(model.graph, ctx.quantized, ctx.container_format or ctx.options.format, ctx.report)
        # onnx may know opsets whose DequantizeLinear the installed ONNX Runtime lacks.
        floor = needed_opset(model, ctx, ctx.container_format or fmt)
        if floor:  # 0: nothing quantized, no DequantizeLinear to emit
            ctx.report.notes.extend(fit_runtime_opset(model, floor))
        ctx.report.opset_out = opset_version(model)
        return changed or ctx.report.opset_out != current


def upgrade(model: onnx.ModelProto, target: int, notes: list[str] | None = None) -> bool:
    """Upgrade ai.onnx to ``target`` in place (False if already there; exporter value_info that
    shape inference contradicts is dropped all the same), adding what was done to ``notes``.
    OpsetUpgradeError (an UnsupportedModelError) if it cannot: dfmpc_onnx/model/opset.py."""
    current = opset_version(model)
    try:
        done = upgrade_opset(model, target)
    except OpsetUpgradeError as exc:
        raise OpsetUpgradeError(f"{exc} (needed by DequantizeLinear for the chosen grids)",
                                current=exc.current, target=exc.target,
                                reachable=exc.reachable) from exc
    if notes is not None:
        notes.extend(done)
    return target > current
