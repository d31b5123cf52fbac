"""Symmetric max-abs grid with one scale per block of consecutive input weights.

DequantizeLinear's ``block_size`` (opset 21): the scale has the weight's shape except along the
block axis, where it has ceil(n / block) entries. Blocks follow the layer's reduction axis (input
channels of a Conv at each output channel and tap; input features of a Gemm/MatMul), so each scale
serves weights that are added together. METHOD.md, section 2: on a third-party recogniser 4-bit
with blocks of 32 reached float accuracy where per-channel 4-bit lost most of it; the scales cost
16/block extra bits per weight (float16 scales: 8/block), counted in every size figure.
"""

from __future__ import annotations

import numpy as np

from .base import WEIGHT_BITS, QuantizedTensor, WeightLayout, expand_blocks, round_to_grid
from .maxabs import MaxAbs, qmax


def block_absmax(w: np.ndarray, axis: int, block: int) -> np.ndarray:
    """max|w| over each block of ``block`` consecutive entries along ``axis`` (last block short)."""
    a = np.abs(np.moveaxis(w, axis, -1))
    n = a.shape[-1]
    pad = (-n) % block
    if pad:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (pad,), a.dtype)], axis=-1)
    out = a.reshape(a.shape[:-1] + (-1, block)).max(axis=-1)
    return np.moveaxis(out, -1, axis)


class Block:
    """One registry entry per block size: block32, block64, block128."""
    per_layer = False
    rounds_to_nearest = True

    def __init__(self, block: int) -> None:
        self.block = block
        self.name = f"block{block}"
        self.help = f"symmetric, one max-abs scale per {block} consecutive input weights (opset 21)"

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        axis = layout.in_axis
        if axis is None or w.shape[axis] <= 1:  # nothing to cut into blocks
            return MaxAbs().quantize(w, bits, layout, per_channel)
        m = qmax(bits)
        amax = block_absmax(np.asarray(w, dtype=np.float64), axis, self.block)
        scale = np.where(amax > 0, amax / m, 1.0)
        expanded = expand_blocks(scale, axis, self.block, w.shape[axis])
        q = round_to_grid(np.asarray(w, dtype=np.float64) / expanded, -m, m)
        return QuantizedTensor(q, scale, None, axis, self.block, (-m, m), bits, self.name)
