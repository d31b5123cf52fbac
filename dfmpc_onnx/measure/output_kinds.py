"""What kind of thing each model output is, and how a candidate's output is judged against it.

One divergence for every output misjudged plans (issue 19): a text recogniser's (batch, time,
classes) probabilities, judged by relative MSE, let a plan through at 4.3 bits that read no
character right; a text detector's probability map, judged the same way, let through a plan that
detected nothing. Each output is therefore judged by its kind:

- ``class``: class scores ``(batch, classes)``: KL of the softmax (or of the rows themselves when
  they are probabilities) and top-1 agreement per sample.
- ``sequence``: scores per position, ``(batch, time, classes)`` or ``(time, batch, classes)``
  (the same judgement for both: every position is a row): KL per position and top-1 agreement per
  position. Agreement counts only the positions where the float or the candidate picks a class
  other than the float model's most frequent one (a CTC blank, padding): on a recogniser most
  positions are blank, and a plan that keeps the blanks and loses every character would otherwise
  agree on 90% of positions.
- ``dense``: maps (segmentation, detection heat maps), rank >= 3: relative squared error, and
  thresholded agreement: the Jaccard index of the masks above 0.5 (probability maps) or, for
  maps with a class axis (softmax over axis 1), per-pixel argmax agreement outside the float
  model's most frequent class.
- ``regression``: anything else float: relative squared error ``||a - b||^2 / ||a||^2``, with
  each feature at its own scale (``feature_relative_error``: the worst over the axes of the mean
  per-slice error), so boxes in pixels do not hide class scores beside them.
- integer or boolean outputs (``mismatch``): the fraction of elements that differ.

The kind is inferred from the shape and from the operator that makes the output (Softmax,
LogSoftmax, Sigmoid, through shape-only operators), or named (``--output-kind name=sequence``).
An output whose agreement has nothing to count (every row in one class, an empty mask) is
``single``: agreement cannot judge it, and the caller judges the error of its input-dependent
part instead (``centered_error``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from dfmpc_onnx.errors import OptionsError

KINDS = ("class", "sequence", "dense", "regression")
THRESHOLD = 0.5  # a probability map's foreground
# Operators that do not change which element is which value: the activation before them counts.
_SHAPE_ONLY = {"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


def parse_output_kinds(specs: Iterable[str]) -> dict[str, str]:
    """``--output-kind NAME=KIND`` (repeatable) as a mapping, KIND one of ``KINDS``."""
    kinds: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = spec.rpartition("=")
        if not sep or not name or kind not in KINDS:
            raise OptionsError(f"--output-kind '{spec}': expected NAME=KIND with KIND one of "
                               f"{', '.join(KINDS)}, e.g. logits=sequence")
        kinds[name] = kind
    return kinds


def activation_hints(model: onnx.ModelProto) -> dict[str, str]:
    """Per graph output, ``softmax`` or ``sigmoid`` where that operator makes it (through
    shape-only operators), with the axis of a Softmax as ``softmax:AXIS`` when not the last."""
    producer = {o: n for n in model.graph.node for o in n.output}
    hints: dict[str, str] = {}
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in _SHAPE_ONLY and node.input:
            node = producer.get(node.input[0])
        if node is None:
            continue
        if node.op_type in ("Softmax", "LogSoftmax"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            hints[out.name] = "softmax" if axis == -1 else f"softmax:{axis}"
        elif node.op_type in ("Sigmoid", "HardSigmoid"):
            hints[out.name] = "sigmoid"
    return hints


def infer_kind(a: np.ndarray, hint: str | None = None) -> str:
    """The kind of an output whose float value (a batch of it) is ``a``; ``mismatch`` for
    integer or boolean outputs. ``hint``: what ``activation_hints`` found for it."""
    if not np.issubdtype(a.dtype, np.floating):
        return "mismatch"
    if a.ndim == 2 and a.shape[1] > 1:
        return "class"
    if a.ndim == 3 and a.shape[2] > 1 and (hint == "softmax" or sums_to_one(a, -1)):
        return "sequence"
    if a.ndim >= 3 and (hint == "sigmoid" or (hint or "").startswith("softmax")
                        or (a.ndim == 4 and sums_to_one(a, 1))):
        return "dense"
    return "regression"


@dataclass(frozen=True)
class Judgement:
    """How far one output moved: see the module docstring."""

    divergence: float
    metric: str  # "kl", "kl-prob", "rel_mse" or "mismatch"
    agreement: float | None = None  # None for regression and mismatch
    agrees: np.ndarray | None = None  # per row (sample, position) that agreement counts
    single: bool = False  # agreement has nothing to count
    centered_error: float | None = None


def judge(kind: str, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Judgement:
    """The judgement of candidate batches ``b`` against float batches ``a`` for ``kind``."""
    if kind == "mismatch":
        diff = sum(int(np.count_nonzero(x != y)) for x, y in zip(a, b, strict=True))
        return Judgement(diff / max(1, sum(x.size for x in a)), "mismatch")
    if kind == "regression":
        return Judgement(feature_relative_error(a, b), "rel_mse")
    a_all, b_all = np.concatenate(a, axis=0), np.concatenate(b, axis=0)
    if kind == "dense":
        return _judge_dense(a, b, a_all, b_all)
    if kind == "sequence":
        classes = a_all.shape[-1]
        a_all, b_all = a_all.reshape(-1, classes), b_all.reshape(-1, classes)
    probs = sums_to_one(a_all, 1) and bool(np.all(a_all >= 0))
    metric = "kl-prob" if probs else "kl"
    div = kl_divergence(a_all, b_all, probabilities=probs)
    arg_a, arg_b = np.argmax(a_all, axis=1), np.argmax(b_all, axis=1)
    if kind == "class":
        same = arg_a == arg_b
        return Judgement(div, metric, float(np.mean(same)), same, len(np.unique(arg_a)) == 1,
                         centered_error(a_all, b_all))
    agreement, counted, single = _agreement_off_mode(arg_a, arg_b)
    return Judgement(div, metric, agreement, counted, single, centered_error(a_all, b_all))


def _judge_dense(a, b, a_all: np.ndarray, b_all: np.ndarray) -> Judgement:
    err = relative_error(a, b)
    n = len(a_all)
    if a_all.ndim == 4 and a_all.shape[1] > 1 and sums_to_one(a_all, 1):  # a class axis
        arg_a = np.moveaxis(np.argmax(a_all, axis=1), 0, -1).reshape(-1)
        arg_b = np.moveaxis(np.argmax(b_all, axis=1), 0, -1).reshape(-1)
        agreement, _, single = _agreement_off_mode(arg_a, arg_b)
    else:
        mask_a, mask_b = a_all > THRESHOLD, b_all > THRESHOLD
        union = int(np.count_nonzero(mask_a | mask_b))
        single = not mask_a.any()
        agreement = 1.0 if union == 0 else int(np.count_nonzero(mask_a & mask_b)) / union
    return Judgement(err, "rel_mse", float(agreement), None, single,
                     centered_error(a_all.reshape(n, -1), b_all.reshape(n, -1)))


def _agreement_off_mode(arg_a: np.ndarray, arg_b: np.ndarray) -> tuple[float, np.ndarray, bool]:
    """Argmax agreement over the rows where either side picks something other than the float
    model's most frequent class; per row where the float does (the same rows for every
    candidate, so that the plans' ``agrees`` can be compared), whether the candidate agrees;
    whether the float has no such row."""
    values, counts = np.unique(arg_a, return_counts=True)
    mode = values[np.argmax(counts)]
    counted = (arg_a != mode) | (arg_b != mode)
    same = (arg_a == arg_b)[counted]
    single = not bool(np.any(arg_a != mode))
    return (float(np.mean(same)) if same.size else 1.0), (arg_a == arg_b)[arg_a != mode], single


def relative_error(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """``||a - b||^2 / ||a||^2`` over every batch (infinite when ``b`` overflows)."""
    err = sum(_sumsq(x.astype(np.float64) - y.astype(np.float64)) for x, y in zip(a, b, strict=True))
    norm = sum(_sumsq(x.astype(np.float64)) for x in a)
    if not np.isfinite(err):
        return float("inf")
    return float(err / norm) if norm > 0 else float(err)


def feature_relative_error(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """The relative squared error with every feature judged at its own scale: for each non-batch
    axis taken as the feature axis, the mean over its slices c of ``||a_c - b_c||^2 / ||a_c||^2``;
    the largest of those and of the plain ``relative_error``.

    Why: a head that concatenates quantities of different scales (a detector's box coordinates in
    pixels beside class scores in 0..1, (batch, 4 + classes, anchors)) is judged by the plain error
    on the large ones alone: a plan that wrecks every score moves it by 0.2% (issue 19, a YOLOv8
    detector). Per feature, each quantity counts as much as any other."""
    worst = relative_error(a, b)
    if not np.isfinite(worst):
        return worst
    a_all = np.concatenate([np.asarray(x, dtype=np.float64) for x in a], axis=0)
    b_all = np.concatenate([np.asarray(y, dtype=np.float64) for y in b], axis=0)
    for axis in range(1, a_all.ndim):
        if a_all.shape[axis] < 2:
            continue
        fa = np.moveaxis(a_all, axis, 0).reshape(a_all.shape[axis], -1)
        fb = np.moveaxis(b_all, axis, 0).reshape(a_all.shape[axis], -1)
        norm = np.einsum("ij,ij->i", fa, fa)
        err = np.einsum("ij,ij->i", fa - fb, fa - fb)
        live = norm > 0
        if np.any(live):
            worst = max(worst, float(np.mean(err[live] / norm[live])))
    return worst


def centered_error(a: np.ndarray, b: np.ndarray) -> float:
    """Relative squared error of the input-dependent part of ``b`` (rows: samples): each column's
    mean over the samples removed from both. Infinite when ``b`` is not finite, and when ``a``
    does not vary at all (a saturated softmax): nothing can then be judged."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):  # outputs of inf (a weight of inf): the error is inf
        a_c, b_c = a64 - a64.mean(axis=0), b64 - b64.mean(axis=0)
        err, norm = _sumsq(b_c - a_c), _sumsq(a_c)
    if not (np.isfinite(err) and np.isfinite(norm)):
        return float("inf")
    return float(err / norm) if norm > 0 else float("inf")


def kl_divergence(a: np.ndarray, b: np.ndarray, probabilities: bool = False) -> float:
    """Mean over rows of KL(P || Q): P, Q the softmax of the rows of ``a``, ``b`` (or the rows
    themselves when ``probabilities``). Infinite when ``b`` is not finite."""
    b64 = b.astype(np.float64)
    if not np.all(np.isfinite(b64)):
        return float("inf")
    if probabilities:
        p = a.astype(np.float64)
        p = p / p.sum(axis=1, keepdims=True)
        q = np.clip(b64, 1e-12, None)
        log_q = np.log(q / q.sum(axis=1, keepdims=True))
        log_p = np.log(np.where(p > 0, p, 1.0))
    else:
        log_p = _log_softmax(a.astype(np.float64))
        log_q = _log_softmax(b64)
        p = np.exp(log_p)
    kl = np.sum(p * (log_p - log_q), axis=1)
    return float(max(0.0, np.mean(kl)))


def kinds_of(outputs: Iterable[str], first: Mapping[str, np.ndarray], hints: Mapping[str, str],
             named: Mapping[str, str]) -> dict[str, str]:
    """Each output's kind: named, else inferred from its first batch ``first[name]``."""
    out = {}
    for name in outputs:
        a = np.asarray(first[name])
        kind = named.get(name) or infer_kind(a, hints.get(name))
        if kind != "mismatch" and not np.issubdtype(a.dtype, np.floating):
            kind = "mismatch"  # a named kind cannot make integers comparable by KL
        if kind == "class" and a.ndim != 2:
            kind = "sequence" if a.ndim >= 3 else "regression"
        if kind == "sequence" and a.ndim < 2:
            kind = "regression"
        out[name] = kind
    return out


def sums_to_one(a: np.ndarray, axis: int) -> bool:
    if a.size == 0 or a.shape[axis] < 2:
        return False
    a64 = a.astype(np.float64)
    return bool(np.all(a64 >= 0) and np.allclose(a64.sum(axis=axis), 1.0, atol=1e-3))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _sumsq(x: np.ndarray) -> float:
    x = x.ravel()
    return float(np.dot(x, x))
