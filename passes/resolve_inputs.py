"""Decide what the synthetic inputs look like before anything is measured: one concrete shape per
input (symbolic dimensions set by ``dfmpc_onnx.measure.input_spec``'s rules, checked in ONNX Runtime)
and, where the user gives none, the input range the graph states.

The options the later passes read are replaced by the resolved ones (the report keeps the user's
options as given, and says under ``inputs`` which shape and range were measured, and why). Where
no shape works: an explicit --target-bits or --activations int8 is refused (exit 2, with the
option that fixes it); otherwise the conversion goes on unmeasured and the report says why.
"""

from __future__ import annotations

import onnx

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.input_spec import (
    infer_range,
    ort_check,
    range_from_response,
    resolve_shapes,
)
from dfmpc_onnx.measure.synthetic import integer_ranges, model_inputs

from .base import Context, Fact

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
           onnx.TensorProto.BFLOAT16}


class ResolveInputs:
    name = "resolve-inputs"
    requires = (Fact.SHAPES,)
    provides = (Fact.INPUTS,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        if ctx.options.synthetic == "auto":  # smooth, unless measure-layers finds it judges nothing
            ctx.options = ctx.options.resolved(synthetic="smooth")
            ctx.synthetic_by_rule = True
        o = ctx.options
        if not (o.fidelity_samples > 0 or o.integer_kernels):
            return False  # nothing runs the model
        try:
            spec = resolve_shapes(model, o.input_shapes, check=ort_check(model, ctx.store))
        except OptionsError as exc:
            asked = o.explicit_request
            if asked is not None:
                raise OptionsError(f"{asked} needs the model measured on synthetic inputs, and "
                                   f"{exc}") from exc
            ctx.report.notes.append(f"not measured: {exc}")
            return False
        changes: dict = {"input_shapes": spec.shapes}
        described = spec.describe()
        if spec.refused:
            ctx.report.notes.append("ONNX Runtime refused the float model at "
                                    + "; ".join(spec.refused) + "; measured at the next shape")
        inferred = None
        if (o.input_range is None and o.input_mean == 0.0 and o.input_std == 1.0
                and o.synthetic != "distilled"):
            inferred = infer_range(model) or range_from_response(model, spec.shapes, ctx.store)
        if inferred is not None:
            changes["input_range"] = inferred.value_range
            range_text = (f"{inferred.value_range[0]:g}..{inferred.value_range[1]:g} "
                          f"(inferred: {inferred.reason}; --input-range overrides)")
        elif o.input_range is not None:
            range_text = f"{o.input_range[0]:g}..{o.input_range[1]:g} (--input-range)"
        else:
            range_text = (f"mean {o.input_mean:g}, std {o.input_std:g} ("
                          + ("--input-mean/--input-std" if (o.input_mean, o.input_std) != (0.0, 1.0)
                             else "the default: a normalised input; the graph states no range")
                          + ")")
        why: dict[str, str] = {}
        ints = integer_ranges(model, why)
        floats = {vi.name for vi in model_inputs(model) if vi.type.tensor_type.elem_type in _FLOATS}
        for name, entry in described.items():
            if name in ints:
                lo, hi = ints[name]
                entry["range"] = f"integers {lo}..{hi - 1} ({why[name]})"
            elif name in floats:
                entry["range"] = range_text
            else:
                entry["range"] = "0/1 (a mask or flag)"
        ctx.report.inputs = described
        ctx.options = o.resolved(**changes)
        return False
