"""Plan bits: what each layer gets (bits, quantizer, correction). Analysis only: fills ``ctx.plan``.

The default is the pair plan: A of each pair at low bits, everything else at high bits, every layer
with the options' quantizer and correction (the paper's grids and compensation for --method
paper). A correction that acts on a pair applies only to the layer of the pair it acts on: the
paper's c on A, our compensations on B; bias correction on every layer. Then the user's per-layer
overrides from a plan file.
"""

from __future__ import annotations

import difflib

import onnx

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.options import LayerPlan
from dfmpc_onnx.report import PARTNER_SEP

from .base import Context, Fact

_ON_B = ("energy", "ls-diag", "ls-full")


class PlanBits:
    name = "plan-bits"
    requires = (Fact.LAYERS, Fact.PAIRS)
    provides = (Fact.PLAN,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        o = ctx.options
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
        # --method auto: bits come from measurement (choose-plan), the pairs only as one candidate.
        a_layers = {p.a for p in ctx.pairs}
        for name in ctx.layers:
            bits = o.low_bits if name in a_layers else o.high_bits
            ctx.plan[name] = o.layer_plan(name, 8 if o.method == "auto" else bits)
        for name, raw in o.plan.items():
            entry = ctx.report.layer(name)
            override = o.plan_entry(name, raw)
            if name not in ctx.layers:
                if override is not None:
                    raise OptionsError(f"plan: layer {name!r} cannot be quantized: {entry.reason}")
                continue
            if override is None:
                ctx.plan.pop(name, None)
                entry.reason = "kept in float by the plan"
                continue
            base = ctx.plan[name]
            if "bits" in override:
                ctx.fixed.add(name)  # the allocator leaves it alone
            ctx.plan[name] = LayerPlan(override.get("bits", base.bits),
                                       override.get("quantizer", base.quantizer),
                                       override.get("correction", base.correction))
        # A pair whose A or B was kept in float by the plan is no pair any more.
        ctx.pairs = [p for p in ctx.pairs if p.a in ctx.plan and p.b in ctx.plan]
        _place_pair_corrections(ctx)
        paired = {p.a for p in ctx.pairs} | {p.b for p in ctx.pairs}
        partners: dict[str, list[str]] = {}
        for p in ctx.pairs:
            partners.setdefault(p.a, []).append(p.b)
            partners.setdefault(p.b, []).append(p.a)
        for entry in ctx.report.layers:
            plan = ctx.plan.get(entry.name)
            entry.bits = plan.bits if plan else None
            if plan is not None:
                entry.quantizer, entry.correction = plan.quantizer, plan.correction
            if entry.name in paired:
                entry.role = "A" if entry.name in {p.a for p in ctx.pairs} else "B"
                entry.partner = PARTNER_SEP.join(dict.fromkeys(partners[entry.name]))
            elif plan is not None:
                entry.role = "single"
                entry.partner = None
            else:
                entry.role = "float"
        return False


def _place_pair_corrections(ctx: Context) -> None:
    """A pair correction stays only where it acts: the paper's c on a pair's A (its B and the
    unpaired layers get none), ours on a pair's B whose A exists and whose input channels are a
    function of A's (others fall back to bias)."""
    a_layers = {p.a for p in ctx.pairs}
    # our compensations need B's input channel to be a function of A's (not through a gate or
    # attention: dfmpc_onnx.model.channels.ChannelPath.scale_only)
    b_layers = {p.b for p in ctx.pairs if not getattr(p.activation, "scale_only", False)}
    for name, plan in list(ctx.plan.items()):
        if plan.correction == "paper" and name not in a_layers:
            ctx.plan[name] = LayerPlan(plan.bits, plan.quantizer, "none")
        elif plan.correction in _ON_B and name not in b_layers:
            ctx.plan[name] = LayerPlan(plan.bits, plan.quantizer, "bias")
