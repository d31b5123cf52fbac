"""How far to widen synthetic activation ranges, measured per model (issue 23).

Real inputs drive some models' activations past what noise does and others' not at all: one
factor for every model either saturates the first kind or wastes two bits of every grid on the
second (ddddocr's recogniser: grids 4.3x the real span at the median tensor with the fixed factor
3, against 1.4x for ONNX Runtime's calibration on noise; ``out/diag`` in ``benchmarks``' report).
With no data, the shift a range must survive is estimated by the shift between kinds of noise:

- the model is calibrated on each kind of ``KINDS`` (``ActivationSamples`` per kind);
- for each candidate factor, leave one kind out: ranges from the union of the other kinds,
  widened by the factor, judged by how far the whole model's outputs move (output-aware
  divergence against the weight-only model) on held-out inputs of the kind left out;
- ``choose_headroom`` keeps the factor with the least mean divergence over the folds (each fold
  scaled by its best factor, so no fold outweighs the others); ties go to the smaller factor,
  the finer grid.

The final ranges are the union over every kind, widened by the chosen factor: a tensor whose
range depends on what comes in gets the widest range any kind gave it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .calibrate import ActivationSamples, TensorSamples

KINDS = ("smooth", "gaussian", "uniform")


def merge_samples(parts: Sequence[ActivationSamples]) -> dict[str, TensorSamples]:
    """Per tensor, the union of several calibrations: extremes of all, values of all."""
    out: dict[str, TensorSamples] = {}
    for name in parts[0].tensors:
        got = [p.samples[name] for p in parts]
        out[name] = TensorSamples(min(s.lo for s in got), max(s.hi for s in got),
                                  np.concatenate([s.values for s in got]))
    return out


def choose_headroom(scores: Mapping[float, Sequence[float]]) -> float:
    """The factor whose held-out divergences (one per fold, same fold order for every factor)
    are least on average, each fold divided by its smallest divergence over the factors (a fold
    where every factor does well would otherwise count for nothing); ties: the smaller factor."""
    factors = sorted(scores)
    folds = len(scores[factors[0]])
    best = [min(scores[h][j] for h in factors) for j in range(folds)]

    def mean_ratio(h: float) -> float:
        return float(np.mean([scores[h][j] / best[j] if best[j] > 0 else
                              (1.0 if scores[h][j] == 0 else np.inf) for j in range(folds)]))

    return min(factors, key=lambda h: (mean_ratio(h), h))
