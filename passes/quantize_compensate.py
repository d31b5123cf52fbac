"""Quantize and compensate: walk the graph once, in order, carrying two-stream statistics.

For every layer in the bit plan the weight is rounded. With solver "diag" or "full", for the second
layer B of a pair the closed-form compensation c (dfmpc_onnx.solver) is solved first from the
statistics of A's input, A's float and quantized weights and the activation between them, and B's
input channels are scaled by c before rounding. Biases are corrected so each quantized layer's
output mean matches the float one under the float input statistics (its own rounding error only).
The statistics carry both streams, float and quantized, which the compensation needs. This pass
records decisions in the context; emit-qdq writes them into the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from dfmpc_onnx.activation import (
    ELEMENTWISE_OPS,
    Activation,
    channel_constant,
    find_activation,
)
from dfmpc_onnx.graph import GraphIndex, attr
from dfmpc_onnx.layers import LinearLayer, as_linear_layer
from dfmpc_onnx.quant import quantize
from dfmpc_onnx.solver import (
    gram,
    gram_diag,
    objective_diag,
    objective_full,
    solve_diag,
    solve_full,
)
from dfmpc_onnx.stats import (
    TensorStats,
    bivariate_matrix,
    joint_pre_activation,
    mean_diag,
    output_means,
    tap_coverage,
    through_activation,
    through_linear,
)

from .base import Context
from .find_pairs import channel_axis, tensor_rank

_PASS_THROUGH = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize",
                 "Upsample", "Identity", "Dropout", "Pad", "LRN", "Squeeze", "Unsqueeze"}


@dataclass
class _PendingPair:
    """What B needs from A: A's input statistics, weights (float and quantized) and biases."""

    x: TensorStats
    coverage: np.ndarray | None
    w_f: np.ndarray  # dense canonical (n, C_in, taps)
    w_q: np.ndarray
    b_f: np.ndarray
    b_q: np.ndarray
    z: str
    activation: Activation


class QuantizeAndCompensate:
    name = "quantize-and-compensate"

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        walker = _Walker(model.graph, ctx)
        walker.walk()
        untrusted = [e for e in ctx.report.layers if e.reason.startswith("no BN statistics")]
        if untrusted and not ctx.new_bias:
            # The common BN-folded export: say once, up front, why nothing was corrected.
            ctx.report.notes.append(
                f"no layer was bias-corrected: the model has no BatchNormalization statistics "
                f"({len(untrusted)} layers; BN folded at export?). The result equals plain "
                "rounding. Export with BN kept for the correction (README, Results), or pass "
                "--propagated-stats to trust statistics propagated from the input (measured to "
                "help some models and hurt others)")
        return bool(ctx.quantized)


class _Walker:
    def __init__(self, graph: onnx.GraphProto, ctx: Context) -> None:
        self.graph = graph
        self.ctx = ctx
        self.o = ctx.options
        self.index = GraphIndex(graph)
        self.pair_of_a = {p.a: p for p in ctx.pairs}
        self.pair_of_b = {p.b: p for p in ctx.pairs}
        self.pending: dict[str, _PendingPair] = {}
        bc = self.o.bias_correction
        self.bias_correction = (self.o.solver != "none") if bc is None else bc
        self.stats: dict[str, TensorStats] = {}
        self.axis: dict[str, int] = {}
        self.handled: set[int] = set()
        self.channels = _channel_counts(graph)
        self.spatial = _spatial_sizes(graph)
        var = self.o.input_std ** 2
        for name in self.index.graph_inputs:
            self._set(name, TensorStats.gaussian(self.o.input_mean, var, "assumed"), 1)

    def _set(self, name: str, s: TensorStats, axis: int) -> None:
        if name in self.ctx.bn_stats:
            mean, std = self.ctx.bn_stats[name]
            if s.channels in (1, len(mean)):
                s = s.anchored(mean, std)
        self.stats[name] = s
        self.axis[name] = axis

    def walk(self) -> None:
        total = len(self.ctx.bits)
        done = 0
        for node in self.graph.node:
            if id(node) in self.handled:
                continue
            if node.name in self.ctx.bits:
                done += 1
                self.ctx.say(f"[{done}/{total}] {node.name}: {self.ctx.bits[node.name]} bits")
                self._layer(node)
                continue
            try:
                self._propagate(node)
            except Exception as exc:  # noqa: BLE001 - statistics are best effort, never fatal
                self.ctx.report.notes.append(
                    f"statistics stop at node {node.name!r} ({node.op_type}): {exc}")

    # -- layers -------------------------------------------------------------------------------

    def _layer(self, node: onnx.NodeProto) -> None:
        layer, reason = as_linear_layer(node, self.index)
        if layer is None:  # planned layers were checked by find-pairs; this is a bug if reached
            raise RuntimeError(f"layer {node.name!r} is no longer quantizable: {reason}")
        ctx, o = self.ctx, self.o
        entry = ctx.report.layer(node.name)
        s_in = self.stats.get(node.input[0])
        if s_in is None or s_in.channels not in (1, layer.in_channels):
            s_in = TensorStats.gaussian(o.input_mean, o.input_std ** 2, "assumed")
        entry.stats = s_in.source
        # Corrections need statistics worth trusting (kept BN), unless the user asks otherwise.
        trusted = s_in.trusted or o.propagated_stats
        w_f = layer.to_canonical(self.index.array(layer.weight).astype(np.float64))
        b_f = (self.index.array(layer.bias).astype(np.float64).reshape(-1) if layer.bias
               else np.zeros(layer.out_channels))
        cover = self._coverage(layer)
        w_target = w_f
        pending = self.pending.pop(node.name, None)
        if pending is not None and o.solver in ("diag", "full") and (
                pending.x.trusted or pending.z in ctx.bn_stats or o.propagated_stats):
            c, ratio = self._compensation(pending, layer, w_f)
            w_target = layer.scale_inputs(w_f, c)
            entry.comp_min, entry.comp_max = float(c.min()), float(c.max())
            entry.error_ratio = ratio
        axis = layer.out_axis if o.granularity == "channel" else None
        qw = quantize(layer.from_canonical(w_target), ctx.bits[node.name], axis)
        ctx.quantized[node.name] = qw
        self.index.release(layer.weight)
        w_q = layer.to_canonical(qw.dequantize())
        b_q = b_f
        if self.bias_correction and layer.op != "MatMul" and trusted:
            mean_f, mean_q = output_means(w_f, w_q, layer.group, s_in, cover)
            b_q = b_f + mean_f - mean_q
            ctx.new_bias[node.name] = b_q
        elif self.bias_correction and layer.op == "MatMul":
            entry.reason = "MatMul has no bias input: mean not corrected"
        elif self.bias_correction:
            entry.reason = "no BN statistics upstream: not corrected (--propagated-stats forces)"
        out = through_linear(w_f, w_q, b_f, b_q, layer.group, s_in, cover)
        self._set(node.output[0], out, channel_axis(layer))
        pair = self.pair_of_a.get(node.name)
        if pair is not None:
            self.pending[pair.b] = _PendingPair(
                s_in, cover, layer.dense(w_f), layer.dense(w_q), b_f, b_q, node.output[0],
                pair.activation)

    def _coverage(self, layer: LinearLayer) -> np.ndarray | None:
        """Tap coverage of a Conv from its input's inferred spatial size (None if unknown)."""
        node = layer.node
        if layer.op != "Conv":
            return None
        spatial = self.spatial.get(node.input[0])
        kernel = list(layer.stored_shape[2:])
        d = len(kernel)
        if spatial is None or len(spatial) != d or attr(node, "auto_pad", "NOTSET") != "NOTSET":
            return None
        return tap_coverage(spatial, kernel, list(attr(node, "strides", [1] * d)),
                            list(attr(node, "pads", [0] * 2 * d)),
                            list(attr(node, "dilations", [1] * d)))

    def _compensation(self, p: _PendingPair, b: LinearLayer, w_b: np.ndarray):
        """c for B's input channels, and the predicted objective ratio L(c) / L(1)."""
        joint = joint_pre_activation(p.w_f, p.w_q, p.b_f, p.b_q, p.x, p.coverage)
        if p.z in self.ctx.bn_stats:
            joint = joint.anchored(*self.ctx.bn_stats[p.z])
        phi = p.activation
        dense_b = b.dense(w_b)
        ones = np.ones(len(joint.mean_f))
        # With bias correction the mean error of B's output is removed afterwards, so only the
        # centred error matters; without it, raw second moments (the paper's form).
        centre = 1.0 if self.bias_correction else 0.0
        if self.o.objective == "energy":
            hs = through_activation(phi, joint.diagonal())
            c = np.sqrt(np.where(hs.var_q > 1e-12, hs.var_f / np.maximum(hs.var_q, 1e-12), 1.0))
            g = gram_diag(dense_b)
            base = objective_diag(g, hs.var_f, hs.cov_fq, hs.var_q, ones)
            ratio = objective_diag(g, hs.var_f, hs.cov_fq, hs.var_q, c) / base if base > 0 else 1.0
        elif self.o.solver == "full":
            d = joint.diagonal()
            mh_f = mean_diag(phi, d.mean_f, d.var_f) * centre
            mh_q = mean_diag(phi, d.mean_q, d.var_q) * centre
            cross = bivariate_matrix(phi, phi, d.mean_f, d.var_f, d.mean_q, d.var_q, joint.cov_fq)
            qq = bivariate_matrix(phi, phi, d.mean_q, d.var_q, d.mean_q, d.var_q, joint.cov_qq)
            ff = bivariate_matrix(phi, phi, d.mean_f, d.var_f, d.mean_f, d.var_f, joint.cov_ff)
            a = cross - np.outer(mh_f, mh_q)
            q = qq - np.outer(mh_q, mh_q)
            h = ff - np.outer(mh_f, mh_f)
            g = gram(dense_b)
            c = solve_full(g, a, q, self.o.lam)
            base = objective_full(g, h, a, q, ones)
            ratio = objective_full(g, h, a, q, c) / base if base > 0 else 1.0
        else:
            hs = through_activation(phi, joint.diagonal())
            m_f, m_q = hs.mean_f * (1 - centre), hs.mean_q * (1 - centre)
            h, a, q = hs.var_f + m_f * m_f, hs.cov_fq + m_f * m_q, hs.var_q + m_q * m_q
            g = gram_diag(dense_b)
            c = solve_diag(g, a, q, self.o.lam)
            base = objective_diag(g, h, a, q, ones)
            ratio = objective_diag(g, h, a, q, c) / base if base > 0 else 1.0
        return c, float(ratio)

    # -- everything else: statistics only ---------------------------------------------------

    def _propagate(self, node: onnx.NodeProto) -> None:
        ins = [n for n in node.input if n]
        var_ins = [n for n in ins if not self.index.is_constant(n)]
        if not var_ins or any(n not in self.stats for n in var_ins):
            return
        op = node.op_type
        x = var_ins[0]
        s, axis = self.stats[x], self.axis[x]
        if op in ELEMENTWISE_OPS and node.domain in ("", "ai.onnx") and len(var_ins) == 1:
            phi = find_activation(self.index, x, tensor_rank(self.graph, x), axis)
            if phi is None or node not in phi.nodes:
                phi = _single_node_activation(self.index, node, x, tensor_rank(self.graph, x),
                                              axis)
            if phi is not None:
                self.handled.update(id(n) for n in phi.nodes)
                self._set(phi.exit, through_activation(phi, s), axis)
            return
        out = node.output[0]
        if op in ("Add", "Sum", "Sub") and len(var_ins) == len(ins) and len(ins) >= 2:
            parts = [self.stats[n] for n in ins]
            n_ch = max(p.channels for p in parts)
            parts = [p.expand(n_ch) for p in parts]
            sign = [1.0] + [(-1.0 if op == "Sub" else 1.0)] * (len(parts) - 1)
            self._set(out, TensorStats(
                sum(g * p.mean_f for g, p in zip(sign, parts, strict=True)),
                sum(p.var_f for p in parts),
                sum(g * p.mean_q for g, p in zip(sign, parts, strict=True)),
                sum(p.var_q for p in parts), sum(p.cov_fq for p in parts),
                "bn" if all(p.trusted for p in parts) else "propagated"), axis)
        elif op == "BatchNormalization" and len(var_ins) == 1:
            gamma, beta, mean, var = (self.index.array(n).astype(np.float64)
                                      for n in node.input[1:5])
            k = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
            s = s.expand(len(k))
            self._set(out, TensorStats((s.mean_f - mean) * k + beta, s.var_f * k * k,
                                       (s.mean_q - mean) * k + beta, s.var_q * k * k,
                                       s.cov_fq * k * k), axis)
        elif op == "Concat" and len(var_ins) == len(ins):
            rank = tensor_rank(self.graph, out)
            cat_axis = int(attr(node, "axis", 1))
            if rank is None or cat_axis % rank != axis % rank:
                return
            counts = [self.channels.get(n) for n in ins]
            if any(c is None for c in counts):
                return
            parts = [self.stats[n].expand(c) for n, c in zip(ins, counts, strict=True)]
            cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
            self._set(out, TensorStats(cat("mean_f"), cat("var_f"), cat("mean_q"), cat("var_q"),
                                       cat("cov_fq"),
                                       "bn" if all(p.trusted for p in parts) else "propagated"),
                      axis)
        elif op in _PASS_THROUGH or (op in ("ReduceMean", "ReduceMax") and _keeps_channels(node)):
            self._set(out, s, axis)
        elif op in ("Flatten", "Reshape"):
            n_out = self.channels.get(out)
            rank_out = tensor_rank(self.graph, out)
            if rank_out != 2 or n_out is None:
                return
            if s.channels == 1:
                self._set(out, s, -1)
            elif n_out % s.channels == 0:
                self._set(out, s.repeat(n_out // s.channels), -1)


def _keeps_channels(node: onnx.NodeProto) -> bool:
    axes = attr(node, "axes", None)
    return axes is not None and 1 not in [int(a) for a in axes] and 0 not in [int(a) for a in axes]


def _single_node_activation(index: GraphIndex, node: onnx.NodeProto, x: str, rank, axis):
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


def _spatial_sizes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Known spatial dims (after N, C) of inferred tensors, for tap coverage."""
    sizes = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) >= 3:
            dims = t.shape.dim[2:]
            if all(d.HasField("dim_value") for d in dims):
                sizes[vi.name] = [d.dim_value for d in dims]
    return sizes


def _channel_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """Channel counts (dim 1) of tensors whose shapes were inferred, for Concat and Flatten."""
    counts = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) >= 2 and t.shape.dim[1].HasField("dim_value"):
            counts[vi.name] = t.shape.dim[1].dim_value
    return counts
