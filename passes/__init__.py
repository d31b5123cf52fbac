"""The graph passes, in the one order the model flows through them (``conversion_passes``).

    load -> check opset -> name nodes -> constants to initializers -> infer shapes
         -> fold BatchNormalization -> find pairs -> [equalize pairs] -> plan bits
         -> resolve inputs -> measure layers -> choose plan -> quantize and compensate -> measure plan
         -> upgrade opset -> emit QDQ -> [quantize activations] -> save

(``inspect`` runs the same list up to measure plan. Load and save are file operations in
dfmpc_onnx.model.modelio; everything between is here. Each pass declares the facts
(``base.Fact``) it requires and provides, so a list in another order is a PreconditionError.)
"""

from __future__ import annotations

if __name__ != "dfmpc_onnx.passes":  # a checkout puts passes/ on sys.path as a package of its own
    raise ImportError(f"import the passes as dfmpc_onnx.passes, not {__name__}: one module, one identity")

from dfmpc_onnx.options import ConvertOptions

from .base import Context, Pair, Pass, PreconditionError, run_passes
from .choose_plan import ChoosePlan
from .emit_qdq import EmitQDQ
from .equalize import EqualizePairs
from .find_pairs import FindPairs
from .matmul_form import FusableLinearForm
from .measure import MeasureLayers, MeasurePlan
from .normalise import CheckOpset, ConstantsToInitializers, FoldBatchNorm, InferShapes, NameNodes
from .plan_bits import PlanBits
from .quantize_activations import QuantizeActivations
from .quantize_compensate import QuantizeAndCompensate
from .resolve_inputs import ResolveInputs
from .upgrade_opset import UpgradeOpset


def pairing_passes() -> list[Pass]:
    """Normalise and find pairs: what the pairs of a model depend on (nothing measured)."""
    return [CheckOpset(), NameNodes(), ConstantsToInitializers(), InferShapes(), FoldBatchNorm(), FindPairs()]


def analysis_passes(options: ConvertOptions | None = None) -> list[Pass]:
    """Normalise, find pairs, [equalize,] plan bits, resolve the inputs, measure, choose: the
    facts every later pass builds on. Equalization (with ``options.equalize``) keeps the float
    model, so it runs right after the pairs are found, before anything is measured or the plan
    drops the pairs."""
    equalize = [EqualizePairs()] if options is not None and options.equalize else []
    return [*pairing_passes(), *equalize, PlanBits(), ResolveInputs(), MeasureLayers(), ChoosePlan()]


def planning_passes(options: ConvertOptions) -> list[Pass]:
    """Everything that decides and measures, nothing written: what `inspect` runs."""
    return analysis_passes(options) + [QuantizeAndCompensate(), MeasurePlan()]


def conversion_passes(options: ConvertOptions) -> list[Pass]:
    """The whole conversion, top to bottom."""
    # Weight-only layers in the form ORT fuses into MatMulNBits; with activations, its QDQ fusions.
    activations = [QuantizeActivations()] if options.integer_kernels else [FusableLinearForm()]
    return planning_passes(options) + [UpgradeOpset(), EmitQDQ()] + activations


__all__ = ["Context", "Pair", "Pass", "PreconditionError", "run_passes", "pairing_passes", "analysis_passes",
           "planning_passes", "conversion_passes"]
