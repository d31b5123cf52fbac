"""Quantize and compensate: walk the graph once, in order, carrying two-stream statistics.

Each planned layer is rounded by its quantizer (``dfmpc_onnx.quant.quantizers``) and corrected by
its correction (``dfmpc_onnx.quant.corrections``), both named in the layer's plan:

- our compensation (energy, ls-diag, ls-full) scales the input channels of a pair's second layer
  before rounding, from the statistics of the first layer's float and quantized outputs;
- the paper's factor c (Eq. 27) scales the output channels of a pair's first layer after
  rounding, folded into its scales and bias so both layers stay on their grids;
- bias correction shifts each layer's bias so its output mean under the float input statistics
  is unchanged (its own rounding error only).

Statistics of both streams (float and quantized) are carried through the graph by
``dfmpc_onnx.stats.propagate``, in the one walk of ``dfmpc_onnx.stats.walk``. This pass records
decisions in the context; emit-qdq writes them.
"""

from __future__ import annotations

import onnx

from dfmpc_onnx.quant.layer import count_bytes
from dfmpc_onnx.stats.walk import Walker

from .base import Context, Fact


class QuantizeAndCompensate:
    name = "quantize-and-compensate"
    requires = (Fact.LAYERS, Fact.PAIRS, Fact.PLAN, Fact.CHOSEN, Fact.BN_STATS)
    provides = (Fact.QUANTIZED,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        walker = Walker(model.graph, ctx)
        walker.walk()
        untrusted = walker.untrusted
        if untrusted and not ctx.new_bias:
            # The common BN-folded export: say once, up front, why nothing was corrected.
            ctx.report.notes.append(
                f"no layer was bias-corrected: the model has no BatchNormalization statistics "
                f"({len(untrusted)} layers; BN folded at export?). The result equals plain "
                "rounding. Export with BN kept for the correction (README, Results), or pass "
                "--propagated-stats to trust statistics propagated from the input (measured to "
                "help some models and hurt others)")
        if any(p.correction == "paper" for p in ctx.plan.values()):
            unfolded = list(dict.fromkeys(p.a for p in ctx.pairs if p.a not in ctx.bn_fold))
            if unfolded:
                ctx.report.notes.append(
                    f"paper: {len(unfolded)} low-bit layer(s) had no BatchNormalization to unfold "
                    "(BN folded at export, or none): for them gamma/sigma = 1 and y = the layer's "
                    "bias in Eq. 27, and their one-per-layer grid is taken on the folded weights")
        count_bytes(model.graph, ctx.quantized, ctx.container_format or ctx.options.format, ctx.report)
        return bool(ctx.quantized)


__all__ = ["QuantizeAndCompensate"]
