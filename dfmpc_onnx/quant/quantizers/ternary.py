"""Ternary grids {-alpha, 0, +alpha} per output channel, chosen better than max-abs rounding.

max-abs rounding at 2 bits puts the threshold at max|w| / 2, so most weights become 0. Ternary
Weight Networks (Li et al. 2016) put it at 0.7 mean|w| and set alpha to the mean magnitude of the
weights above it; the MSE-optimal threshold is found exactly: for the k largest magnitudes kept,
the error is ``sum w^2 - S_k^2 / k`` (S_k their sum), so the best k maximises ``S_k^2 / k``.
At more than 2 bits these grids are not defined; the layer uses max-abs rounding instead (the
report names the quantizer each layer got).
"""

from __future__ import annotations

import numpy as np

from .base import WEIGHT_BITS, QuantizedTensor, WeightLayout, channel_shape, per_channel_view
from .maxabs import MaxAbs


def ternary(w: np.ndarray, axis: int | None, delta: np.ndarray, name: str,
            alpha: np.ndarray | None = None) -> QuantizedTensor:
    """sign(w) where |w| > delta (per slice along ``axis``), scale alpha (default: the mean |w|
    above delta; 1 for a slice with nothing above it)."""
    a = np.abs(w)
    d = delta if axis is None else np.asarray(delta).reshape(channel_shape(w.ndim, axis))
    keep = a > d
    if alpha is None:
        if axis is None:
            n = keep.sum()
            alpha = np.asarray(a[keep].sum() / n if n else 1.0)
        else:
            n = per_channel_view(keep, axis).sum(axis=1)
            total = per_channel_view(np.where(keep, a, 0.0), axis).sum(axis=1)
            alpha = np.where(n > 0, total / np.maximum(n, 1), 1.0)
    q = (np.sign(w) * keep).astype(np.int8)
    return QuantizedTensor(q, np.asarray(alpha, dtype=np.float64), None, axis, None, (-1, 1), 2,
                           name)


def twn_threshold(a: np.ndarray) -> np.ndarray:
    """0.7 mean|w| per row of a (C, n) magnitude matrix (Eq. 3 of the DF-MPC paper, from TWN)."""
    return 0.7 * a.mean(axis=1)


def mse_threshold(a: np.ndarray) -> np.ndarray:
    """Per row of a (C, n) magnitude matrix, the threshold that keeps the k largest magnitudes with
    k maximising S_k^2 / k: exactly the ternary grid of least squared error."""
    s = -np.sort(-a, axis=1)
    csum = np.cumsum(s, axis=1)
    k = np.arange(1, a.shape[1] + 1)
    best = np.argmax(csum * csum / k, axis=1)
    rows = np.arange(len(a))
    # Threshold between the last kept and the first dropped magnitude (ties all kept).
    nxt = np.where(best + 1 < a.shape[1], s[rows, np.minimum(best + 1, a.shape[1] - 1)], 0.0)
    kept = s[rows, best]
    thr = 0.5 * (kept + nxt)
    thr = np.where(thr < kept, thr, np.nextafter(kept, 0.0))  # a tie at the edge stays kept
    return np.where(kept > 0, thr, 0.0)


class _Ternary:
    name = ""
    per_layer = False
    help = ""
    threshold = staticmethod(twn_threshold)

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        if bits != 2:
            return MaxAbs().quantize(w, bits, layout, per_channel)
        if not per_channel:
            return ternary(w, None, self.threshold(np.abs(w).reshape(1, -1))[0], self.name)
        a = np.abs(per_channel_view(w, layout.out_axis))
        return ternary(w, layout.out_axis, self.threshold(a), self.name)


class TWN(_Ternary):
    name = "twn"
    help = "ternary at 2 bits, threshold 0.7 mean|w| and alpha per channel (TWN); max-abs above"
    threshold = staticmethod(twn_threshold)


class MSETernary(_Ternary):
    name = "mse-ternary"
    help = "ternary at 2 bits with the exactly MSE-optimal threshold per channel; max-abs above"
    threshold = staticmethod(mse_threshold)
