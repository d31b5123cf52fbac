"""Symmetric grid with an MSE-optimal clipping level per output channel.

max-abs never clips, so one large weight stretches the grid for all the others; a lower clipping
level trades a few clipped weights for finer steps. The level is searched per channel over a fixed
set of fractions of max|w| (coarse, then refined around the best), minimising the squared error of
the channel's weights. METHOD.md warns that weight error alone does not predict network accuracy:
this grid is one candidate for the fidelity-driven choice, not a default.
"""

from __future__ import annotations

import numpy as np

from .base import BLOCK_ELEMENTS, WEIGHT_BITS, QuantizedTensor, WeightLayout, per_channel_view, slices_of
from .maxabs import qmax, symmetric

_COARSE = np.linspace(0.2, 1.0, 17)


def _errors(rows: np.ndarray, levels: np.ndarray, m: int) -> np.ndarray:
    """Squared rounding error per row for each candidate clipping level (levels: (C, K)), a block
    of rows at a time (rows are independent; a 100 M-weight layer at once made several float64
    temporaries of its size per level)."""
    out = np.empty(levels.shape)
    for (part,) in slices_of(rows.shape[:1], 0, max(1, BLOCK_ELEMENTS // max(rows.shape[1], 1))):
        block = rows[part]
        for k in range(levels.shape[1]):
            s = np.where(levels[part, k] > 0, levels[part, k] / m, 1.0)[:, None]
            err = np.clip(np.rint(block / s), -m, m) * s - block
            out[part, k] = np.einsum("cn,cn->c", err, err)
    return out


def mse_levels(rows: np.ndarray, bits: int) -> np.ndarray:
    """Per row of (C, n), the clipping level with least squared error (coarse grid, then refined)."""
    m = qmax(bits)
    amax = np.abs(rows).max(axis=1, initial=0.0)
    coarse = amax[:, None] * _COARSE[None, :]
    best = coarse[np.arange(len(rows)), np.argmin(_errors(rows, coarse, m), axis=1)]
    step = amax * (_COARSE[1] - _COARSE[0])
    fine = np.clip(best[:, None] + step[:, None] * np.linspace(-1, 1, 9)[None, :], 0, amax[:, None])
    return fine[np.arange(len(rows)), np.argmin(_errors(rows, fine, m), axis=1)]


class MSEClip:
    name = "mse"
    per_layer = False
    rounds_to_nearest = True
    help = "symmetric, clipping level per output channel chosen for least squared weight error"

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        if not per_channel:
            level = mse_levels(np.asarray(w, dtype=np.float64).reshape(1, -1), bits)[0]
            return symmetric(w, bits, None, level, self.name)
        rows = per_channel_view(np.asarray(w, dtype=np.float64), layout.out_axis)
        return symmetric(w, bits, layout.out_axis, mse_levels(rows, bits), self.name)
