"""The graph passes, in the one order the model flows through them.

    load -> normalise -> find pairs -> plan bits -> quantize and compensate -> emit QDQ
         -> [quantize activations] -> validate

(load and validate are file operations in dfmpc_onnx.modelio; everything between is here.)
"""

from __future__ import annotations

from dfmpc_onnx.options import ConvertOptions

from .base import Context, Pair, Pass, PreconditionError, run_passes
from .choose_plan import ChoosePlan
from .emit_qdq import EmitQDQ
from .equalize import EqualizePairs
from .find_pairs import FindPairs
from .measure import MeasureLayers, MeasurePlan
from .normalise import CheckOpset, ConstantsToInitializers, FoldBatchNorm, InferShapes, NameNodes
from .plan_bits import PlanBits
from .quantize_activations import QuantizeActivations
from .quantize_compensate import QuantizeAndCompensate
from .resolve_inputs import ResolveInputs
from .upgrade_opset import UpgradeOpset


def analysis_passes() -> list[Pass]:
    """Normalise, find pairs, plan bits, resolve the inputs, measure, choose: the facts every later
    pass builds on."""
    return [CheckOpset(), NameNodes(), ConstantsToInitializers(), InferShapes(), FoldBatchNorm(),
            FindPairs(), PlanBits(), ResolveInputs(), MeasureLayers(), ChoosePlan()]


def planning_passes(options: ConvertOptions) -> list[Pass]:
    """Everything that decides and measures, nothing written: what `inspect` runs."""
    return analysis_passes() + ([EqualizePairs()] if options.equalize else []) + [
        QuantizeAndCompensate(), MeasurePlan()]


def conversion_passes(options: ConvertOptions) -> list[Pass]:
    """The whole conversion, top to bottom."""
    activations = [QuantizeActivations()] if options.integer_kernels else []
    return planning_passes(options) + [UpgradeOpset(), EmitQDQ()] + activations


__all__ = ["Context", "Pair", "Pass", "PreconditionError", "run_passes", "analysis_passes",
           "planning_passes", "conversion_passes"]
