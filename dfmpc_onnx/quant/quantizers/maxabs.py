"""Symmetric max-abs rounding: ``q in [-m, m]``, ``m = 2^(bits-1) - 1``, scale ``max|w| / m``.

At 2 bits this is the ternary grid {-1, 0, 1} with threshold max|w| / 2, which zeroes most weights
of a channel (METHOD.md, section 2); it is the safe default because it never clips a weight.
"""

from __future__ import annotations

import numpy as np

from .base import (
    WEIGHT_BITS,
    QuantizedTensor,
    WeightLayout,
    channel_shape,
    per_channel_view,
    round_to_grid,
    slices_of,
)


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def symmetric(w: np.ndarray, bits: int, axis: int | None, amax: np.ndarray | float,
              name: str) -> QuantizedTensor:
    """Round ``w`` on the symmetric grid with clipping level ``amax`` (per slice along ``axis``)."""
    m = qmax(bits)
    amax = np.asarray(amax, dtype=np.float64)
    scale = np.where(amax > 0, amax / m, 1.0)
    div = scale if axis is None else scale.reshape(channel_shape(w.ndim, axis))
    q = np.empty(w.shape, np.int8 if m <= 127 else np.int16)
    for part in slices_of(w.shape, 0 if axis is None else axis):
        # float64 a block at a time: the same values, without a weight-sized float64 copy
        d = div if axis is None else div[part]
        q[part] = round_to_grid(np.asarray(w[part], dtype=np.float64) / d, -m, m)
    return QuantizedTensor(q, scale, None, axis, None, (-m, m), bits, name)


class MaxAbs:
    name = "maxabs"
    per_layer = False
    rounds_to_nearest = True
    help = "symmetric, scale max|w| per output channel (or per tensor with --granularity tensor)"

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        # block by block: np.abs of a 100 M-weight layer would be a weight-sized temporary
        parts = slices_of(w.shape, layout.out_axis)
        if not per_channel:
            amax = max((np.abs(w[p]).max(initial=0.0) for p in parts), default=0.0)
            return symmetric(w, bits, None, amax, self.name)
        amax = np.concatenate([np.abs(per_channel_view(w[p], layout.out_axis)).max(axis=1, initial=0.0)
                               for p in parts] or [np.zeros(0)])  # no output channel: no scale
        return symmetric(w, bits, layout.out_axis, amax, self.name)
