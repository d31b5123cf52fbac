"""Plan bits: the paper's plan by default (A low, B high, everything else high), then the user's
per-layer overrides from a plan file. Analysis only: fills ``ctx.bits``."""

from __future__ import annotations

import difflib

import onnx

from dfmpc_onnx.errors import OptionsError

from .base import Context


class PlanBits:
    name = "plan-bits"

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        o = ctx.options
        a_layers = {p.a for p in ctx.pairs}
        known = {e.name for e in ctx.report.layers}
        unknown = [n for n in o.plan if n not in known]
        if unknown:
            hints = []
            for n in unknown[:5]:
                close = difflib.get_close_matches(n, sorted(known), n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise OptionsError(
                f"plan names {len(unknown)} layer(s) not in the model: {', '.join(hints)}; "
                "run 'dfmpc-onnx inspect MODEL' to list layer names")
        for name in ctx.layers:
            ctx.bits[name] = o.low_bits if name in a_layers else o.high_bits
        for name, bits in o.plan.items():
            entry = ctx.report.layer(name)
            if name not in ctx.layers:
                if bits is not None:
                    raise OptionsError(f"plan: layer {name!r} cannot be quantized: {entry.reason}")
                continue
            if bits is None:
                ctx.bits.pop(name, None)
                entry.reason = "kept in float by the plan"
            else:
                ctx.bits[name] = bits
        # A pair whose A or B was kept in float by the plan is no pair any more.
        ctx.pairs = [p for p in ctx.pairs if p.a in ctx.bits and p.b in ctx.bits]
        paired = {p.a for p in ctx.pairs} | {p.b for p in ctx.pairs}
        for entry in ctx.report.layers:
            entry.bits = ctx.bits.get(entry.name)
            if entry.name in paired:
                entry.role = "A" if entry.name in {p.a for p in ctx.pairs} else "B"
            elif entry.bits is not None:
                entry.role = "single"
                entry.partner = None
            else:
                entry.role = "float"
        return False
