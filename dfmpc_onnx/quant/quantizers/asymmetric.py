"""Asymmetric grid: unsigned integers with a zero point, ``w ~ (q - z) * s``, per output channel.

All 2^bits levels are used between the channel's min and max (the range is widened to include 0 so
that z is an integer on the grid and exact zeros stay exact). Worth it where a channel's weights
are far from symmetric; costs one zero point per channel.
"""

from __future__ import annotations

import numpy as np

from .base import WEIGHT_BITS, QuantizedTensor, WeightLayout, channel_shape, per_channel_view, round_to_grid


class Asymmetric:
    name = "asym"
    per_layer = False
    help = "unsigned grid with a zero point per output channel (or per tensor), min..max range"

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        w = np.asarray(w, dtype=np.float64)
        top = 2 ** bits - 1
        axis = layout.out_axis if per_channel else None
        rows = per_channel_view(w, axis) if per_channel else w.reshape(1, -1)
        lo, hi = rows.min(axis=1, initial=0.0), rows.max(axis=1, initial=0.0)  # 0 always inside
        if not per_channel:
            lo, hi = lo[0], hi[0]
        scale = np.where(hi > lo, (hi - lo) / top, 1.0)
        zp = np.clip(np.rint(-lo / scale), 0, top)
        shape = channel_shape(w.ndim, axis) if axis is not None else [1] * w.ndim
        q = round_to_grid(w / scale.reshape(shape) + zp.reshape(shape), 0, top)
        return QuantizedTensor(q.astype(np.int16), np.asarray(scale), np.asarray(zp).astype(np.int16),
                               axis, None, (0, top), bits, self.name)
