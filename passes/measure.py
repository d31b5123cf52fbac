"""Measure what quantizing each layer does to the whole network, with no data.

``MeasureLayers`` builds seeded synthetic inputs from the model's input signature
(``dfmpc_onnx.measure.synthetic``) and one FidelityProbe (``dfmpc_onnx.measure.fidelity``), then,
for each layer whose choice is left to measurement, quantizes that layer alone each candidate way (bits, grid,
bias correction or not) and records the divergence of the network's outputs from the float
model's. ``MeasurePlan`` measures the final quantized model as a whole and writes the predicted
fidelity into the report.

What is measured per layer:
- ``--method auto``: bits 2, 4 and 8 (3, 5 and 6 bits are not tried: stored in the same INT4/INT8
  containers as 4 and 8 bits they cost as much and round more coarsely), each with max-abs
  rounding and, at 2 and 4 bits, with the one other grid of ``CANDIDATE_GRIDS`` of least weight
  error (a cheap preselection; which grid is better for the *network* is then measured), all
  without correction, then the better grid of each bits with bias correction: 7 trials a layer.
  Where the grid tried is block-32, block-64 and block-128 (fewer float32 scales: 4.5 and 4.25
  stored bits per 4-bit weight against 5) are candidates too, estimated from its trial by weight
  error (``WIDER_BLOCKS``): a 5-bit budget cannot take many block-32 layers.
- a fixed plan with ``--correction auto``: the planned bits and grid, with and without bias
  correction.

If the model cannot be measured (inputs whose shape no rule of ``dfmpc_onnx.measure.input_spec`` sets, a
graph ONNX Runtime cannot split) the converter falls back to fixed rules and the report says why;
an explicit --target-bits is then refused instead (choose-plan).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from dfmpc_onnx.errors import OptionsError, first_line
from dfmpc_onnx.measure.allocate import Candidate
from dfmpc_onnx.measure.fidelity import FidelityProbe
from dfmpc_onnx.model.graph import GraphIndex, all_nodes, enclosing, tensor_bytes
from dfmpc_onnx.model.heap import give_back
from dfmpc_onnx.model.layers import LinearLayer, as_linear_layer, layout_of
from dfmpc_onnx.options import INTEGER_KERNEL_GRIDS, LayerPlan
from dfmpc_onnx.quant.corrections import bias_shift
from dfmpc_onnx.quant.layer import quantize_layer
from dfmpc_onnx.quant.quantizers import get_quantizer
from dfmpc_onnx.quant.quantizers.base import slices_of
from dfmpc_onnx.stats.tensor_stats import output_means
from dfmpc_onnx.stats.walk import LayerInput, corrected_bias, layer_inputs, streams_by_rows

from .base import Context, Fact, make_inputs

CANDIDATE_GRIDS: dict[int, tuple[str, ...]] = {
    8: ("maxabs",),
    4: ("maxabs", "mse", "asym", "block32"),
    2: ("maxabs", "mse-ternary", "asym", "block32"),
}


@dataclass
class Measurement:
    """What MeasureLayers leaves for the planner: the probe and each layer's candidates."""

    probe: object  # dfmpc_onnx.measure.fidelity.FidelityProbe
    candidates: dict[str, list[Candidate]]
    layers: dict[str, LinearLayer]
    inputs: dict[str, LayerInput]
    kind: str
    samples: int
    # Counts for the report: single-layer trials run, candidates estimated instead.
    trials: int = 0
    estimated: int = 0
    # Other synthetic inputs, more of them, that choose-plan checks its choice on (and whose
    # figure the report gives): a plan chosen on the probe's inputs looks better there than it is.
    check: object | None = None  # dfmpc_onnx.measure.fidelity.FidelityProbe
    # An explicit --target-bits whose plan is predicted below the level: the smallest budget of
    # the ladder predicted to keep it (None: none below 8 bits), for the warning.
    passing_bits: float | None = None
    target_missed: bool = False
    budgets_tried: int = 0  # budgets of the ladder whose plans choose-plan measured
    # Each (layer, choice)'s arrays, kept once made (``replacement``): the whole plans
    # choose-plan measures share most of their layers' choices, and rounding them again for every
    # plan was 35 of ddddocr's detector's 265 conversion seconds (balanced rounding, 2.5k calls).
    _made: dict[tuple[str, LayerPlan], dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _made_bytes: int = 0

    def replacement(self, name: str, choice: LayerPlan, ctx: Context) -> dict[str, np.ndarray]:
        """Weight (and bias) arrays of layer ``name`` quantized as ``choice`` (do not modify
        them). Kept for the next plan that takes the same choice, up to ``REPLACEMENT_BYTES``
        (the least recently used go first), and only where the probe holds every weight anyway
        (``FidelityProbe.small``): on a model whose weights outgrow memory no plan's weights
        exist at once."""
        key = (name, choice)
        arrays = self._made.pop(key, None)
        if arrays is None:
            arrays = layer_replacement(self.layers[name], choice, ctx, self.inputs.get(name),
                                       self.probe)[0]
            self._made_bytes += sum(a.nbytes for a in arrays.values())
        self._made[key] = arrays  # the most recent last
        while self._made and (self._made_bytes > REPLACEMENT_BYTES or not self.probe.small):
            old = self._made.pop(next(iter(self._made)))
            self._made_bytes -= sum(a.nbytes for a in old.values())
        return arrays

    def plan_replacements(self, plan: dict[str, LayerPlan], ctx: Context) -> dict[str, Callable]:
        """Each planned layer's arrays, made lazily (``FidelityProbe.measure``): a whole plan's
        weights never exist at once, each is made when the probe reaches its layer."""
        out: dict[str, Callable] = {}
        for name, choice in plan.items():
            if name in self.layers:
                made = _Made(lambda name=name, choice=choice: self.replacement(name, choice, ctx))
                layer = self.layers[name]
                corrects = _corrects(layer, choice, self.inputs.get(name))
                for key in [layer.weight] + ([layer.bias] if corrects else []):
                    out[key] = functools.partial(made.take, key)
        return out


class _Made:
    """A layer's replacement arrays, made on the first ``take`` and handed out once each: the
    weight and the corrected bias come from one rounding, and nothing keeps them afterwards."""

    def __init__(self, make: Callable[[], dict[str, np.ndarray]]) -> None:
        self._make = make
        self._arrays: dict[str, np.ndarray] | None = None

    def take(self, key: str) -> np.ndarray:
        if self._arrays is None or key not in self._arrays:  # (again: another run of the probe)
            self._arrays = dict(self._make())  # its own dict: the arrays may be kept elsewhere
        return self._arrays.pop(key)


def _corrects(layer: LinearLayer, choice: LayerPlan, inp: LayerInput | None) -> bool:
    """Whether ``layer_replacement`` gives a corrected bias for this choice."""
    return bool(choice.correction == "bias" and layer.bias and inp is not None)


def layer_replacement(layer: LinearLayer, choice: LayerPlan, ctx: Context,
                      inp: LayerInput | None, probe) -> tuple[dict[str, np.ndarray], float]:
    """The arrays a probe swaps in for ``layer`` quantized as ``choice`` (the same rounding and
    bias correction the quantize pass will apply), and the bytes that choice stores.

    A per-channel grid rounds a block of output channels at a time, read from the weight store
    where the model has one: a large layer's float weight is never whole in memory, only its
    candidate is (the VGG-19 classifier's first layer is 411 MB)."""
    by_rows = ctx.options.per_channel and not get_quantizer(choice.quantizer).per_layer
    rows = by_rows and layout_of(layer).out_axis == 0  # w is then read a block of rows at a time
    w = probe.weight_rows(layer.weight) if rows else probe.weight(layer.weight)
    dtype = w.dtype
    if not by_rows:
        w = np.asarray(w).astype(np.float64)  # else quantize_by_rows takes float64 a block at a time
    fold = ctx.bn_fold.get(layer.name)
    qt = quantize_layer(layer, w, choice, ctx.options.per_channel,
                        None if fold is None else fold.k, ctx.options.rounding)
    nbytes = qt.ideal_bytes(ctx.options.format, dtype.itemsize)
    corrects = _corrects(layer, choice, inp)
    # The probe runs the weight's own type: without a bias to correct, or where the correction is
    # computed a block of output channels at a time, no float64 copy of the weight is made.
    blockwise = corrects and rows and streams_by_rows(layer)
    w_q = qt.dequantize() if corrects and not blockwise else qt.dequantize_as(dtype)
    out = {layer.weight: w_q}
    if corrects:
        bias = probe.weight(layer.bias)
        b_f = bias.astype(np.float64).reshape(-1)
        if blockwise:
            b_q = _corrected_bias_by_rows(layer, w, qt, b_f, inp)
        else:
            b_q = corrected_bias(layer, layer.to_canonical(np.asarray(w, np.float64)),
                                 layer.to_canonical(w_q), b_f, inp)
        out[layer.bias] = b_q.reshape(bias.shape)
    del qt, w
    give_back()  # the rounding's temporaries (dfmpc_onnx.model.heap)
    return out, nbytes


def _corrected_bias_by_rows(layer: LinearLayer, w, qt, b_f: np.ndarray, inp: LayerInput) -> np.ndarray:
    """``corrected_bias`` of a large one-group layer, a block of output channels at a time (each
    channel's mean is its own): the float and dequantized weights are never whole in float64,
    which on a 400 MB classifier layer would be 1.6 GB."""
    shifts = []
    for part in slices_of(w.shape, 0):
        mean_f, mean_q = output_means(layer.canonical_part(np.asarray(w[part], np.float64)),
                                      layer.canonical_part(qt.dequantize_part(part)), 1,
                                      inp.stats, inp.coverage)
        shifts.append(bias_shift(mean_f, mean_q))
    return b_f + np.concatenate(shifts)


def _first_line(exc: BaseException) -> str:
    return first_line(exc, 203)


def _candidate_choices(ctx: Context, name: str, layer: LinearLayer, w: np.ndarray
                       ) -> list[tuple[int, str]]:
    """(bits, grid) pairs to measure without correction for one layer."""
    plan = ctx.plan[name]
    if ctx.options.method != "auto" or name in ctx.fixed:
        return [(plan.bits, plan.quantizer)]
    choices = []
    for bits, grids in CANDIDATE_GRIDS.items():
        if ctx.options.fast and bits == 2:
            continue  # its trials are what --fast saves; estimated they are under-predicted
        bits = min(bits, ctx.options.widest_bits)  # 7 with uint8 activations: see options
        choices.append((bits, "maxabs"))
        others = [g for g in grids if g != "maxabs"
                  and (not ctx.options.integer_kernels or g in INTEGER_KERNEL_GRIDS)]
        if others:
            per_channel = ctx.options.per_channel
            err = {}
            for g in others:
                err[g] = quantize_layer(layer, w, LayerPlan(bits, g, "none"), per_channel,
                                        rounding=ctx.options.rounding).squared_error(w)
                give_back()  # the rounding's temporaries (dfmpc_onnx.model.heap)
            choices.append((bits, min(others, key=lambda g: err[g])))
    return choices


class MeasureLayers:
    name = "measure-layers"
    requires = (Fact.LAYERS, Fact.PLAN, Fact.INPUTS)
    provides = (Fact.MEASUREMENT,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        o = ctx.options
        # --fast: a fixed plan's correction auto takes the fixed rule (choose-plan), unmeasured.
        todo = [n for n in ctx.layers if n in ctx.plan and (
            (o.method == "auto" and n not in ctx.fixed)
            or (ctx.plan[n].correction == "auto" and not o.fast))]
        if not todo or o.fidelity_samples == 0:
            return False
        unknown = sorted(set(o.output_kinds) - {out.name for out in model.graph.output})
        if unknown:
            raise OptionsError(f"--output-kind {unknown[0]}: the model has no output of that name "
                               f"(its outputs: {', '.join(out.name for out in model.graph.output)})")
        need, free = probe_memory(model, ctx.store is not None), available_memory()
        if free is not None and need > free:
            what = "ONNX Runtime's copy of the weights, the largest layer three times"
            if ctx.store is None:
                what += ", the weights in memory once more (convert_file keeps them in a file)"
            ctx.report.notes.append(
                f"not measured: measuring needs about {need / 1e9:.1f} GB ({what}) and "
                f"{free / 1e9:.1f} GB is available; fixed rules were used instead of measurements. "
                "A machine with more memory measures it")
            ctx.say("not measuring: not enough memory (see the report)")
            return False
        try:
            measurement = _build(model, ctx)
            responds = _strokes_respond(model, ctx, measurement)
            if responds == "maps" and ctx.synthetic_by_rule:
                del measurement  # its sessions go before the strokes probe is built
                measurement = _on_strokes(model, ctx)
            elif responds:
                ctx.report.notes.append(STROKES_NOT_TAKEN)
            if o.method == "auto" and not outputs_vary(measurement):
                # Known after the float run: no plan below the widest bits can be judged, so
                # measuring every layer and plan (190 s on ZFNet-512) would change nothing.
                ctx.report.notes.append(OUTPUTS_DID_NOT_VARY)
                ctx.say("not measuring: the float outputs do not vary (see the report)")
                return False
            index = GraphIndex(model.graph)
            nodes = {n.name: n for n in all_nodes(model.graph)}
            inside = enclosing(model.graph)
            unreached: list[str] = []
            for i, name in enumerate(todo, 1):
                layer, _ = as_linear_layer(nodes[name], index)
                if name in inside and not _reached(measurement, layer):
                    unreached.append(name)
                    continue
                measurement.layers[name] = layer
                ctx.say(f"measuring [{i}/{len(todo)}] {name}")
                measurement.candidates[name] = _measure_layer(ctx, measurement, name, layer)
            _keep_unreached(ctx, unreached, inside)
        except Exception as exc:  # noqa: BLE001 - a model we cannot measure still converts
            ctx.report.notes.append(f"could not measure the model ({_first_line(exc)}); fixed "
                                    "rules were used instead of measurements")
            return False
        ctx.measurement = measurement
        if o.fast:
            ctx.report.notes.append(
                f"--fast: measured {measurement.trials} single-layer trial(s), the 4-bit grids "
                f"(max-abs and the other of least weight error); {measurement.estimated} "
                "candidate(s) (the widest bits, wider blocks) estimated from them by weight error; "
                "no 2-bit grids; bias correction by the fixed rule (where kept BatchNormalization "
                "gives statistics), untried")
        else:
            ctx.report.notes.append(
                f"measured {measurement.trials} single-layer trial(s); {measurement.estimated} "
                "candidate(s) (the widest grid, and 2 bits where the 4-bit trial already predicts "
                f"more than {RULE_OUT:g}; block-64/128 from the block-32 trial) estimated from the "
                "4-bit trials by weight error, untried")
        return False


def _reached(m: Measurement, layer: LinearLayer) -> bool:
    """Whether a layer inside an If/Loop/Scan body runs on the synthetic inputs: with its weight
    zeroed, some output moves. A branch the inputs never take changes nothing, bit for bit (ONNX
    Runtime reruns the same nodes on the same values), and every trial of it would measure 0: the
    allocator would give it the fewest bits, a model that is right only on the inputs measured."""
    w = m.probe.weight(layer.weight)
    fid = m.probe.measure({layer.weight: np.zeros(w.shape, w.dtype)})
    m.trials += 1
    return fid.score != 0.0


def _keep_unreached(ctx: Context, names: list[str], inside: dict[str, str]) -> None:
    """Body layers ``_reached`` found idle leave the plan: float, each with its reason
    (``inside``: where each is, ``graph.enclosing``)."""
    for name in names:
        ctx.plan.pop(name, None)
        entry = ctx.report.layer(name)
        entry.role, entry.bits, entry.quantizer, entry.correction = "float", None, None, None
        entry.reason = (f"{inside[name]}: not run on the synthetic inputs (zeroing its weight "
                        "changes no output), kept float")
    if names:
        ctx.report.notes.append(
            f"kept float, not reached on the synthetic inputs: {len(names)} layer(s) inside "
            f"If/Loop bodies, e.g. {names[0]} (a branch they never take: the other value of an "
            "input the graph branches on, or a shape the --input-shape given does not reach)")


def _strokes_respond(model: onnx.ModelProto, ctx: Context, m: Measurement) -> str | None:
    """Where smooth noise leaves the float outputs nothing to judge plans by and glyph-like
    strokes do (``input_spec.strokes_inputs``, run through the probe: its sessions, no second
    copy of the weights): "maps" where a dense output's mask is empty on noise and not on
    strokes (a text detector: agreement of masks has nothing to count, and the relative error of
    a flat map judged PaddleOCR's detector plans), "classes" where only class-like outputs give
    one class on noise (judged then by their input-dependent error, ``Fidelity.centered_error``:
    a classifier on strokes is far from its data, and strokes planned PaddleOCR's direction
    classifier 9 points worse at 4 bits: BENCHMARKS.md, tb4_st), else None. Only for the
    measured weight-only plan: with int8 activations, calibration on strokes lost more on a
    recogniser."""
    from dfmpc_onnx.measure.fidelity import compare
    from dfmpc_onnx.measure.input_spec import strokes_inputs

    o = ctx.options
    if o.synthetic != "smooth" or o.integer_kernels or o.method != "auto":
        return None
    _, outs = m.probe.runs()
    with np.errstate(all="ignore"):  # non-finite outputs (a broken model): nothing said
        if not outs or not compare(outs, outs, list(outs[0]), m.probe.kinds).single_class:
            return None
        feeds = strokes_inputs(model, o.input_shapes, o.input_range, o.input_mean, o.input_std,
                               o.seed)
        if feeds is None:
            return None
        _, marked = m.probe.on_inputs(feeds).runs()
        names = list(outs[0])
        if compare(marked, marked, names, m.probe.kinds).single_class:
            return None
        maps = [n for n in names if m.probe.kinds.get(n) == "dense"]
        if (maps and compare(outs, outs, maps, m.probe.kinds).single_class
                and not compare(marked, marked, maps, m.probe.kinds).single_class):
            return "maps"
        return "classes"


def _on_strokes(model: onnx.ModelProto, ctx: Context) -> Measurement:
    """--synthetic auto: measure on strokes instead, for the rest of the conversion too
    (choose-plan's held-out check, measure-plan)."""
    ctx.options = ctx.options.resolved(synthetic="strokes")
    ctx.report.notes.append(
        "measured on glyph-like strokes (--synthetic auto): on smooth noise the float model's "
        "outputs leave nothing to judge plans by (one class for every sample, or an empty map), "
        "on strokes they respond; --synthetic smooth keeps noise")
    ctx.say("measuring: smooth noise judges nothing here; float run on strokes")
    give_back()
    return _build(model, ctx)


STROKES_NOT_TAKEN = (
    "on smooth noise the float model's outputs leave nothing to judge plans by (one class for "
    "every sample, or an empty map); on glyph-like strokes they respond: --synthetic strokes "
    "may plan it better (at --target-bits 4 it did on PaddleOCR's text detector, which --synthetic "
    "auto measures on strokes, and did not on its direction classifier: BENCHMARKS.md, column "
    "tb4_st); not switched to")


OUTPUTS_DID_NOT_VARY = (
    "the float model's outputs did not vary over the synthetic inputs (a saturated softmax?), "
    "so no plan could be judged: every measured layer at the widest bits, decided after the "
    "float run (nothing else was measured). --input-mean/--input-std or --input-range closer "
    "to its real inputs may help")


def outputs_vary(m: Measurement) -> bool:
    """False when the float model gives every synthetic input the same class and its scores do
    not vary at all: the plan ladder's check could then only keep the widest bits."""
    from dfmpc_onnx.measure.fidelity import compare

    _, outs = m.probe.runs()
    if not outs or not outs[0]:
        return True
    own = compare(outs, outs, list(outs[0]))
    return not (own.single_class and own.centered_error == float("inf"))


def probe_memory(model: onnx.ModelProto, stored: bool) -> int:
    """A generous estimate of the peak bytes measuring ``model`` adds (``FidelityProbe``'s
    memory limits): every weight held by ONNX Runtime's constant sessions, the largest layer three
    times (its candidate, its integers and float rows being rounded), the activations cached in
    memory (``CACHE_BYTES``; the rest go to files) and a run's working set (eight times
    ``RUN_BYTES``), and, where the weights are not in a weight store (``stored``), the weights
    once more for the protobuf. The VGG-19 shape at 224x224 (benchmarks/memory.py), stored:
    estimate 2.4 GB, measured peak 1.07 GB in all."""
    from dfmpc_onnx.measure.fidelity import CACHE_BYTES, RUN_BYTES

    sizes = [tensor_bytes(t) for t in model.graph.initializer]
    weights, largest = sum(sizes), max(sizes, default=0)
    return weights * (1 if stored else 2) + 3 * largest + CACHE_BYTES + 8 * RUN_BYTES


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _build(model: onnx.ModelProto, ctx: Context) -> Measurement:
    o = ctx.options
    inputs = make_inputs(model, ctx)
    index = GraphIndex(model.graph)
    nodes = {n.name: n for n in all_nodes(model.graph)}
    names: list[str] = []
    for name in ctx.layers:
        layer, _ = as_linear_layer(nodes[name], index)
        names += [layer.weight] + ([layer.bias] if layer.bias else [])
    ctx.say("measuring: float run on synthetic inputs")
    probe = FidelityProbe(model, names, inputs, store=ctx.store, kinds=o.output_kinds)
    return Measurement(probe, {}, {}, layer_inputs(model.graph, ctx), o.synthetic,
                       o.fidelity_samples)


def _measure_layer(ctx: Context, m: Measurement, name: str, layer: LinearLayer) -> list[Candidate]:
    inp = m.inputs.get(name)
    # Bias correction is a candidate only where its statistics are evidence independent of the
    # synthetic inputs: kept BatchNormalization (or --propagated-stats). Statistics propagated
    # from the assumed input distribution describe the synthetic inputs themselves, so measuring
    # on those inputs cannot refute them; on real data they misled (BN-folded glyph ResNet 3/8:
    # 88.2% rounding, 75.1% with the bias corrections the synthetic inputs "confirmed").
    fast = ctx.options.fast
    correctable = (bool(layer.bias) and inp is not None and layer.op != "MatMul"
                   and (inp.stats.trusted or ctx.options.propagated_stats))
    can_correct = correctable and not fast  # bias-correction candidates, each its own trial
    # --fast: no correction trials; where the statistics allow it, every low-bit candidate is
    # bias-corrected by the fixed rule (its trials and its estimates alike), as the fixed plans
    # do: kept BN statistics are evidence independent of the synthetic inputs (above). PaddleOCR's
    # direction classifier (35 kept BN) at --target-bits 5 keeps 91.8% of real text this way,
    # the default 92.5% (benchmarks/pretrained.py, columns fast_tb5 and tb5).

    def corr(bits: int) -> str:
        return "bias" if fast and correctable and bits < ctx.options.widest_bits else "none"

    cands: list[Candidate] = []
    if not ctx.options.per_channel:
        w = m.probe.weight(layer.weight).astype(np.float64)
    elif layout_of(layer).out_axis == 0:
        w = m.probe.weight_rows(layer.weight)  # rows read as needed (quantize_by_rows)
    else:
        w = m.probe.weight(layer.weight)
    choices = _candidate_choices(ctx, name, layer, w)
    estimate = ctx.options.method == "auto" and name not in ctx.fixed and len(choices) > 2
    errors = _maxabs_errors(ctx, layer, w, {b for b, _ in choices}) if estimate else {}
    wider = _wider_block_errors(ctx, layer, w, choices) if estimate else {}
    del w  # a large float weight is not kept while the candidates run
    # Trials the first-order estimate makes unnecessary (issue 20): a layer's divergence grows
    # with its weight error energy (quadratically in the perturbation, so the 4-bit trial scaled
    # by the error ratio predicts the widest grid, where the perturbation is smallest, and
    # under-predicts the 2-bit one). The widest grid is estimated, never tried alone; the 2-bit
    # candidates are not tried where even the under-prediction is beyond RULE_OUT.
    four = min((b for b, _ in choices if b > 2), default=None) if estimate else None
    order = sorted(choices, key=lambda c: (c[0] != four, c[0], c[1] != "maxabs"))  # 4 bits first
    ruled: set[int] = set()
    for bits, grid in order:
        if four is not None and bits != four and grid == "maxabs" and errors.get(four):
            base = next(c for c in cands if c.bits == four and c.quantizer == "maxabs")
            predicted = base.divergence * errors[bits] / errors[four]
            if bits > four or predicted > RULE_OUT:
                # Kept with the estimate (a budget may need it to fit), never tried alone.
                ruled.add(bits)
                nbytes = layer_replacement(layer, LayerPlan(bits, grid, "none"), ctx, inp, m.probe)[1]
                cands.append(Candidate(bits, grid, corr(bits), nbytes, predicted))
                m.estimated += 1
                continue
        if bits in ruled:
            continue  # its maxabs twin was ruled out: this grid is not tried either
        arrays, nbytes = layer_replacement(layer, LayerPlan(bits, grid, corr(bits)), ctx, inp, m.probe)
        cands.append(Candidate(bits, grid, corr(bits), nbytes, m.probe.measure(arrays).score))
        m.trials += 1
        del arrays  # before the next candidate is made: a large layer's candidate is its size
    for c in [c for c in cands if (c.bits, c.quantizer) in wider]:
        # Wider blocks (fewer scales: a budget of 5 stored bits cannot take block-32's 4 + 1),
        # estimated from the block-32 trial by weight error, as the widest grid is.
        for grid, (ratio, nbytes) in wider[(c.bits, c.quantizer)].items():
            cands.append(Candidate(c.bits, grid, c.correction, nbytes, c.divergence * ratio))
            m.estimated += 1
    if can_correct:
        for bits in sorted({c.bits for c in cands}):
            if bits >= ctx.options.widest_bits or bits in ruled:
                continue  # the widest grid's rounding leaves nothing worth correcting
            best = min((c for c in cands if c.bits == bits), key=lambda c: c.divergence)
            choice = LayerPlan(bits, best.quantizer, "bias")
            fid = m.probe.measure(m.replacement(name, choice, ctx))
            m.trials += 1
            cands.append(Candidate(bits, best.quantizer, "bias", best.nbytes, fid.score))
    return cands


# Replacement arrays ``Measurement.replacement`` keeps for later plans: ddddocr's detector's
# distinct choices over its 50 whole plans are about 4x its 19 MB of float weights.
REPLACEMENT_BYTES = 256 << 20


# A layer whose 2-bit divergence alone is predicted above this (an under-prediction, see
# ``_measure_layer``) is not tried at 2 bits: no plan that keeps a fidelity level takes it, and
# the estimate is kept for budgets that cannot be met without it.
RULE_OUT = 0.05


# Block grids estimated from a measured one (``_measure_layer``): each the measured grid's
# blocks merged, so its weight error grows with them and its scales cost less.
WIDER_BLOCKS: dict[str, tuple[str, ...]] = {"block32": ("block64", "block128")}


def _wider_block_errors(ctx: Context, layer: LinearLayer, w, choices: list[tuple[int, str]]
                        ) -> dict[tuple[int, str], dict[str, tuple[float, float]]]:
    """Per (bits, block grid) to be tried: each wider block grid's weight error relative to it,
    and the bytes it stores; only where the wider grid has fewer scales (else it is the same)."""
    per_channel = ctx.options.per_channel
    out: dict[tuple[int, str], dict[str, tuple[float, float]]] = {}
    for bits, grid in choices:
        if grid not in WIDER_BLOCKS:
            continue
        base = quantize_layer(layer, w, LayerPlan(bits, grid, "none"), per_channel,
                              rounding=ctx.options.rounding)
        if base.block_size is None:
            continue  # no reduction axis to cut (a depthwise Conv): wider blocks are the same
        e0, n_scales = base.squared_error(w), base.scale.size  # fewer scales, or no saving
        itemsize = np.dtype(w.dtype).itemsize
        del base
        wider = {}
        for g in WIDER_BLOCKS[grid]:
            qt = quantize_layer(layer, w, LayerPlan(bits, g, "none"), per_channel,
                                rounding=ctx.options.rounding)
            if qt.block_size is not None and qt.scale.size < n_scales and e0 > 0:
                wider[g] = (qt.squared_error(w) / e0, qt.ideal_bytes(ctx.options.format, itemsize))
            del qt
            give_back()
        out[(bits, grid)] = wider
    return out


def _maxabs_errors(ctx: Context, layer: LinearLayer, w, bits: set[int]) -> dict[int, float]:
    """Squared weight error of max-abs rounding at each of ``bits``: cheap, no network run."""
    per_channel = ctx.options.granularity == "channel"
    out = {}
    for b in bits:
        out[b] = quantize_layer(layer, w, LayerPlan(b, "maxabs", "none"), per_channel,
                                rounding=ctx.options.rounding).squared_error(w)
        give_back()
    return out


class MeasurePlan:
    """The final quantized model measured as a whole: the report's predicted fidelity.

    Always on synthetic inputs of another seed than those any choice was made on (a plan chosen
    on its inputs looks better there than it is): the default ladder's held-out probe where it
    exists, else two plain ONNX Runtime runs, float and quantized weights. The activation pass
    reuses the float outputs (``ctx.reference``)."""

    name = "measure-plan"
    requires = (Fact.QUANTIZED,)
    provides = (Fact.FIDELITY,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        o = ctx.options
        if not ctx.quantized or (ctx.measurement is None and not o.fidelity_samples):
            return False
        index = GraphIndex(model.graph)
        nodes = {n.name: n for n in all_nodes(model.graph)}
        repl: dict[str, Callable[[], np.ndarray]] = {}
        for name, qt in ctx.quantized.items():
            layer, _ = as_linear_layer(nodes[name], index)
            # In the weight's own type (what the runs use), made when the probe reaches the layer.
            w = index.initializers[layer.weight]
            repl[layer.weight] = functools.partial(_dequantized, qt, w.data_type, tuple(w.dims))
            if name in ctx.new_bias and layer.bias:
                b = index.initializers[layer.bias]
                repl[layer.bias] = functools.partial(np.reshape, ctx.new_bias[name], tuple(b.dims))
        try:
            m = ctx.measurement
            if m is not None and m.check is not None:
                check = m.check
            else:  # never on the inputs a choice (or activation ranges) was made on
                samples = o.fidelity_samples or m.samples
                inputs = make_inputs(model, ctx, n=samples, seed=o.seed + 1)
                check = (m.probe.on_inputs(inputs) if m is not None else
                         FidelityProbe(model, list(repl), inputs, store=ctx.store, cache_segments=False,
                                       kinds=o.output_kinds))
            fid, samples = check.measure(repl), check.samples
            ctx.reference = check.runs()
            kind = o.synthetic + ", held out"
        except Exception as exc:  # noqa: BLE001 - the fidelity is a prediction, never fatal
            ctx.report.notes.append(f"predicted fidelity not measured: {_first_line(exc)}")
            return False
        finally:
            # Nothing measures after this: the probe's sessions and cached activations (gigabytes
            # on a large model) must not live on through emitting and writing the model.
            ctx.measurement = None
        ctx.report.fidelity = {"score": fid.score, "top1_agreement": fid.top1_agreement,
                               "metric": sorted(set(fid.metric.values())), "samples": samples,
                               "kinds": dict(fid.kinds),
                               "target_missed": m is not None and m.target_missed,
                               "passing_bits": None if m is None else m.passing_bits,
                               "inputs": kind, "single_class": fid.single_class,
                               "centered_error": fid.centered_error}
        return False


def _dequantized(qt, data_type: int, shape: tuple[int, ...]) -> np.ndarray:
    return qt.dequantize_as(onnx.helper.tensor_dtype_to_np_dtype(data_type)).reshape(shape)
