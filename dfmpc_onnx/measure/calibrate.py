"""Activation ranges with no data: what the network computes on synthetic inputs, and the clip
rules that turn those samples into QuantizeLinear scales and zero points (issue 11).

``ActivationSamples`` runs a model in ONNX Runtime one small batch at a time on synthetic inputs
and keeps, per tensor, its exact minimum and maximum and a seeded random subsample of its values
(memory stays bounded by ``keep`` values a tensor, whatever the model's size). A clip rule maps
those to a range:

- ``minmax``: the extremes seen. Nothing saturates on inputs like these, but one outlier widens
  every step.
- ``percentile``: the 0.01 and 99.99 percentiles (one end pinned at 0 when nothing is below it,
  as after ReLU), trading rare saturation for finer steps.
- ``mse``: the range that minimises the mean squared quantization error of the samples, found by
  shrinking the min-max range over a fixed ladder of factors.

Which rule serves a model best is not decided here: the converter tries each on the whole network
and measures (passes/quantize_activations.py). ``quant_params`` turns a range into the scale and
zero point of an 8-bit type, always representing 0 exactly (padding and ReLU depend on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from dfmpc_onnx.measure.fidelity import split_batches
from dfmpc_onnx.model.weightstore import WeightStore, session_reading

CLIP_RULES = ("minmax", "percentile", "mse")
ACTIVATION_TYPES = ("uint8", "int8")
PERCENTILE = 99.99
_SHRINK = np.concatenate([np.linspace(0.3, 0.9, 13), np.linspace(0.91, 1.0, 10)])


@dataclass(frozen=True)
class QuantParams:
    """scale and zero point of one activation tensor (``dtype``: uint8 or int8)."""

    scale: float
    zero_point: int
    dtype: str

    def quantize_dequantize(self, x: np.ndarray) -> np.ndarray:
        """What QuantizeLinear then DequantizeLinear compute (round half to even, saturate)."""
        lo, hi = (0, 255) if self.dtype == "uint8" else (-128, 127)
        q = np.clip(np.rint(x / np.float32(self.scale)) + self.zero_point, lo, hi)
        return ((q - self.zero_point) * np.float32(self.scale)).astype(np.float32)


def quant_params(lo: float, hi: float, dtype: str = "uint8") -> QuantParams:
    """The 8-bit grid covering [lo, hi] (widened to include 0). uint8: asymmetric, zero point in
    0..255; int8: symmetric (zero point 0), which TensorRT wants."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "int8":
        amax = max(-lo, hi)
        scale = amax / 127.0 if amax > 0 else 1.0
        return QuantParams(float(np.float32(scale)), 0, dtype)
    if dtype != "uint8":
        raise ValueError(f"activation type must be uint8 or int8, got {dtype!r}")
    span = hi - lo
    scale = float(np.float32(span / 255.0)) if span > 0 else 1.0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return QuantParams(scale, zp, dtype)


@dataclass
class TensorSamples:
    """Extremes and a value subsample of one tensor over every calibration input."""

    lo: float
    hi: float
    values: np.ndarray  # float32, at most ``keep`` entries


def clip_range(s: TensorSamples, rule: str, dtype: str = "uint8") -> tuple[float, float]:
    """[lo, hi] for ``rule`` (see the module docstring)."""
    if rule == "minmax" or s.values.size == 0:
        return s.lo, s.hi
    if rule == "percentile":
        lo = 0.0 if s.lo >= 0 else float(np.percentile(s.values, 100 - PERCENTILE))
        hi = 0.0 if s.hi <= 0 else float(np.percentile(s.values, PERCENTILE))
        return lo, hi
    if rule == "mse":
        best, best_err = (s.lo, s.hi), np.inf
        for f in _SHRINK:
            cand = (s.lo * f, s.hi * f)
            diff = quant_params(*cand, dtype).quantize_dequantize(s.values) - s.values
            err = float(np.mean(diff.astype(np.float64) ** 2))
            if err < best_err:
                best, best_err = cand, err
        return best
    raise ValueError(f"unknown clip rule {rule!r} (choose from {', '.join(CLIP_RULES)})")


class ActivationSamples:
    """Runs ``model`` on ``inputs`` (arrays with the batch first) ``batch`` samples at a time (or
    in runs of the model's fixed batch) and
    keeps, for each tensor of ``tensors``, a :class:`TensorSamples`."""

    def __init__(self, model: onnx.ModelProto, tensors: Sequence[str],
                 inputs: Mapping[str, np.ndarray], *, keep: int = 1 << 16, batch: int = 1,
                 seed: int = 0, threads: int = 2, store: WeightStore | None = None) -> None:
        self.tensors = list(dict.fromkeys(tensors))
        session = session_reading(model, self.tensors, store, threads)
        rng = np.random.default_rng(seed)
        chunks = split_batches(model, inputs)  # runs of a fixed batch, or one run to slice
        if len(chunks) == 1:
            feeds = chunks[0]
            n = min(len(v) for v in feeds.values()) if feeds else 0
            chunks = [{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]
        lo = dict.fromkeys(self.tensors, np.inf)
        hi = dict.fromkeys(self.tensors, -np.inf)
        kept: dict[str, list[np.ndarray]] = {t: [] for t in self.tensors}
        self.dtypes: dict[str, np.dtype] = {}
        per_batch = max(1, keep // max(1, len(chunks)))
        feeds_names = [i.name for i in session.get_inputs()]
        for chunk in chunks:
            feeds = {k: chunk[k] for k in feeds_names}
            for name, value in zip(self.tensors, session.run(self.tensors, feeds), strict=True):
                self.dtypes[name] = np.asarray(value).dtype
                flat = np.asarray(value, dtype=np.float32).reshape(-1)
                if flat.size == 0:
                    continue
                lo[name] = min(lo[name], float(flat.min()))
                hi[name] = max(hi[name], float(flat.max()))
                take = flat if flat.size <= per_batch else flat[rng.integers(0, flat.size, per_batch)]
                kept[name].append(take.copy())
        self.samples: dict[str, TensorSamples] = {}
        for name in self.tensors:
            values = np.concatenate(kept[name]) if kept[name] else np.zeros(0, np.float32)
            finite = np.isfinite(lo[name]) and np.isfinite(hi[name])
            self.samples[name] = TensorSamples(lo[name] if finite else 0.0,
                                               hi[name] if finite else 0.0, values)

    def ranges(self, rule: str, dtype: str = "uint8",
               names: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
        return {n: clip_range(self.samples[n], rule, dtype) for n in (names or self.tensors)}
