"""Upgrade the opset to what the quantized tensors need, just before they are emitted.

Each QuantizedTensor knows the lowest opset whose DequantizeLinear reads it (INT2 25; INT4, INT16
and block-wise scales 21; per-axis scales 13); float16/bfloat16 weights need scales of that type
(opset 19). The model is upgraded to the highest of these, and no further. Where the version
converter cannot do it and every tensor fits an 8-bit container, the grids are kept and stored in
int8 containers at the lowest opset that takes them (13, or the model's own), which the report says.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from dfmpc_onnx.errors import UnsupportedModelError
from dfmpc_onnx.graph import opset_version

from .base import Context
from .normalise import _lift_large_initializers, _restore
from .quantize_compensate import count_bytes

_HALF = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def needed_opset(model: onnx.ModelProto, ctx: Context, fmt: str) -> int:
    """The lowest opset that reads every quantized tensor of ``ctx`` in format ``fmt``."""
    if not ctx.quantized:
        return 0
    need = max(qt.min_opset(fmt) for qt in ctx.quantized.values())
    if any(t.data_type in _HALF for t in model.graph.initializer):
        need = max(need, 19)
    return need


class UpgradeOpset:
    name = "upgrade-opset"
    requires = ("opset_known", "quantized")
    provides = ("opset",)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        current = opset_version(model)
        fmt = ctx.options.format
        target = max(current, needed_opset(model, ctx, fmt))
        try:
            changed = upgrade(model, target)
        except UnsupportedModelError as exc:
            fallback = max(current, needed_opset(model, ctx, "int8"))
            if fmt == "int8" or fallback >= target:
                raise
            changed = upgrade(model, fallback)  # raises for real if even that fails
            ctx.container_format = "int8"
            ctx.report.notes.append(
                f"{exc}; kept every grid but stored it in int8 containers at opset {fallback} "
                "instead (the file is larger than packed INT2/INT4 would be)")
            count_bytes(model.graph, ctx)
        ctx.report.opset_out = opset_version(model)
        return changed


def upgrade(model: onnx.ModelProto, target: int) -> bool:
    """Upgrade ai.onnx to ``target`` in place (False if already there); UnsupportedModelError if
    the version converter cannot."""
    current = opset_version(model)
    if target <= current:
        return False
    lifted = _lift_large_initializers(model.graph)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        _restore(model.graph, lifted)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"cannot upgrade the model from opset {current} to {target} (needed by "
            f"DequantizeLinear for the chosen grids): {first}") from exc
    model.CopyFrom(converted)  # small: the lifted weights are stubs in both
    _restore(model.graph, lifted)
    min_ir = onnx.helper.find_min_ir_version_for(list(model.opset_import), True)
    model.ir_version = max(model.ir_version, min_ir, 11 if target >= 25 else 0)
    return True
