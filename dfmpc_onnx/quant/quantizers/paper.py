"""The DF-MPC paper's grids (Chen et al. 2023), one scale per layer, exactly as published.

2 bits: ternary by Eq. 3-4 (Ternary Weight Networks): threshold ``delta = 0.7 mean|W|`` over the
whole layer, ``W^ = sign(W)`` above it, and one ``alpha`` = mean |W| above the threshold.
Other bits: DoReFa's uniform quantizer (Eq. 6) with ``M = max|W|``:
``Q_k(W) = M (2 / (2^k - 1) round((2^k - 1)(W / 2M + 1/2)) - 1)``: 2^k symmetric levels without
zero. They are stored exactly as the odd integers ``q = 2i - (2^k - 1)`` in [-(2^k-1), 2^k-1] with
scale ``M / (2^k - 1)``, which needs k+1 signed bits: a 3-bit layer takes an INT4 container, 6 bits
INT8, 8 bits INT16 (the report states this storage cost).
"""

from __future__ import annotations

import numpy as np

from .base import WEIGHT_BITS, QuantizedTensor, WeightLayout
from .ternary import ternary


def dorefa(w: np.ndarray, bits: int, name: str = "paper") -> QuantizedTensor:
    """Eq. 6 with one scale per tensor; q holds the odd level indices 2i - n, n = 2^k - 1."""
    n = 2 ** bits - 1
    m = float(np.abs(w).max(initial=0.0)) or 1.0
    i = np.rint(n * (np.asarray(w, dtype=np.float64) / (2 * m) + 0.5))
    q = (2 * np.clip(i, 0, n) - n).astype(np.int8 if n <= 127 else np.int16)
    return QuantizedTensor(q, np.asarray(m / n), None, None, None, (-n, n), bits, name)


def twn_per_layer(w: np.ndarray, name: str = "paper") -> QuantizedTensor:
    """Eq. 3-4: one threshold 0.7 mean|W| and one alpha for the whole layer."""
    return ternary(w, None, np.asarray(0.7 * np.abs(w).mean()), name)


class Paper:
    name = "paper"
    per_layer = True
    help = "the paper's grids, one scale per layer: ternary (TWN) at 2 bits, DoReFa otherwise"

    def supports(self, bits: int) -> bool:
        return bits in WEIGHT_BITS

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor:
        return twn_per_layer(w, self.name) if bits == 2 else dorefa(w, bits, self.name)
