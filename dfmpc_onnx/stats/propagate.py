"""Statistics through the nodes between quantized layers, as pure functions.

``propagate(node, ...)`` maps the two-stream statistics (float and quantized, per channel) of a
node's inputs to those of its output, or returns None where it cannot say (the walk then simply
has no statistics there). Layers themselves go through ``stats.through_linear``.
"""

from __future__ import annotations

import numpy as np
import onnx

from dfmpc_onnx.model.activation import ELEMENTWISE_OPS, Activation, channel_constant, find_activation
from dfmpc_onnx.model.graph import GraphIndex, attr
from dfmpc_onnx.model.shapes import Shapes
from dfmpc_onnx.stats.tensor_stats import TensorStats, through_activation

PASS_THROUGH = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize",
                "Upsample", "Identity", "Dropout", "Pad", "LRN", "Squeeze", "Unsqueeze"}


def _trust(parts: list[TensorStats]) -> str:
    return "bn" if all(p.trusted for p in parts) else "propagated"


def propagate(node: onnx.NodeProto, index: GraphIndex, shapes: Shapes,
              stats: dict[str, TensorStats], axis: dict[str, int]
              ) -> tuple[str, TensorStats, int, list[onnx.NodeProto]] | None:
    """(output tensor, its statistics, its channel axis, the nodes consumed) for ``node``, or None.

    An elementwise node starts an activation region (several nodes, e.g. x * Sigmoid(x)); the
    whole region is consumed at once and its nodes are returned so the caller skips them.
    """
    ins = [n for n in node.input if n]
    var_ins = [n for n in ins if not index.is_constant(n)]
    if not var_ins or any(n not in stats for n in var_ins):
        return None
    op = node.op_type
    x = var_ins[0]
    s, ax = stats[x], axis[x]
    out = node.output[0]
    if op in ELEMENTWISE_OPS and node.domain in ("", "ai.onnx") and len(var_ins) == 1:
        rank = shapes.rank(x)
        phi = find_activation(index, x, rank, ax)
        if phi is None or node not in phi.nodes:
            phi = single_node_activation(index, node, x, rank, ax)
        if phi is None:
            return None
        return phi.exit, through_activation(phi, s), ax, list(phi.nodes)
    if op in ("Add", "Sum", "Sub") and len(var_ins) == len(ins) and len(ins) >= 2:
        parts = [stats[n] for n in ins]
        n_ch = max(p.channels for p in parts)
        parts = [p.expand(n_ch) for p in parts]
        sign = [1.0] + [(-1.0 if op == "Sub" else 1.0)] * (len(parts) - 1)
        return out, TensorStats(
            sum(g * p.mean_f for g, p in zip(sign, parts, strict=True)),
            sum(p.var_f for p in parts),
            sum(g * p.mean_q for g, p in zip(sign, parts, strict=True)),
            sum(p.var_q for p in parts), sum(p.cov_fq for p in parts), _trust(parts)), ax, [node]
    if op == "BatchNormalization" and len(var_ins) == 1:
        gamma, beta, mean, var = (index.array(n).astype(np.float64) for n in node.input[1:5])
        # A variance at or below -eps is an invalid model: its statistics are not worth a NaN.
        k = gamma / np.sqrt(np.maximum(var + float(attr(node, "epsilon", 1e-5)), 1e-12))
        s = s.expand(len(k))
        return out, TensorStats((s.mean_f - mean) * k + beta, s.var_f * k * k,
                                (s.mean_q - mean) * k + beta, s.var_q * k * k,
                                s.cov_fq * k * k), ax, [node]
    if op == "Concat" and len(var_ins) == len(ins):
        rank = shapes.rank(out)
        if rank is None or int(attr(node, "axis", 1)) % rank != ax % rank:
            return None
        counts = [shapes.channels(n, 1) for n in ins]
        if any(c is None for c in counts):
            return None
        parts = [stats[n].expand(c) for n, c in zip(ins, counts, strict=True)]

        def cat(f: str) -> np.ndarray:
            return np.concatenate([getattr(p, f) for p in parts])

        return out, TensorStats(cat("mean_f"), cat("var_f"), cat("mean_q"), cat("var_q"),
                                cat("cov_fq"), _trust(parts)), ax, [node]
    if op in PASS_THROUGH or (op in ("ReduceMean", "ReduceMax") and _keeps_channels(node)):
        return out, s, ax, [node]
    if op in ("Flatten", "Reshape"):
        n_out = shapes.channels(out, 1)
        if shapes.rank(out) != 2 or n_out is None:
            return None
        if s.channels == 1:
            return out, s, -1, [node]
        if n_out % s.channels == 0:
            return out, s.repeat(n_out // s.channels), -1, [node]
    return None


def _keeps_channels(node: onnx.NodeProto) -> bool:
    axes = attr(node, "axes", None)
    return axes is not None and 1 not in [int(a) for a in axes] and 0 not in [int(a) for a in axes]


def single_node_activation(index: GraphIndex, node: onnx.NodeProto, x: str, rank: int | None,
                           axis: int) -> Activation | None:
    """A one-node activation (Relu feeding two branches, say), when no closed region exists."""
    constants = {}
    for name in node.input:
        if name and name != x:
            if not index.is_constant(name):
                return None
            c = channel_constant(index.array(name), rank, axis)
            if c is None:
                return None
            constants[name] = c
    return Activation(x, node.output[0], [node], constants)
