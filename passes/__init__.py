"""The graph passes, in the one order the model flows through them.

    load -> normalise -> find pairs -> plan bits -> quantize and compensate -> emit QDQ -> validate

(load and validate are file operations in dfmpc_onnx.modelio; everything between is here.)
"""

from __future__ import annotations

from .base import Context, Pair, Pass, run_passes
from .emit_qdq import EmitQDQ
from .equalize import EqualizePairs
from .find_pairs import FindPairs
from .normalise import (
    ConstantsToInitializers,
    FoldBatchNorm,
    InferShapes,
    NameNodes,
    UpgradeOpset,
)
from .plan_bits import PlanBits
from .quantize_compensate import QuantizeAndCompensate


def analysis_passes() -> list[Pass]:
    """Everything up to the bit plan: what `inspect` runs."""
    return [NameNodes(), ConstantsToInitializers(), UpgradeOpset(), InferShapes(),
            FoldBatchNorm(), FindPairs(), PlanBits()]


def conversion_passes(equalize: bool = False) -> list[Pass]:
    """The whole conversion, top to bottom."""
    return analysis_passes() + ([EqualizePairs()] if equalize else []) + [
        QuantizeAndCompensate(), EmitQDQ()]


__all__ = ["Context", "Pair", "Pass", "run_passes", "analysis_passes", "conversion_passes"]
