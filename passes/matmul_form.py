"""Fusable linear form: weight-only Gemm/MatMul layers rewritten, values unchanged, into the forms
ONNX Runtime fuses into its integer-weight MatMulNBits kernel (dfmpc_onnx.quant.matmul_form: which and
why)."""

from __future__ import annotations

import onnx

from dfmpc_onnx.quant.matmul_form import fusable_linear_form

from .base import Context, Fact


class FusableLinearForm:
    name = "fusable-linear-form"
    requires = (Fact.QDQ,)
    provides = (Fact.LINEAR_FORM,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        done = fusable_linear_form(model.graph)
        if done:
            ctx.report.notes.append(
                f"{len(done)} Gemm/MatMul layer(s) rewritten (same values) so ONNX Runtime runs "
                "them on its integer-weight MatMulNBits kernel")
        return bool(done)
