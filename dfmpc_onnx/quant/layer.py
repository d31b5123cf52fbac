"""Layer quantization: one layer's weight rounded by its planned quantizer (with a folded
BatchNormalization unfolded for the paper's one-per-layer grid), and the byte count of a model
whose quantized weights are stored at their QuantizedTensor's ideal size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import onnx

from dfmpc_onnx.model.graph import GraphIndex, all_nodes, tensor_bytes
from dfmpc_onnx.model.layers import LinearLayer, layout_of
from dfmpc_onnx.options import LayerPlan
from dfmpc_onnx.quant.quantizers import QuantizedTensor, get_quantizer
from dfmpc_onnx.quant.quantizers.base import quantize_by_rows
from dfmpc_onnx.quant.rounding import applies, balanced
from dfmpc_onnx.report import Report


def quantize_layer(layer: LinearLayer, w_stored: np.ndarray, plan: LayerPlan, per_channel: bool,
                   fold_k: np.ndarray | None = None, rounding: str = "nearest") -> QuantizedTensor:
    """Round one layer's weight with its planned quantizer.

    The one place a layer is rounded, for measuring a candidate and for writing it, so what is
    measured is what is written. ``rounding``: ``--rounding``; balanced flips roundings of grids of
    4 bits or fewer so each kernel's and output channel's errors cancel (``quant/rounding.py``).
    ``fold_k``: the per-channel factor of a BatchNormalization folded into this layer. The paper's
    grids are one scale per layer on the weights *before* BN: unfold, round, and carry k in the
    per-channel scales (a negative k flips the channel's integers, so scales stay positive)."""
    quantizer = get_quantizer(plan.quantizer)
    layout = layout_of(layer)
    if fold_k is None or not quantizer.per_layer:
        if per_channel and not quantizer.per_layer:
            qt = quantize_by_rows(quantizer, w_stored, plan.bits, layout)
        else:
            qt = quantizer.quantize(w_stored, plan.bits, layout, per_channel)
        if rounding == "balanced" and applies(qt):
            qt = balanced(w_stored, qt, layout)
        return qt
    shape = [1] * w_stored.ndim
    shape[layout.out_axis] = -1
    k = np.where(fold_k != 0, fold_k, 1.0)
    qt = quantizer.quantize(w_stored / k.reshape(shape), plan.bits, layout, per_channel)
    sign = np.where(fold_k < 0, -1, 1).reshape(shape)
    qt = replace(qt, q=(qt.q * sign).astype(qt.q.dtype))
    return qt.rescaled(np.abs(fold_k), layout.out_axis)


def _itemsize(index: GraphIndex, weight: str) -> int:
    """Bytes of one scale: scales take the weight's float type."""
    return onnx.helper.tensor_dtype_to_np_dtype(index.initializers[weight].data_type).itemsize


def count_bytes(graph: onnx.GraphProto, quantized: Mapping[str, QuantizedTensor], fmt: str,
                report: Report) -> None:
    """Float and ideal weight bytes, the one definition ``inspect`` and ``convert`` share: every
    initializer at its size, except each quantized weight at its QuantizedTensor's ideal bytes
    (also each layer's stored bits per weight, what --target-bits counts)."""
    index = GraphIndex(graph)
    nodes = {n.name: n for n in all_nodes(graph)}
    replaced = {nodes[name].input[1] for name in quantized}
    total = sum(tensor_bytes(t) for t in graph.initializer)
    kept = sum(tensor_bytes(t) for t in graph.initializer if t.name not in replaced)
    quant = 0.0
    for name, qt in quantized.items():
        nbytes = qt.ideal_bytes(fmt, _itemsize(index, nodes[name].input[1]))
        entry = report.layer(name)
        entry.stored_bits = nbytes * 8 / max(entry.params, 1)
        quant += nbytes
    report.float_weight_bytes = total
    report.ideal_weight_bytes = int(round(kept + quant))
