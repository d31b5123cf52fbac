"""Balanced rounding: low-bit integers whose rounding errors cancel over what a layer adds up.

A layer's output error from its weight error ``d`` is ``sum_i d_i x_i`` over the inputs a channel
adds up. Rounding each weight to its nearest grid point makes each ``|d_i|`` as small as it can be,
but not that sum: the inputs a kernel (the taps of one input channel) and an output channel read
are strongly correlated in a trained network (neighbouring pixels, a shared mean), so the part of
the error that survives is mostly ``(sum_i d_i) * mean(x)``. SQuant (Guo et al., ICLR 2022,
data-free) makes the same argument from a diagonal-plus-constant Hessian and asks the rounding
errors to sum to within half a step over each kernel and then each output channel, flipping the
roundings that cost least (the weights nearest the middle between two grid points) up or down.
Each weight still moves by less than one step; the squared error grows a little, the error of
the sums falls to under half a step.

Applied to the nearest-rounding symmetric grids (max-abs, block, MSE-clipped) of 4 bits or
fewer; at 8 bits the steps are 16 times finer and the sums' error is already small. Ternary
thresholds, the paper's grids (``--method paper`` runs as published) and zero-point grids keep
their own rounding rules. ``--rounding nearest`` keeps plain rounding. Measured against it:
``python -m benchmarks.rounding_check`` (the examples) and the pretrained suite (BENCHMARKS.md,
"Balanced rounding").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dfmpc_onnx.quant.quantizers import QUANTIZERS
from dfmpc_onnx.quant.quantizers.base import QuantizedTensor, WeightLayout, slices_of

MAX_BITS = 4  # balanced at these bits and fewer; plain rounding above
ROUNDINGS = ("balanced", "nearest")


def applies(qt: QuantizedTensor) -> bool:
    """Whether balanced rounding changes this tensor: symmetric grids of at most ``MAX_BITS``
    bits made by nearest rounding (max-abs, block, MSE-clipped); not ternary thresholds, the
    paper's grids or zero points, which have rounding rules of their own."""
    grid = QUANTIZERS.get(qt.quantizer)
    return (qt.zero_point is None and qt.bits <= MAX_BITS and qt.q.size > 0
            and bool(getattr(grid, "rounds_to_nearest", False)))


def balanced(w: np.ndarray, qt: QuantizedTensor, layout: WeightLayout) -> QuantizedTensor:
    """``qt`` (nearest rounding of ``w``) with roundings flipped so that, in weight units, the
    errors of each kernel (the trailing spatial taps of one input channel at one output channel,
    weights of rank 3 or more) and then of each output channel sum to within half a step
    (module docstring). Scales, grid and bits unchanged; every integer stays on the grid and
    within one step of ``w / scale``. A block of output channels at a time: no weight-sized
    float64 temporaries on a large layer."""
    q = qt.q.copy()
    lo, hi = qt.grid
    axis = layout.out_axis
    for part in slices_of(q.shape, axis):
        scale = np.broadcast_to(qt._part_of(qt.scale, part), q[part].shape).astype(np.float64)
        t = np.asarray(w[part], dtype=np.float64) / scale
        r = q[part].astype(np.float64)
        if r.ndim >= 3 and int(np.prod(r.shape[2:])) > 1:
            # kernels: (output, input) pairs over the taps, in the stored layout's order
            front = r.shape[:2]
            r = _balance_rows(t.reshape(-1, int(np.prod(r.shape[2:]))),
                              r.reshape(-1, int(np.prod(r.shape[2:]))),
                              scale.reshape(-1, int(np.prod(r.shape[2:]))), lo, hi).reshape(
                                  front + r.shape[2:])
        rows = [np.moveaxis(a, axis, 0) for a in (t, r, scale)]
        n = rows[1].shape[0]
        shape = rows[1].shape
        out = _balance_rows(rows[0].reshape(n, -1), rows[1].reshape(n, -1),
                            rows[2].reshape(n, -1), lo, hi).reshape(shape)
        q[part] = np.moveaxis(out, 0, axis).astype(q.dtype)
    return replace(qt, q=q)


def _balance_rows(t: np.ndarray, r: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Each row of ``r`` (integers, nearest rounding of ``t``, steps ``scale``) with its error sum
    ``sum((r - t) * scale)`` brought within half a step: the fewest flips, each of the element
    whose flip costs least in squared error (residual nearest to half a step), toward ``t``'s
    other neighbouring grid point, never off the grid.

    Only the rows that need it are touched, in the one direction their sum asks for, and only the
    few elements a row can need are ordered (a partial sort: at most the excess over the row's
    smallest step, plus one), not the whole row."""
    e = r - t
    total = (e * scale).sum(axis=1)
    smallest = np.where(scale > 0, scale, np.inf).min(axis=1)
    rows = np.nonzero(np.abs(total) > 0.5 * smallest)[0]
    if rows.size == 0:
        return r
    sign = np.sign(total[rows])[:, None]  # +1: the sum is too high, round some weights down
    excess = np.abs(total[rows])
    if rows.size < r.shape[0]:
        e, rr, sc = e[rows], r[rows], scale[rows]
    else:
        rr, sc = r, scale
    key = sign * e
    # a flip moves r by -sign: only where that is toward t and stays on the grid
    np.putmask(key, (key <= 0) | (rr - sign < lo) | (rr - sign > hi), -np.inf)
    n = r.shape[1]
    k = int(min(n, np.max(np.ceil(excess / smallest[rows] + 1.0))))
    if k < n:
        top = np.argpartition(-key, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(key, top, axis=1), axis=1, kind="stable"), axis=1)
    else:
        order = np.argsort(-key, axis=1, kind="stable")
    finite = np.isfinite(np.take_along_axis(key, order, axis=1))
    s_sorted = np.take_along_axis(sc, order, axis=1)
    reach = np.cumsum(np.where(finite, s_sorted, 0.0), axis=1)
    flip_sorted = finite & (reach - 0.5 * s_sorted < excess[:, None])
    step = np.zeros(order.shape)
    step[flip_sorted] = 1.0
    out = r.copy()
    delta = np.zeros(rr.shape)
    np.put_along_axis(delta, order, step, axis=1)
    out[rows] = rr - sign * delta
    return out
