"""The pass machinery: a context that analyses fill in, and a plain sequence that runs passes.

A pass is an object with a ``name``, the facts (``Fact``) it ``requires`` from the context, those
it ``provides``, optionally those it must run ``before`` (facts whose pass would undo or miss
its work), and ``run(model, ctx) -> bool`` (whether it changed the model). Analyses only add
facts to the context; transforms change the ModelProto in place. The runner checks each pass's
preconditions (a PreconditionError names the pass and the missing facts) and turns an unexpected
failure into a PassError that names the pass and the passes before it. A test can run one pass on
a hand-built context by setting the facts it requires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import onnx

from dfmpc_onnx.errors import DfmpcError, PassError
from dfmpc_onnx.measure.inputs import measurement_inputs
from dfmpc_onnx.model.channels import ChannelMap
from dfmpc_onnx.options import ConvertOptions, LayerPlan
from dfmpc_onnx.quant.quantizers import QuantizedTensor
from dfmpc_onnx.report import Report

if TYPE_CHECKING:
    from dfmpc_onnx.model.weightstore import WeightStore

    from .measure import Measurement


class Fact(str, Enum):  # noqa: UP042 - python_requires is 3.10; StrEnum is 3.11
    """What a pass leaves in the context for later passes (a str, so a test can add ``"layers"``
    to ``ctx.facts`` by hand). Each is required by some pass but FIDELITY, LINEAR_FORM and ACTIVATIONS, the
    conversion's last results (read by the report and the writer)."""

    __str__ = str.__str__

    OPSET_KNOWN = "opset_known"  # check-opset: the model's opset is one we handle
    NAMES = "names"  # name-nodes: every node has a unique name
    CONSTANTS = "constants"  # constants-to-initializers: constant weights are initializers
    SHAPES = "shapes"  # infer-shapes: value_info holds the inferred shapes
    BN_STATS = "bn_stats"  # fold-batchnorm: ctx.bn_stats, ctx.bn_fold
    LAYERS = "layers"  # find-pairs: ctx.layers
    PAIRS = "pairs"  # find-pairs: ctx.pairs
    PLAN = "plan"  # plan-bits: ctx.plan, ctx.fixed
    INPUTS = "inputs"  # resolve-inputs: ctx.options.input_shapes/input_range as measured
    MEASUREMENT = "measurement"  # measure-layers: ctx.measurement (None: nothing measurable)
    CHOSEN = "chosen"  # choose-plan: ctx.plan final, ctx.pairs final (cleared by `auto`)
    QUANTIZED = "quantized"  # quantize-and-compensate: ctx.quantized, ctx.new_bias
    OPSET = "opset"  # upgrade-opset: ctx.container_format, the output opset
    FIDELITY = "fidelity"  # measure-plan: report.predicted, ctx.reference (result)
    QDQ = "qdq"  # emit-qdq: the weight QDQ graph (result)
    LINEAR_FORM = "linear-form"  # fusable-linear-form: MatMul/Gemm in the forms ORT fuses (result)
    ACTIVATIONS = "activations"  # quantize-activations: activation QDQ (result)


@dataclass
class Pair:
    """A -> [BN folded] -> phi -> B, where phi is the activation region between them.

    ``channels`` is None when B reads exactly A's activated output (the paper's pair). Otherwise
    B is one of several layers reading A's channels (through Concat, Split, branches, a kept BN):
    ``channels`` says which of B's input channels they are, ``activation`` is the per-channel
    function on the way (dfmpc_onnx.model.channels). A's pairs are all those with the same ``a``."""

    a: str  # node names
    b: str
    activation: object  # dfmpc_onnx.model.activation.Activation or dfmpc_onnx.model.channels.ChannelPath
    channels: ChannelMap | None = None


@dataclass(frozen=True)
class BnFold:
    """A BatchNormalization folded into a layer: output = k * (W x + b - mean) + beta, with
    k = gamma / sqrt(var + eps). The paper's method needs the unfolded view."""

    k: np.ndarray
    beta: np.ndarray


@dataclass
class Context:
    """What passes share: the options, the facts found so far, and the report being written."""

    options: ConvertOptions
    report: Report = field(default_factory=Report)
    # Kept BatchNormalization statistics by tensor (after folding, the producing layer's output):
    # the float model's per-channel mean and std there.
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    bn_fold: dict[str, BnFold] = field(default_factory=dict)  # layer node name -> folded BN
    layers: list[str] = field(default_factory=list)  # quantizable layers, graph order
    pairs: list[Pair] = field(default_factory=list)
    plan: dict[str, LayerPlan] = field(default_factory=dict)  # node name -> its plan
    quantized: dict[str, QuantizedTensor] = field(default_factory=dict)
    new_bias: dict[str, np.ndarray] = field(default_factory=dict)  # node -> corrected bias
    measured: set[str] = field(default_factory=set)  # layers whose correction a measurement chose
    fixed: set[str] = field(default_factory=set)  # layers whose bits the plan file fixed
    measurement: Measurement | None = None  # what measure-layers found (passes/measure.py)
    # The model as given, kept only where a pass needs it whole (distilled inputs need the
    # BatchNormalization nodes that normalise folds).
    source_model: onnx.ModelProto | None = None
    # Where large weights live (dfmpc_onnx.model.weightstore) when the conversion has a working folder;
    # None: in the protobuf. Passes that rewrite a weight pass it to ``set_array``.
    store: WeightStore | None = None
    container_format: str = ""  # the format emitted; "" until upgrade-opset decides (options')
    # --synthetic auto: resolve-inputs set the kind (smooth), measure-layers may switch it to
    # strokes (passes/measure.py, _strokes_respond); False when the user named a kind.
    synthetic_by_rule: bool = False
    facts: set[str] = field(default_factory=set)  # what the passes run so far provided
    progress: Callable[[str], None] | None = None
    # The float model's outputs on the synthetic inputs, batch by batch, left by measure-plan so
    # that later passes can check the whole converted model against them: (feeds, outputs).
    reference: tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]] | None = None

    def __post_init__(self) -> None:
        if self.options.integer_kernels and not self.container_format:
            self.container_format = "int8"  # what ONNX Runtime's integer kernels read

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


def make_inputs(model: onnx.ModelProto, ctx: Context, *, n: int | None = None,
                seed: int | None = None) -> dict[str, np.ndarray]:
    """The synthetic inputs every measurement of this conversion runs on (``n`` and ``seed``:
    other draws of the same kind, e.g. held out to check a choice made on the first)."""
    return measurement_inputs(model, ctx.options, n=n, seed=seed, source_model=ctx.source_model,
                              say=ctx.say)


class Pass(Protocol):
    name: str
    requires: ClassVar[tuple[Fact, ...]]
    provides: ClassVar[tuple[Fact, ...]]

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool: ...


class PreconditionError(PassError):
    """A pass ran before the passes that provide what it needs: a bug in a pipeline."""


def run_passes(passes: Sequence[Pass], model: onnx.ModelProto, ctx: Context) -> onnx.ModelProto:
    """Run ``passes`` in order; a crash becomes a PassError naming the pass and its history."""
    done: list[str] = []
    for p in passes:
        missing = [f for f in getattr(p, "requires", ()) if f not in ctx.facts]
        if missing:
            after = f" (after {', '.join(done)})" if done else " (it ran first)"
            raise PreconditionError(f"pass '{p.name}' needs {', '.join(missing)}, which no pass "
                                    f"before it provided{after}")
        late = [f for f in getattr(p, "before", ()) if f in ctx.facts]
        if late:
            raise PreconditionError(f"pass '{p.name}' must run before the pass that provides "
                                    f"{', '.join(late)} (it ran after {', '.join(done)})")
        ctx.say(f"pass {p.name}")
        start = time.perf_counter()
        try:
            p.run(model, ctx)
        except DfmpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the pass named
            after = f" (after {', '.join(done)})" if done else ""
            raise PassError(f"pass '{p.name}' failed{after}: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        ctx.report.pass_seconds[p.name] = ctx.report.pass_seconds.get(p.name, 0.0) + seconds
        ctx.facts.update(getattr(p, "provides", ()))
        done.append(p.name)
    return model
