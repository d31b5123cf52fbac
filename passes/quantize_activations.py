"""Quantize activations to 8 bits, with no data, so ONNX Runtime runs the model on integer kernels.

After emit-qdq has written the weights, this pass (``--activations int8``):

1. picks the activations ORT fuses into integer kernels (``dfmpc_onnx.quant.activation_qdq``);
2. runs the weight-quantized model on seeded ``--synthetic`` inputs (with
   ``--activation-headroom-rule measured``: of each kind, smooth, gaussian and uniform) and
   keeps each activation's extremes and a subsample of its values (``dfmpc_onnx.measure.calibrate``);
3. the headroom: ``--activation-headroom``, or with the measured rule 1, its square root or
   itself, judged on the kind of input left out of calibration
   (``dfmpc_onnx.measure.activation_headroom``);
4. for each clip rule (min-max, percentile, MSE-optimal; all of them with ``--activation-clip
   auto``) writes the activation grids, widened by that headroom, into a copy and
   measures, on *other* synthetic inputs, how far the whole model's outputs move from the
   weight-only model's; keeps the rule that moves them least (which rule wins differs by model:
   measured, not assumed); where BatchNormalization was kept, auto then measures the same with
   each such grid set from its statistics instead (the ``bn`` rule over the winner), and keeps
   that if it moves the outputs less;
5. with ``--activation-float-grids``, measures each grid's quantization noise and keeps float
   the few noisiest grids whose noise
   carries furthest to the outputs, by whole-model measurement on the same held-out inputs
   (``dfmpc_onnx.measure.activation_select``; the report lists them);
6. writes that rule's QuantizeLinear/DequantizeLinear pairs, int32 biases and explicit weight
   zero points, and reports the predicted fidelity of the final model against the float one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx.errors import UnsupportedModelError, first_line
from dfmpc_onnx.measure.activation_headroom import KINDS, choose_headroom, merge_samples
from dfmpc_onnx.measure.activation_select import (
    choose_float_count,
    clamped_inputs,
    float_budget,
    output_divergence,
    rank_groups,
    tensor_sqnr,
    without_groups,
)
from dfmpc_onnx.measure.calibrate import (
    CLIP_RULES,
    ActivationSamples,
    QuantParams,
    TensorSamples,
    clip_range,
    quant_params,
)
from dfmpc_onnx.measure.fidelity import Fidelity, compare, split_batches
from dfmpc_onnx.model.graph import drop_unused_initializers
from dfmpc_onnx.model.weightstore import session_for
from dfmpc_onnx.quant.activation_qdq import (
    ActivationPlan,
    insert_activation_qdq,
    plan_activations,
    quantize_biases,
    weight_zero_points,
)

from .base import Context, Fact, make_inputs

# --activation-clip bn: mean +- this many standard deviations of each channel. On the kept-BN
# examples 6 stayed within 0.5 points of the synthetic min-max ranges; 3 lost up to 5.3 points and
# 4 up to 0.2 by clipping (benchmarks/ACTIVATIONS.md, `python -m benchmarks.activations`).
BN_STDS = 6.0
RULE_CHECK_FACTOR = 4
MIN_CALIBRATION = 8  # samples, even with --fidelity-samples 0: ranges cannot come from nothing


class QuantizeActivations:
    name = "quantize-activations"
    requires = (Fact.QDQ,)
    provides = (Fact.ACTIVATIONS,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        o = ctx.options
        _check_integer_grids(ctx)
        graph = model.graph
        plan = plan_activations(graph, ctx.quantized, _float_tensors(graph))
        if not plan.tensors:
            ctx.report.notes.append("--activations int8: no float32 activation feeds a quantized "
                                    "layer; activations stay float")
            return False
        n = max(o.fidelity_samples, MIN_CALIBRATION)
        kinds = _calibration_kinds(ctx)
        ctx.say(f"activations: calibrating {len(plan.tensors)} tensors on {n} synthetic inputs "
                f"of each kind: {', '.join(kinds)}")
        try:
            per_kind = {k: ActivationSamples(model, plan.tensors, _kind_inputs(model, ctx, k, n),
                                             seed=o.seed, store=ctx.store) for k in kinds}
        except Exception as exc:  # noqa: BLE001 - said in one line, with what to do
            raise UnsupportedModelError(
                "--activations int8 sets activation ranges by running the model in ONNX Runtime "
                f"on synthetic inputs, which failed here ({first_line(exc, 203)}); convert without "
                "--activations (weight-only)") from exc
        first = per_kind[kinds[0]]
        not_float = [t for t in plan.tensors if first.dtypes[t] != np.float32]
        if not_float:  # untyped in the graph and not float after all: plan without them
            plan = plan_activations(graph, ctx.quantized,
                                    {t for t in plan.tensors if t not in not_float})
        headroom, headroom_scores = _measure_headroom(model, ctx, plan, per_kind, n)
        samples = merge_samples(list(per_kind.values()))
        inputs = {i.name for i in graph.input}
        rules = CLIP_RULES if o.activation_clip == "auto" else (o.activation_clip,)
        scores: dict[str, Fidelity] = {}
        base = "minmax"  # where bn has no statistics: explicit --activation-clip bn's rule
        # Neither the calibration inputs (seed) nor those the report's fidelity is measured
        # on (seed + 1, measure-plan): the rule is not chosen on what judges it.
        # Four times as many as calibration: the rules differ by little on noise, and on 16
        # inputs the pick was a coin toss (benchmarks/third_party.py).
        held = make_inputs(model, ctx, n=RULE_CHECK_FACTOR * n, seed=o.seed + 2)
        weight_only = _run(model, held, ctx)
        if len(rules) > 1:
            for rule in rules:
                ctx.say(f"activations: measuring clip rule {rule}")
                trial = onnx.ModelProto()
                trial.CopyFrom(model)
                _emit(trial, ctx, plan, _params(plan, samples, rule, ctx, inputs, headroom))
                scores[rule] = compare(weight_only, _run(trial, held, ctx), _outputs(model))
                del trial
            chosen = min(rules, key=lambda r: scores[r].score)  # ties: the earlier, simpler rule
            if _bn_grids(plan, ctx):
                # Kept BN statistics describe the data the model was trained on, which no
                # synthetic range does; measured like the others, over the rule that won.
                ctx.say(f"activations: measuring kept-BN ranges over clip rule {chosen}")
                trial = onnx.ModelProto()
                trial.CopyFrom(model)
                _emit(trial, ctx, plan, _params(plan, samples, "bn", ctx, inputs, headroom, chosen))
                scores["bn"] = compare(weight_only, _run(trial, held, ctx), _outputs(model))
                del trial
                if scores["bn"].score < scores[chosen].score:
                    base, chosen = chosen, "bn"
        else:
            chosen = rules[0]
        params = _params(plan, samples, chosen, ctx, inputs, headroom, base)
        floated, tried = _keep_float(model, ctx, plan, params, held, weight_only, n)
        kept = _emit(model, ctx, plan, without_groups(plan, params, floated))
        _report(ctx, plan, chosen, base, scores, kept, n)
        _report_headroom(ctx, headroom, headroom_scores, list(per_kind))
        _report_float(ctx, plan, floated, tried)
        _report_assumed_input(ctx, [t for t in plan.tensors if t in inputs and t in params], params)
        if ctx.reference is not None:
            feeds, reference = ctx.reference
            fid = compare(reference, [r for f in feeds for r in _run(model, f, ctx)], _outputs(model))
            ctx.report.fidelity.update(score=fid.score, top1_agreement=fid.top1_agreement,
                                       metric=sorted(set(fid.metric.values())))
        return True


def _calibration_kinds(ctx: Context) -> tuple[str, ...]:
    """The kinds of synthetic inputs calibrated on: with --activation-headroom-rule measured the
    one asked for first, then the others of activation_headroom.KINDS; only the one asked for
    with the fixed rule, a headroom of 1 or distilled inputs (other kinds would not be what the
    options describe)."""
    o = ctx.options
    if (o.activation_headroom_rule == "fixed" or o.synthetic == "distilled"
            or o.activation_headroom == 1):
        return (o.synthetic,)
    first = () if o.synthetic == "mixed" else (o.synthetic,)
    return first + tuple(k for k in KINDS if k not in first)


def _kind_inputs(model: onnx.ModelProto, ctx: Context, kind: str, n: int,
                 seed: int | None = None) -> dict[str, np.ndarray]:
    if kind == ctx.options.synthetic:
        return make_inputs(model, ctx, n=n, seed=seed)
    from dfmpc_onnx.measure.synthetic import synthetic_inputs

    o = ctx.options
    return synthetic_inputs(model, n=n, kind=kind, seed=o.seed if seed is None else seed,
                            mean=o.input_mean, std=o.input_std, value_range=o.input_range,
                            shapes=o.input_shapes or None)


def _measure_headroom(model: onnx.ModelProto, ctx: Context, plan: ActivationPlan,
                      per_kind: dict[str, ActivationSamples], n: int
                      ) -> tuple[float, dict[float, list[float]]]:
    """The headroom (dfmpc_onnx.measure.activation_headroom): 1, the square root of
    --activation-headroom and --activation-headroom itself, each judged leaving one kind of
    synthetic input out; --activation-headroom as given when only one kind was calibrated."""
    o = ctx.options
    if len(per_kind) < 2:
        return o.activation_headroom, {}
    top = o.activation_headroom
    factors = sorted({1.0, float(np.sqrt(top)), float(top)})
    inputs = {i.name for i in model.graph.input}
    scores: dict[float, list[float]] = {h: [] for h in factors}
    outputs = _outputs(model)
    for left in per_kind:
        held = _kind_inputs(model, ctx, left, n, seed=o.seed + 3)
        reference = _run(model, held, ctx)
        rest = merge_samples([s for k, s in per_kind.items() if k != left])
        for h in factors:
            ctx.say(f"activations: headroom {h:.2f}, judged on {left} inputs")
            trial = onnx.ModelProto()
            trial.CopyFrom(model)
            _emit(trial, ctx, plan, _params(plan, rest, "minmax", ctx, inputs, h))
            scores[h].append(output_divergence(reference, _run(trial, held, ctx), outputs))
            del trial
    return choose_headroom(scores), scores


def _keep_float(model: onnx.ModelProto, ctx: Context, plan: ActivationPlan,
                params: dict[str, QuantParams], held: dict[str, np.ndarray],
                weight_only: list[dict[str, np.ndarray]], n: int
                ) -> tuple[list[str], dict[int, float]]:
    """The groups to keep float (dfmpc_onnx.measure.activation_select): the noisiest grids on ``n`` of
    the held-out inputs, as many of them (within the budget) as brings the whole model closest
    to the weight-only one on all of them by enough (choose_float_count); none when none does.
    Also the divergence of each number tried."""
    ks = float_budget(len(plan.range_from)) if ctx.options.activation_float_grids else []
    if not ks:
        return [], {}
    first = {k: v[:n] for k, v in held.items()}
    ctx.say("activations: measuring each grid's quantization noise")
    sqnr = tensor_sqnr(model, params, first, clamped=clamped_inputs(plan), store=ctx.store)
    order = rank_groups(plan, sqnr)
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    _emit(trial, ctx, plan, params)
    outputs = _outputs(model)
    tried = {0: output_divergence(weight_only, _run(trial, held, ctx), outputs)}
    del trial
    for k in ks:
        ctx.say(f"activations: measuring with the {k} noisiest grids float")
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        _emit(trial, ctx, plan, without_groups(plan, params, order[:k]))
        tried[k] = output_divergence(weight_only, _run(trial, held, ctx), outputs)
        del trial
    return order[:choose_float_count(tried, len(plan.range_from))], tried


def _report_headroom(ctx: Context, headroom: float, scores: dict[float, list[float]],
                     kinds: list[str]) -> None:
    ctx.report.activations["headroom"] = headroom
    ctx.report.activations["calibration_kinds"] = kinds
    ctx.report.activations["headroom_scores"] = {str(h): v for h, v in scores.items()}
    if scores:
        shown = "; ".join(f"{h:.2f}: " + ", ".join(f"{v:.3g}" for v in d) for h, d in scores.items())
        ctx.report.notes.append(
            f"activations: ranges are the union over {', '.join(kinds)} inputs widened by "
            f"{headroom:.2f}, the factor whose grids moved the outputs least on the kind of input "
            f"left out of their calibration (divergence per kind left out, {shown})")


def _report_float(ctx: Context, plan: ActivationPlan, floated: list[str],
                  tried: dict[int, float]) -> None:
    tensors = [t for t in plan.tensors if plan.group[t] in set(floated)]
    ctx.report.activations["kept_float"] = tensors
    ctx.report.activations["float_divergence"] = {str(k): v for k, v in tried.items()}
    if not tried:  # too few grids to keep any float
        return
    shown = ", ".join(f"{k} {v:.3g}" for k, v in tried.items())
    ctx.report.notes.append(
        f"activations: {len(floated)} of {len(plan.range_from)} grids kept float (the noisiest, "
        f"as many as gained most, each charged twice an average grid's share of the divergence "
        f"from the weight-only model on held-out synthetic inputs; float grids: divergence {shown})"
        + (f": {', '.join(tensors)}" if tensors else ""))


def _report_assumed_input(ctx: Context, quantized_inputs: list[str],
                          params: Mapping[str, QuantParams]) -> None:
    """Say where a graph input's grid comes from when nothing stated its range: the assumed
    distribution (mean 0, std 1) is what every grid after it was calibrated on too. Told the
    range the model's pre-processing gives, the grids are finer where the real inputs span less:
    on PaddleOCR's three models (inputs -1..1, which neither the graph nor the first layer's
    response shows) int8 kept 2-4 points more of their real metric (BENCHMARKS.md, column
    a8_told)."""
    o = ctx.options
    if (not quantized_inputs or o.input_range is not None or o.synthetic == "distilled"
            or (o.input_mean, o.input_std) != (0.0, 1.0)):
        return  # stated, inferred from the graph, or learned from the model (distilled)
    lo, hi = (0, 255) if o.activation_type == "uint8" else (-128, 127)
    shown = ", ".join(f"{t} {(lo - params[t].zero_point) * params[t].scale:.3g}.."
                      f"{(hi - params[t].zero_point) * params[t].scale:.3g}"
                      for t in quantized_inputs)
    ctx.report.notes.append(
        f"activations: the input grid ({shown}) and every grid calibrated after it assume a "
        "normalised input (mean 0, std 1), since neither the graph nor the first layer's response "
        "states another range; where your pre-processing gives a known range (x/127.5 - 1: "
        "--input-range -1,1; x/255: 0,1; raw pixels: 0,255), saying so makes the grids fit it")


def _check_integer_grids(ctx: Context) -> None:
    """Every weight must be on a grid the integer kernels read: symmetric, per tensor or per
    output channel, in an 8-bit container."""
    bad = [name for name, qt in ctx.quantized.items()
           if qt.block_size is not None or qt.zero_point is not None
           or qt.container_bits("int8") != 8]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UnsupportedModelError(
            f"--activations int8: layer {shown} got a grid ONNX Runtime's integer kernels cannot "
            "read (block-wise, asymmetric, or wider than 8 bits, like the paper's 8-bit DoReFa "
            "grid); plan those layers with maxabs, mse, twn or mse-ternary at 2-8 bits")


def _float_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors typed float32 by shape inference, and node outputs shape inference left untyped
    (checked after calibration, which sees their values)."""
    typed = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    names = {n for n, t in typed.items() if t == onnx.TensorProto.FLOAT}
    names.update(o for node in graph.node for o in node.output if o and o not in typed)
    return names


def _params(plan: ActivationPlan, samples: Mapping[str, TensorSamples], rule: str, ctx: Context,
            graph_inputs: set[str], h: float, base: str = "minmax") -> dict[str, QuantParams]:
    """Each activation's grid under ``rule``: the synthetic ranges widened by the headroom ``h``
    (not graph inputs, whose distribution the options state), or for ``bn`` kept-BN ranges
    where a grid has statistics and the ``base`` rule's synthetic ranges where it has none."""
    o = ctx.options
    cut = base if rule == "bn" else rule
    ranges = {t: clip_range(samples[t], cut, o.activation_type) for t in plan.tensors}
    ranges = {t: r if t in graph_inputs else (r[0] * h, r[1] * h) for t, r in ranges.items()}
    if rule == "bn":
        ranges.update(_bn_ranges(plan, ctx, BN_STDS))
    return plan.params(ranges, o.activation_type, quant_params)


def _bn_ranges(plan: ActivationPlan, ctx: Context, k: float) -> dict[str, tuple[float, float]]:
    """Ranges from kept BatchNormalization statistics: each channel's mean +- k std, from 0
    after the group's ReLU (a Clip's bounds are applied by ActivationPlan.params)."""
    out: dict[str, tuple[float, float]] = {}
    for rep, members in plan.range_from.items():
        group = [t for t in plan.tensors if plan.group[t] == rep]
        stats = [ctx.bn_stats[t] for t in group if t in ctx.bn_stats]
        if not stats:
            continue
        mean, std = (np.asarray(v, dtype=np.float64) for v in stats[0])
        lo, hi = float(np.min(mean - k * std)), float(np.max(mean + k * std))
        if any(t in plan.bounds for t in group):
            lo = max(lo, 0.0)
        for m in members:
            out[m] = (lo, hi)
    return out


def _bn_grids(plan: ActivationPlan, ctx: Context) -> int:
    """How many grids kept BatchNormalization statistics can set (0 on a BN-folded model)."""
    return sum(1 for rep in plan.range_from
               if any(t in ctx.bn_stats for t in plan.tensors if plan.group[t] == rep))


def _emit(model: onnx.ModelProto, ctx: Context, plan: ActivationPlan,
          params: dict[str, QuantParams]) -> list[str]:
    """Write the activation grids, int32 biases and weight zero points into ``model``; returns
    the layers whose bias stayed float."""
    graph = model.graph
    insert_activation_qdq(graph, params, plan.elided(params))
    kept = quantize_biases(graph, ctx.quantized, params)
    weight_zero_points(graph)
    drop_unused_initializers(graph)  # the float biases the int32 ones replace
    return kept


def _outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def _run(model: onnx.ModelProto, inputs: dict[str, np.ndarray], ctx: Context
         ) -> list[dict[str, np.ndarray]]:
    """The model's outputs on ``inputs``, per run of its fixed batch if it has one (ORT with the
    default graph optimisations, so the integer kernels that will run are the ones measured)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    session = session_for(model, so, ctx.store)
    names = _outputs(model)
    wanted = [i.name for i in session.get_inputs()]
    return [dict(zip(names, session.run(names, {k: feeds[k] for k in wanted}), strict=True))
            for feeds in split_batches(model, inputs)]


def _report(ctx: Context, plan: ActivationPlan, chosen: str, base: str,
            scores: dict[str, Fidelity], kept: list[str], samples: int) -> None:
    o = ctx.options
    ctx.report.activations = {
        "type": o.activation_type, "tensors": len(plan.tensors), "grids": len(plan.range_from),
        "clip": chosen, "clip_base": base if chosen == "bn" else None,
        "calibration_samples": samples,
        "clip_scores": {r: f.score for r, f in scores.items()},
        "clip_agreement": {r: f.top1_agreement for r, f in scores.items()},
    }
    tried = ", ".join(f"{r} {f.score:.2e}" for r, f in scores.items())
    ctx.report.notes.append(
        f"activations: {len(plan.tensors)} tensors quantized to {o.activation_type} "
        f"({len(plan.range_from)} grids) from {samples} synthetic {o.synthetic} inputs, clip rule "
        f"{chosen}" + (f" (divergence from the weight-only model on other synthetic inputs: "
                       f"{tried})" if scores else ""))
    if chosen == "bn":
        ctx.report.notes.append(
            f"activations: {_bn_grids(plan, ctx)} of {len(plan.range_from)} grids from kept "
            f"BatchNormalization statistics (mean +- {BN_STDS:g} std), the others from the "
            f"synthetic inputs' {base}")
    full = sorted(n for n, qt in ctx.quantized.items() if qt.grid[1] > 63)
    if full and o.activation_type == "uint8":
        ctx.report.notes.append(
            f"{len(full)} layers use all of int8 with uint8 activations: ONNX Runtime's x86 kernels "
            "on CPUs without VNNI can saturate on them (its reduce_range); 7 bits, the default, "
            "cannot")
    low = sorted({qt.bits for qt in ctx.quantized.values() if qt.bits < o.widest_bits})
    if low:
        ctx.report.notes.append(
            f"weights on {'/'.join(map(str, low))}-bit grids are stored in int8 containers, "
            "which ONNX Runtime's integer kernels read: the file is no smaller than at 8 bits")
    if kept:
        ctx.report.notes.append(f"biases left float: {', '.join(kept)}")
