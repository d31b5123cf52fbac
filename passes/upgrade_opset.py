"""Upgrade the opset to what the quantized tensors need, just before they are emitted.

Each QuantizedTensor knows the lowest opset whose DequantizeLinear reads it (INT2 25; INT4, INT16
and block-wise scales 21; per-axis scales 13); float16/bfloat16 weights need scales of that type
(opset 19). The model is upgraded to the highest of these, and no further. Where the version
converter cannot do it and every tensor fits an 8-bit container, the grids are kept and stored in
int8 containers at the lowest opset that takes them (13, or the model's own), which the report says.
"""

from __future__ import annotations

import onnx

from dfmpc_onnx.errors import OptionsError, UnsupportedModelError
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


# Containers from narrowest to widest: what --target-opset falls back through.
_FORMATS = ("packed", "int4", "int8")
# The first ONNX Runtime release implementing each opset the outputs use, from ONNX Runtime's
# published version matrix (docs/Versioning.md there); not run here, only the installed one is.
_ORT_FOR_OPSET = {13: "1.7", 21: "1.18"}


def fit_format(model: onnx.ModelProto, ctx: Context, fmt: str) -> str:
    """``fmt``, or the next wider container format whose opset fits ``--target-opset``."""
    cap = ctx.options.target_opset
    current = opset_version(model)
    if cap is None:
        return fmt
    if current > cap:
        raise OptionsError(f"--target-opset {cap}: the model is at opset {current} already, and "
                           "is never brought down")
    for candidate in _FORMATS[_FORMATS.index(fmt if fmt in _FORMATS else "packed"):]:
        need = needed_opset(model, ctx, candidate)
        if need <= cap:
            return candidate
    raise OptionsError(f"--target-opset {cap}: the chosen grids need opset {need} even in INT8 "
                       "containers (per-channel scales: 13)")


def planned_opset(model: onnx.ModelProto, ctx: Context) -> int:
    """The opset ``convert`` will write, known before upgrading (``inspect`` shows it)."""
    fmt = fit_format(model, ctx, ctx.container_format or ctx.options.format)
    return max(opset_version(model), needed_opset(model, ctx, fmt))


def lowest_ir_version(model: onnx.ModelProto, floor: int = 3) -> int:
    """The lowest IR version that reads the model's opsets (and no lower than ``floor``, the
    input's): a runtime refuses an IR version newer than it knows even when it runs the opset."""
    need = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return max(need, floor)


def runtime_note(model: onnx.ModelProto) -> str:
    """What runtime the output needs, for the report."""
    opset = opset_version(model)
    ort = (f"ONNX Runtime {_ORT_FOR_OPSET[opset]} or newer" if opset in _ORT_FOR_OPSET else
           "an ONNX Runtime that implements it")
    return (f"output: opset {opset}, IR version {model.ir_version}: needs {ort}"
            + ("; --target-opset 21 stores 2-bit grids in INT4 containers for older runtimes"
               if opset >= 25 else ""))


class UpgradeOpset:
    name = "upgrade-opset"
    requires = (Fact.OPSET_KNOWN, Fact.QUANTIZED)
    provides = (Fact.OPSET,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        current = opset_version(model)
        ir_in = model.ir_version
        fmt = ctx.container_format or ctx.options.format
        fitted = fit_format(model, ctx, fmt)
        if fitted != fmt:
            ctx.container_format = fmt = fitted
            ctx.report.notes.append(
                f"--target-opset {ctx.options.target_opset}: grids stored in "
                f"{'INT4' if fmt == 'int4' else 'INT8'} containers or wider (the file is larger "
                "than the narrowest containers would be)")
            count_bytes(model.graph, ctx.quantized, fmt, ctx.report)
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
        # The version converter stamps the newest IR version onnx knows: the lowest that the
        # opset needs instead (never below the input's), so older runtimes load what they can run.
        model.ir_version = lowest_ir_version(model, ir_in)
        ctx.report.opset_out = opset_version(model)
        if floor:
            ctx.report.notes.append(runtime_note(model))
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
