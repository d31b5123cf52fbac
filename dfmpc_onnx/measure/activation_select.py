"""Which activations stay float: the few whose 8-bit grid hurts the whole model most (issue 23).

One headroom for every tensor leaves a few tensors with coarse grids: on PP-OCRv4's recogniser
the 8-bit grids of a handful of residual sums and pointwise convolutions keep only 13-18 dB of
their signal (the median tensor keeps over 25 dB), and the quantization noise added there
carries to the output. Measuring that noise needs no data: it is the same in rank on synthetic
inputs as on real text lines (``benchmarks/int8_check.py``; out/diag in the report).

So, per model, by measurement:

1. ``tensor_sqnr``: run the weight-only model on held-out synthetic inputs and measure, for
   each activation grid alone, the signal-to-quantization-noise ratio of what it does to each
   channel of its tensor, and keep the median channel's;
2. ``rank_groups``: order the shared-grid groups by their worst member, noisiest first;
3. the pass keeps float the first k groups for k = 1, 2, 4, ... up to a budget, measures each
   whole model against the weight-only one with ``output_divergence``, and ``choose_float_count``
   keeps the k with the largest gain net of a charge per float grid of twice an average grid's
   share of the divergence (k = 0 when none gains). A float group costs speed: its neighbours' Conv or MatMul
   then runs in float, hence the budget and the bar.

``output_divergence`` is the output-aware signal: for (batch, time, classes) and (batch, classes)
outputs the fraction of positions whose top class changes, plus the relative squared error of
every output (dense maps and regressions have only that part).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from dfmpc_onnx.model.weightstore import WeightStore, session_reading
from dfmpc_onnx.quant.activation_qdq import ActivationPlan

from .calibrate import QuantParams
from .fidelity import split_batches


def output_divergence(reference: Sequence[Mapping[str, np.ndarray]],
                      candidate: Sequence[Mapping[str, np.ndarray]], outputs: Iterable[str]) -> float:
    """Mean over outputs of (top-class disagreement per position, for outputs of rank 2 or 3 with
    several classes on the last axis) + (relative squared error). Lower is closer."""
    scores = []
    for name in outputs:
        a = [np.asarray(r[name]) for r in reference]
        b = [np.asarray(c[name]) for c in candidate]
        if not np.issubdtype(a[0].dtype, np.floating):
            diff = sum(int(np.count_nonzero(x != y)) for x, y in zip(a, b, strict=True))
            scores.append(diff / max(1, sum(x.size for x in a)))
            continue
        err = sum(float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2))
                  for x, y in zip(a, b, strict=True))
        norm = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in a)
        rel = err / norm if norm > 0 else err
        score = rel if np.isfinite(rel) else float("inf")
        if a[0].ndim in (2, 3) and a[0].shape[-1] > 1:
            flips = sum(int(np.count_nonzero(np.argmax(x, -1) != np.argmax(y, -1)))
                        for x, y in zip(a, b, strict=True))
            score += flips / max(1, sum(x.size // x.shape[-1] for x in a))
        scores.append(score)
    return float(np.mean(scores)) if scores else 0.0


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """The channel axis of an activation: 1 for (N, C, ...) maps of rank 4 and more, the last
    for (N, C) and (N, T, C) sequences; None for a scalar."""
    if len(shape) == 0:
        return None
    return 1 if len(shape) >= 4 else len(shape) - 1


def clamped_inputs(plan: ActivationPlan) -> dict[str, tuple[float, float]]:
    """The ReLU/Clip inputs whose grid is their clamp's (tensor -> the clamp's bounds): their
    grid clamps on purpose, so their noise is measured against the clamped values."""
    return {x: plan.bounds[y] for y, x in plan.clamps.items() if y in plan.bounds}


def tensor_sqnr(model: onnx.ModelProto, params: Mapping[str, QuantParams],
                inputs: Mapping[str, np.ndarray], *,
                clamped: Mapping[str, tuple[float, float]] | None = None, threads: int = 2,
                store: WeightStore | None = None) -> dict[str, float]:
    """For each tensor of ``params`` in ``model`` (the model before its activation grids), the
    median over its channels of each channel's SQNR in dB of the grid ``params`` gives it
    (powers summed over ``inputs``). Each grid is judged alone, on values no other grid has
    touched: a grid that crushes a tensor would otherwise hide the grids after it, which see only
    what it left. Per channel: one channel a thousand times larger than the others gets a fine
    SQNR over the whole tensor while the grid it stretches leaves the others almost nothing.
    ``clamped`` (clamped_inputs): tensors whose signal is their values clipped to these bounds."""
    clamped = dict(clamped or {})
    have = {o for node in model.graph.node for o in node.output} | {i.name for i in model.graph.input}
    names = [t for t in params if t in have]
    if not names:
        return {}
    session = session_reading(model, names, store, threads)
    feeds_names = [i.name for i in session.get_inputs()]
    power: dict[str, np.ndarray] = {}
    noise: dict[str, np.ndarray] = {}
    for chunk in split_batches(model, inputs):
        out = dict(zip(names, session.run(names, {k: chunk[k] for k in feeds_names}), strict=True))
        for t in names:
            x = np.asarray(out[t], dtype=np.float32)
            s = np.clip(x, *clamped[t]).astype(np.float64) if t in clamped else x.astype(np.float64)
            e = (params[t].quantize_dequantize(x).astype(np.float64) - s) ** 2
            axis = channel_axis(s.shape)
            rest = tuple(a for a in range(s.ndim) if a != axis)
            power[t] = power.get(t, 0) + np.sum(s ** 2, axis=rest).reshape(-1)
            noise[t] = noise.get(t, 0) + np.sum(e, axis=rest).reshape(-1)
    return {t: _median_db(power[t], noise[t]) for t in names}


def _median_db(power: np.ndarray, noise: np.ndarray) -> float:
    """Median over channels with signal of 10 log10(power / noise); inf when none is noisy."""
    live = power > 0
    if not np.any(live):
        return float("inf")
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(power[live] / noise[live])
    return float(np.median(db))


def rank_groups(plan: ActivationPlan, sqnr: Mapping[str, float]) -> list[str]:
    """Group representatives, the group with the noisiest member first (groups without a
    measured member last, in plan order)."""
    worst: dict[str, float] = {}
    for t in plan.tensors:
        if t in sqnr:
            rep = plan.group[t]
            worst[rep] = min(worst.get(rep, float("inf")), sqnr[t])
    reps = list(plan.range_from)
    return sorted(reps, key=lambda r: (worst.get(r, float("inf")), reps.index(r)))


def float_budget(groups: int) -> list[int]:
    """The numbers of float groups tried: 1, 2, 4, ... up to an eighth of the groups (none below
    eight groups): a float group slows its neighbours, so only a few may stay float."""
    top = groups // 8
    ks, k = [], 1
    while k <= top:
        ks.append(k)
        k *= 2
    return ks


def choose_float_count(divergence: Mapping[int, float], groups: int) -> int:
    """How many of the noisiest groups stay float, from the whole-model ``divergence`` measured
    with k of them float (k = 0, 1, 2, 4, ...). Keeping a grid float always moves the outputs a
    little closer, so closer is not enough: each float grid is charged twice the share of an
    average grid, 2 * divergence[0] / groups, and the k with the largest net gain
    divergence[0] - divergence[k] - k * charge wins (0 when none gains). Only grids whose noise
    carries that far, the outliers a single headroom leaves behind, are worth their speed."""
    if 0 not in divergence or groups < 1:
        return 0
    charge = 2 * divergence[0] / groups
    return max(sorted(divergence), key=lambda k: (divergence[0] - divergence[k] - k * charge, -k))


def without_groups(plan: ActivationPlan, params: Mapping, reps: Iterable[str]) -> dict:
    """``params`` less every tensor of the groups ``reps``: those stay float."""
    drop = set(reps)
    return {t: p for t, p in params.items() if plan.group.get(t) not in drop}
