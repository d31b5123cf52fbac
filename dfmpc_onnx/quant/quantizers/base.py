"""What every weight quantizer produces: integers on a grid, the scales (and zero points) that map
them back, and everything DequantizeLinear needs to read them.

The quantized tensor, not the options, answers "which container, which opset, how many bytes":
emit-qdq writes what it says, the opset upgrade asks it for the opset, and the report and the bit
allocator count its bytes. A new grid is one module beside this one (see ``__init__``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import ml_dtypes
import numpy as np

# The weight bits every quantizer supports: 2 (ternary) to 8.
WEIGHT_BITS = range(2, 9)


@dataclass(frozen=True)
class WeightLayout:
    """Where a stored weight keeps its output channels and its input features.

    ``out_axis``: one scale per slice along it for per-channel grids (0 for Conv and Gemm transB=1,
    1 for MatMul and Gemm transB=0, 1 for ConvTranspose). ``in_axis``: the axis block-wise grids cut
    into blocks (the reduction axis of the layer), or None where no such axis exists.
    """

    out_axis: int
    in_axis: int | None


# Signed and unsigned integer ranges of the containers ONNX's DequantizeLinear reads.
_SIGNED = {2: (-2, 1), 4: (-8, 7), 8: (-128, 127), 16: (-32768, 32767)}
_UNSIGNED = {2: (0, 3), 4: (0, 15), 8: (0, 255), 16: (0, 65535)}
_DTYPES = {(2, True): ml_dtypes.int2, (4, True): ml_dtypes.int4, (8, True): np.int8,
           (16, True): np.int16, (2, False): ml_dtypes.uint2, (4, False): ml_dtypes.uint4,
           (8, False): np.uint8, (16, False): np.uint16}


@dataclass(frozen=True)
class QuantizedTensor:
    """A weight as DequantizeLinear will read it: ``w ~ (q - zero_point) * scale``.

    q: integers in the weight's stored layout (int8, or int16 for grids wider than 8 bits).
    scale: () for one scale, (C,) along ``axis`` per channel, or for block-wise grids an array of
        q's rank with ``ceil(n / block_size)`` entries along ``axis``.
    zero_point: None (symmetric) or integers of scale's shape.
    grid: the (lowest, highest) integer the grid uses; the container is the narrowest that holds it.
    bits: the bits the plan asked for (the grid may need a wider container: DoReFa's 2^k levels
        without zero need k+1 bits).
    quantizer: the registry name that made it, for the report.
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None
    block_size: int | None
    grid: tuple[int, int]
    bits: int
    quantizer: str

    @property
    def signed(self) -> bool:
        return self.zero_point is None

    def container_bits(self, fmt: str = "packed") -> int:
        """2, 4, 8 or 16: the narrowest container that holds the grid ("int8" format: at least 8;
        "int4", for a runtime without INT2: at least 4)."""
        table = _SIGNED if self.signed else _UNSIGNED
        lo, hi = self.grid
        least = {"packed": 2, "int4": 4}.get(fmt, 8)
        for bits in (2, 4, 8, 16):
            if table[bits][0] <= lo and hi <= table[bits][1] and bits >= least:
                return bits
        raise ValueError(f"grid {self.grid} does not fit a 16-bit container")

    def container(self, fmt: str = "packed"):
        return _DTYPES[(self.container_bits(fmt), self.signed)]

    def min_opset(self, fmt: str = "packed") -> int:
        """The lowest opset whose DequantizeLinear reads this tensor: INT2/UINT2 need 25; INT4,
        INT16 and block-wise scales 21; per-axis scales 13; one scale 10."""
        bits = self.container_bits(fmt)
        if bits == 2:
            return 25
        if bits in (4, 16) or self.block_size is not None:
            return 21
        return 13 if self.axis is not None else 10

    def ideal_bytes(self, fmt: str = "packed", scale_itemsize: int = 4) -> float:
        """Bytes of the integers at their container width, plus scales and zero points: the size
        every figure (report, allocator budget, benchmarks) counts."""
        bits = self.container_bits(fmt)
        zp = 0 if self.zero_point is None else self.zero_point.size * bits / 8
        return self.q.size * bits / 8 + self.scale.size * scale_itemsize + zp

    def _broadcast(self, values: np.ndarray) -> np.ndarray:
        """scale or zero point shaped to broadcast against q (blocks expanded along ``axis``)."""
        if values.ndim == 0:
            return values
        if self.block_size is None:
            shape = [1] * self.q.ndim
            shape[self.axis] = -1
            return values.reshape(shape)
        return expand_blocks(values, self.axis, self.block_size, self.q.shape[self.axis])

    def dequantize(self) -> np.ndarray:
        """The float64 weight the graph computes with."""
        out = self.q.astype(np.float64)
        if self.zero_point is not None:
            out -= self._broadcast(self.zero_point.astype(np.float64))
        out *= self._broadcast(self.scale)
        return out

    def dequantize_as(self, dtype: np.dtype) -> np.ndarray:
        """``dequantize().astype(dtype)``, a block at a time: no float64 copy of a large weight."""
        out = np.empty(self.q.shape, dtype)
        for part in slices_of(self.q.shape, 0):
            out[part] = self.dequantize_part(part)
        return out

    def squared_error(self, w: np.ndarray) -> float:
        """``sum((dequantize() - w) ** 2)`` in float64, a block at a time."""
        return float(sum(np.sum((self.dequantize_part(p) - np.asarray(w[p], np.float64)) ** 2)
                         for p in slices_of(self.q.shape, 0)))

    def dequantize_part(self, part: tuple[slice, ...]) -> np.ndarray:
        """``dequantize()[part]``, computing only that block (``part`` from ``slices_of``)."""
        out = self.q[part].astype(np.float64)
        if self.zero_point is not None:
            out -= self._part_of(self.zero_point.astype(np.float64), part)
        out *= self._part_of(self.scale, part)
        return out

    def _part_of(self, values: np.ndarray, part: tuple[slice, ...]) -> np.ndarray:
        """``_broadcast(values)[part]`` without expanding block-wise scales over the whole
        weight (a weight-sized float64 array per block otherwise)."""
        if values.ndim == 0 or self.block_size is None:
            return _sliced(self._broadcast(values), part)
        rows = tuple(slice(None) if d == self.axis else p for d, p in enumerate(part))
        full = expand_blocks(values[rows], self.axis, self.block_size, self.q.shape[self.axis])
        return full[tuple(p if d == self.axis else slice(None) for d, p in enumerate(part))]

    def rescaled(self, factor: np.ndarray, out_axis: int) -> QuantizedTensor:
        """The same integers with output channel j's scale multiplied by ``factor[j]``.

        How a per-channel factor lands without leaving the grid: folded BatchNormalization applied
        to a per-layer grid, and the paper's compensation c folded into the low-bit layer. A single
        scale becomes one per channel."""
        factor = np.asarray(factor, dtype=np.float64)
        if self.block_size is not None:
            shape = [1] * self.q.ndim
            shape[out_axis] = -1
            return replace(self, scale=self.scale * factor.reshape(shape))
        if self.axis is None:
            zp = None if self.zero_point is None else np.full(len(factor), self.zero_point)
            return replace(self, scale=self.scale * factor, axis=out_axis, zero_point=zp)
        if self.axis != out_axis:
            raise ValueError("per-channel scales along another axis cannot absorb output factors")
        return replace(self, scale=self.scale * factor)


class Quantizer(Protocol):
    """One grid family. ``quantize`` returns the tensor; ``bits`` it cannot honour it says in
    ``supports`` so the plan can refuse them up front."""

    name: str
    help: str
    # One scale for the whole layer whatever the granularity (the paper's grids): such a grid is
    # not cut a block of rows at a time, and a folded BatchNormalization is unfolded before it.
    per_layer: bool
    # Integers are w / scale rounded to the nearest grid point (max-abs, block, MSE-clipped
    # grids): ``quant/rounding.py`` may rebalance them. A grid with its own rounding rule
    # (ternary thresholds, DoReFa, zero points) leaves this unset.
    rounds_to_nearest: bool = False

    def supports(self, bits: int) -> bool: ...

    def quantize(self, w: np.ndarray, bits: int, layout: WeightLayout,
                 per_channel: bool = True) -> QuantizedTensor: ...


def expand_blocks(values: np.ndarray, axis: int, block: int, n: int) -> np.ndarray:
    """Block-wise scales repeated to the ``n`` entries along ``axis`` they serve."""
    return np.repeat(values, block, axis=axis).take(range(n), axis=axis)


def per_channel_view(w: np.ndarray, axis: int) -> np.ndarray:
    """(C, rest) view of ``w`` with channels first (a copy only when ``axis`` is not 0)."""
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def channel_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def _sliced(b: np.ndarray, part: tuple[slice, ...]) -> np.ndarray:
    """A broadcastable scale or zero point cut like its weight (axes of size 1 stay whole)."""
    if b.ndim == 0:
        return b
    return b[tuple(p if size != 1 else slice(None) for p, size in zip(part, b.shape, strict=True))]


# Elements per block where a weight is processed a block at a time (8 MB of float64: a grid's
# search holds several temporaries of a block at once, and they add to a large layer's peak).
BLOCK_ELEMENTS = 1 << 20


def slices_of(shape: tuple[int, ...], axis: int, elements: int = BLOCK_ELEMENTS
              ) -> list[tuple[slice, ...]]:
    """Index tuples cutting an array of ``shape`` along ``axis`` into blocks of about
    ``elements`` (at least one index along ``axis`` each): a layer of 100 M weights is then
    rounded, dequantized or measured without weight-sized float64 temporaries."""
    if not shape:
        return [()]
    n = shape[axis]
    per = max(1, int(np.prod(shape, dtype=np.int64)) // max(n, 1))
    step = max(1, elements // per)
    out = []
    for lo in range(0, n, step):
        idx = [slice(None)] * len(shape)
        idx[axis] = slice(lo, min(n, lo + step))
        out.append(tuple(idx))
    return out


def quantize_by_rows(quantizer: Quantizer, w: np.ndarray, bits: int, layout: WeightLayout,
                     elements: int | None = None) -> QuantizedTensor:
    """``quantizer.quantize(w, bits, layout, per_channel=True)`` a block of output channels at a
    time, the blocks joined: a per-channel grid treats each output channel alone, so this is the
    same tensor (tested for every grid) without the weight-sized float64 temporaries that some
    grids' searches make per candidate (sorting, clipping levels): gigabytes on a VGG classifier
    layer. A grid that answers with one scale for the whole tensor is quantized whole."""
    axis = layout.out_axis
    parts = slices_of(w.shape, axis, elements or BLOCK_ELEMENTS)
    if len(parts) <= 1:  # one block (or no output channel): the grid sees the whole tensor
        return quantizer.quantize(np.asarray(w, dtype=np.float64), bits, layout, True)
    # Each block in float64, as the grids' searches expect: the caller need not make a float64
    # copy of the whole weight. The integers go straight into one array (joining the blocks'
    # arrays would hold them twice).
    q: np.ndarray | None = None
    blocks = []
    for p in parts:
        b = quantizer.quantize(np.asarray(w[p], dtype=np.float64), bits, layout, True)
        if b.scale.ndim == 0:  # not per channel (the paper's grid): the whole tensor at once
            return quantizer.quantize(np.asarray(w, dtype=np.float64), bits, layout, True)
        if q is None or np.result_type(q.dtype, b.q.dtype) != q.dtype:
            q = np.empty(w.shape, b.q.dtype) if q is None else q.astype(np.result_type(q.dtype, b.q.dtype))
        q[p] = b.q
        # Scales and zero points kept, integers dropped (a copy: the view ``b.q[:0]`` would keep
        # every block's integers alive, the layer's codes twice over until the blocks are joined).
        blocks.append(replace(b, q=b.q[:0].copy()))
    first = blocks[0]
    along = 0 if first.scale.ndim == 1 else axis  # per channel (C,), or block-wise (rank of q)
    zero_point = (None if first.zero_point is None else
                  np.concatenate([b.zero_point for b in blocks], axis=along))
    return replace(first, q=q, scale=np.concatenate([b.scale for b in blocks], axis=along),
                   zero_point=zero_point,
                   grid=(min(b.grid[0] for b in blocks), max(b.grid[1] for b in blocks)))


def round_to_grid(t: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """rint and clip in place (``t`` is a fresh temporary): one weight-sized float64 array, not
    three, on layers of 100 M weights. int8 where the grid fits, else int16."""
    np.rint(t, out=t)
    np.clip(t, lo, hi, out=t)
    return t.astype(np.int8 if -128 <= lo and hi <= 127 else np.int16)
