"""A uniform view of the layers we quantize: Conv, ConvTranspose, Gemm and MatMul with a constant
weight. Every solver works on the canonical weight layout (out_channels, in_channels_per_group,
taps); this module is the only place that knows how each op stores its weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from dfmpc_onnx.model.graph import GraphIndex, attr
from dfmpc_onnx.quant.quantizers.base import WeightLayout

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class LinearLayer:
    """One quantizable layer. ``out_axis`` is the axis of output channels in the stored weight."""

    node: onnx.NodeProto
    weight: str
    bias: str | None
    group: int
    out_axis: int
    stored_shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def out_channels(self) -> int:
        return self.canonical_shape[0]

    @property
    def in_channels(self) -> int:
        """Input channels of the whole layer (all groups)."""
        return self.canonical_shape[1] * self.group

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        s = self.stored_shape
        if self.op == "Conv":
            return s[0], s[1], int(np.prod(s[2:], dtype=np.int64))
        if self.op == "ConvTranspose":
            return s[1] * self.group, s[0] // self.group, int(np.prod(s[2:], dtype=np.int64))
        if self.out_axis == 0:  # Gemm transB=1: (out, in)
            return s[0], s[1], 1
        return s[1], s[0], 1  # Gemm transB=0 and MatMul: (in, out)

    def to_canonical(self, w: np.ndarray) -> np.ndarray:
        """Stored weight -> (out, in_per_group, taps)."""
        if self.op == "Conv":
            return w.reshape(self.canonical_shape)
        if self.op == "ConvTranspose":
            g = self.group
            cin, coutg = w.shape[0], w.shape[1]
            taps = int(np.prod(w.shape[2:], dtype=np.int64))
            w = w.reshape(g, cin // g, coutg, taps).transpose(0, 2, 1, 3)
            return w.reshape(g * coutg, cin // g, taps)
        if self.out_axis == 0:
            return w[:, :, None]
        return w.T[:, :, None]

    def from_canonical(self, w: np.ndarray) -> np.ndarray:
        """(out, in_per_group, taps) -> stored layout."""
        if self.op == "Conv":
            return w.reshape(self.stored_shape)
        if self.op == "ConvTranspose":
            g = self.group
            cout, cing, taps = w.shape
            w = w.reshape(g, cout // g, cing, taps).transpose(0, 2, 1, 3)
            return w.reshape(self.stored_shape)
        if self.out_axis == 0:
            return w[:, :, 0]
        return w[:, :, 0].T

    @property
    def row_sliceable(self) -> bool:
        """Whether canonical output rows are a plain slice of the stored weight (one group, not
        ConvTranspose): statistics can then be taken a block of output channels at a time."""
        return self.group == 1 and self.op != "ConvTranspose"

    def canonical_part(self, w_part: np.ndarray) -> np.ndarray:
        """A block of output channels of the stored weight (sliced along ``out_axis``), in the
        canonical layout: (rows, in_per_group, taps). Only for ``row_sliceable`` layers."""
        if self.op == "Conv":
            return w_part.reshape(w_part.shape[0], *self.canonical_shape[1:])
        return (w_part if self.out_axis == 0 else w_part.T)[:, :, None]

    def dense(self, w_canonical: np.ndarray) -> np.ndarray:
        """Canonical weight expanded over groups to (out, in_total, taps), zeros across groups."""
        if self.group == 1:
            return w_canonical
        out, cing, taps = w_canonical.shape
        outg = out // self.group
        full = np.zeros((out, cing * self.group, taps), dtype=w_canonical.dtype)
        for g in range(self.group):
            full[g * outg:(g + 1) * outg, g * cing:(g + 1) * cing] = w_canonical[g * outg:(g + 1) * outg]
        return full

    def scale_inputs(self, w_canonical: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Multiply input channel j (over all groups) by c[j]: the compensation lands here."""
        out, cing, taps = w_canonical.shape
        outg = out // self.group
        w = w_canonical.copy()
        for g in range(self.group):
            w[g * outg:(g + 1) * outg] *= c[g * cing:(g + 1) * cing][None, :, None]
        return w


def layout_of(layer: LinearLayer) -> WeightLayout:
    """Output-channel and reduction axes of a layer's stored weight."""
    if layer.op == "Conv":
        return WeightLayout(0, 1)
    if layer.op == "ConvTranspose":
        return WeightLayout(1, 0 if layer.group == 1 else None)
    return WeightLayout(layer.out_axis, 1 - layer.out_axis)


def channel_axis(layer: LinearLayer) -> int:
    """Where a layer's output channels sit in its output tensor."""
    return 1 if layer.op in ("Conv", "ConvTranspose") else -1


def as_linear_layer(node: onnx.NodeProto, index: GraphIndex) -> tuple[LinearLayer | None, str]:
    """The layer view of ``node``, or None and the reason it is not a quantizable layer."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in LINEAR_OPS:
        return None, "not a Conv/ConvTranspose/Gemm/MatMul"
    if len(node.input) < 2 or not index.is_constant(node.input[1]):
        if op == "MatMul" and index.is_constant(node.input[0]):
            return None, "MatMul with the constant on the left is kept in float"
        return None, "weight is not a constant"
    weight = node.input[1]
    tensor = index.initializers[weight]
    if tensor.data_type == onnx.TensorProto.DOUBLE:
        return None, "float64 weight (DequantizeLinear cannot output double)"
    if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                onnx.TensorProto.BFLOAT16):
        return None, "weight is not floating point"
    shape = tuple(int(d) for d in tensor.dims)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and not index.is_constant(bias):
        return None, "bias is not a constant"
    group = 1
    if op in ("Conv", "ConvTranspose"):
        if len(shape) < 3:
            return None, f"weight of rank {len(shape)}"
        group = int(attr(node, "group", 1))
        out_axis = 0 if op == "Conv" else 1
        if group < 1 or shape[0] % group:
            return None, f"group={group} does not divide the weight's {shape[0]} channels"
    elif op == "Gemm":
        if len(shape) != 2:
            return None, f"Gemm weight of rank {len(shape)}"
        if attr(node, "transA", 0):
            return None, "Gemm with transA=1 is kept in float"
        if attr(node, "alpha", 1.0) != 1.0:
            return None, "Gemm with alpha != 1 is kept in float"
        if bias is not None and attr(node, "beta", 1.0) != 1.0:
            return None, "Gemm with beta != 1 is kept in float"
        out_axis = 0 if attr(node, "transB", 0) else 1
    else:  # MatMul
        if len(shape) != 2:
            return None, f"MatMul weight of rank {len(shape)} (batched weights are kept in float)"
        out_axis = 1
    layer = LinearLayer(node, weight, bias, group, out_axis, shape)
    if bias is not None:
        b = index.initializers[bias]
        if int(np.prod(b.dims, dtype=np.int64)) != layer.out_channels:
            return None, "bias does not have one value per output channel"
    return layer, ""
