"""Quantize and compensate: walk the graph once, in order, carrying two-stream statistics.

Each planned layer is rounded by its quantizer (``dfmpc_onnx.quant.quantizers``) and corrected by its
correction (``dfmpc_onnx.quant.corrections``), both named in the layer's plan:

- our compensation (energy, ls-diag, ls-full) scales the input channels of a pair's second layer
  before rounding, from the statistics of the first layer's float and quantized outputs;
- the paper's factor c (Eq. 27) scales the output channels of a pair's first layer after
  rounding, folded into its scales and bias so both layers stay on their grids;
- bias correction shifts each layer's bias so its output mean under the float input statistics
  is unchanged (its own rounding error only).

Statistics of both streams (float and quantized) are carried through the graph by
``dfmpc_onnx.stats.propagate``. This pass records decisions in the context; emit-qdq writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from dfmpc_onnx.model.channels import ChannelMap
from dfmpc_onnx.model.graph import GraphIndex, attr, tensor_bytes
from dfmpc_onnx.model.layers import LinearLayer, as_linear_layer
from dfmpc_onnx.options import LayerPlan
from dfmpc_onnx.quant.corrections import COMPENSATIONS, PairInput, bias_shift, paper_factor
from dfmpc_onnx.quant.quantizers import QuantizedTensor, WeightLayout, get_quantizer
from dfmpc_onnx.quant.quantizers.base import quantize_by_rows, slices_of
from dfmpc_onnx.stats.propagate import Shapes, propagate
from dfmpc_onnx.stats.tensor_stats import (
    TensorStats,
    joint_pre_activation,
    output_means,
    tap_coverage,
    through_linear,
    through_linear_by_blocks,
)

from .base import Context, Pair
from .find_pairs import channel_axis

# Layers with at least this many weights are quantized and measured a block of output channels
# at a time when they can be (see _Walker._streams): 64 MB as float32.
STREAM_ELEMENTS = 1 << 24


class QuantizeAndCompensate:
    name = "quantize-and-compensate"
    requires = ("layers", "pairs", "plan")
    provides = ("quantized",)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        _Walker(model.graph, ctx).walk()
        untrusted = [e for e in ctx.report.layers if e.reason.startswith("no BN statistics")]
        if untrusted and not ctx.new_bias:
            # The common BN-folded export: say once, up front, why nothing was corrected.
            ctx.report.notes.append(
                f"no layer was bias-corrected: the model has no BatchNormalization statistics "
                f"({len(untrusted)} layers; BN folded at export?). The result equals plain "
                "rounding. Export with BN kept for the correction (README, Results), or pass "
                "--propagated-stats to trust statistics propagated from the input (measured to "
                "help some models and hurt others)")
        if any(p.correction == "paper" for p in ctx.plan.values()):
            unfolded = list(dict.fromkeys(p.a for p in ctx.pairs if p.a not in ctx.bn_fold))
            if unfolded:
                ctx.report.notes.append(
                    f"paper: {len(unfolded)} low-bit layer(s) had no BatchNormalization to unfold "
                    "(BN folded at export, or none): for them gamma/sigma = 1 and y = the layer's "
                    "bias in Eq. 27, and their one-per-layer grid is taken on the folded weights")
        count_bytes(model.graph, ctx)
        return bool(ctx.quantized)


def layout_of(layer: LinearLayer) -> WeightLayout:
    """Output-channel and reduction axes of a layer's stored weight."""
    if layer.op == "Conv":
        return WeightLayout(0, 1)
    if layer.op == "ConvTranspose":
        return WeightLayout(1, 0 if layer.group == 1 else None)
    return WeightLayout(layer.out_axis, 1 - layer.out_axis)


def streams_by_rows(layer: LinearLayer) -> bool:
    """Whether a layer is large enough, and simple enough, to be walked a block of output
    channels at a time (its statistics are per output channel, so blocks are independent)."""
    return (layer.row_sliceable and layer.out_channels > 0
            and int(np.prod(layer.stored_shape)) >= STREAM_ELEMENTS)


def quantize_layer(layer: LinearLayer, w_stored: np.ndarray, plan: LayerPlan, per_channel: bool,
                   fold_k: np.ndarray | None = None) -> QuantizedTensor:
    """Round one layer's weight with its planned quantizer.

    ``fold_k``: the per-channel factor of a BatchNormalization folded into this layer. The paper's
    grids are one scale per layer on the weights *before* BN: unfold, round, and carry k in the
    per-channel scales (a negative k flips the channel's integers, so scales stay positive)."""
    quantizer = get_quantizer(plan.quantizer)
    layout = layout_of(layer)
    if fold_k is None or plan.quantizer != "paper":
        if per_channel and plan.quantizer != "paper":
            return quantize_by_rows(quantizer, w_stored, plan.bits, layout)
        return quantizer.quantize(w_stored, plan.bits, layout, per_channel)
    shape = [1] * w_stored.ndim
    shape[layout.out_axis] = -1
    k = np.where(fold_k != 0, fold_k, 1.0)
    qt = quantizer.quantize(w_stored / k.reshape(shape), plan.bits, layout, per_channel)
    sign = np.where(fold_k < 0, -1, 1).reshape(shape)
    qt = replace(qt, q=(qt.q * sign).astype(qt.q.dtype))
    return qt.rescaled(np.abs(fold_k), layout.out_axis)


@dataclass(frozen=True)
class LayerInput:
    """The float model's statistics at a layer's input, and its tap coverage: what bias
    correction needs, independent of how any layer is quantized."""

    stats: TensorStats
    coverage: np.ndarray | None


def layer_inputs(graph: onnx.GraphProto, ctx: Context) -> dict[str, LayerInput]:
    """Input statistics of every layer of ``ctx.layers`` with nothing quantized (one walk)."""
    walker = _Walker(graph, ctx, quantize=False)
    walker.walk()
    return walker.inputs


def corrected_bias(layer: LinearLayer, w_f: np.ndarray, w_q: np.ndarray, b_f: np.ndarray,
                   inp: LayerInput) -> np.ndarray:
    """Bias correction of the layer's own rounding error (canonical weights)."""
    mean_f, mean_q = output_means(w_f, w_q, layer.group, inp.stats, inp.coverage)
    return b_f + bias_shift(mean_f, mean_q)


class _Walker:
    def __init__(self, graph: onnx.GraphProto, ctx: Context, quantize: bool = True) -> None:
        self.graph = graph
        self.ctx = ctx
        self.quantize = quantize
        self.layers = set(ctx.plan) if quantize else set(ctx.layers)
        self.inputs: dict[str, LayerInput] = {}
        self.o = ctx.options
        self.index = GraphIndex(graph)
        self.shapes = Shapes.of(graph)
        self.pairs_of_a: dict[str, list[Pair]] = {}
        for p in ctx.pairs:
            self.pairs_of_a.setdefault(p.a, []).append(p)
        # B name -> what its compensation needs: per A whose channels it reads, where they are in
        # B's input (None: all of it, the paper's pair) and their statistics
        self.pending: dict[str, list[tuple[ChannelMap | None, PairInput]]] = {}
        self.stats: dict[str, TensorStats] = {}
        self.axis: dict[str, int] = {}
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
        total = len(self.layers)
        done = 0
        handled: set[int] = set()
        for node in self.graph.node:
            if id(node) in handled:
                continue
            if node.name in self.layers:
                done += 1
                if self.quantize:
                    self.ctx.say(f"[{done}/{total}] {node.name}: {self.ctx.plan[node.name].bits} bits")
                    self._layer(node)
                else:
                    self._float_layer(node)
                continue
            try:
                result = propagate(node, self.index, self.shapes, self.stats, self.axis)
            except Exception as exc:  # noqa: BLE001 - statistics are best effort, never fatal
                self.ctx.report.notes.append(
                    f"statistics stop at node {node.name!r} ({node.op_type}): {exc}")
                continue
            if result is not None:
                out, s, axis, nodes = result
                handled.update(id(n) for n in nodes)
                self._set(out, s, axis)

    # -- layers -------------------------------------------------------------------------------

    def _input(self, node: onnx.NodeProto) -> tuple[LinearLayer, LayerInput, np.ndarray, np.ndarray]:
        """The layer, its input statistics and coverage, its float canonical weight and bias."""
        layer, reason = as_linear_layer(node, self.index)
        if layer is None:  # planned layers were checked by find-pairs; this is a bug if reached
            raise RuntimeError(f"layer {node.name!r} is no longer quantizable: {reason}")
        inp = LayerInput(self._input_stats(node, layer), self._coverage(layer))
        self.inputs[node.name] = inp
        w_f = layer.to_canonical(self.index.array(layer.weight).astype(np.float64))
        return layer, inp, w_f, self._float_bias(layer)

    def _input_stats(self, node: onnx.NodeProto, layer: LinearLayer) -> TensorStats:
        o = self.o
        s_in = self.stats.get(node.input[0])
        if s_in is None or s_in.channels not in (1, layer.in_channels):
            s_in = TensorStats.gaussian(o.input_mean, o.input_std ** 2, "assumed")
        return s_in

    def _float_bias(self, layer: LinearLayer) -> np.ndarray:
        return (self.index.array(layer.bias).astype(np.float64).reshape(-1) if layer.bias
                else np.zeros(layer.out_channels))

    def _float_layer(self, node: onnx.NodeProto) -> None:
        layer, _ = as_linear_layer(node, self.index)
        if layer is not None and streams_by_rows(layer):  # a block of output channels at a time
            s_in = self._input_stats(node, layer)
            inp = self.inputs[node.name] = LayerInput(s_in, self._coverage(layer))
            stored, b_f = self._stored(layer), self._float_bias(layer)
            blocks = ((w, w) for w in (layer.canonical_part(np.asarray(stored[part], dtype=np.float64))
                                       for part in slices_of(stored.shape, layout_of(layer).out_axis)))
            out, _ = through_linear_by_blocks(blocks, b_f, lambda *_: b_f, s_in, inp.coverage)
            self.index.release(layer.weight)
        else:
            layer, inp, w_f, b_f = self._input(node)
            self.index.release(layer.weight)
            out = through_linear(w_f, w_f, b_f, b_f, layer.group, inp.stats, inp.coverage)
        self._set(node.output[0], out, channel_axis(layer))

    def _stored(self, layer: LinearLayer):
        """The stored float weight to slice along its output axis: where that is the first axis,
        rows read from the weight store as sliced (``GraphIndex.rows``), else the whole array."""
        return (self.index.rows(layer.weight) if layout_of(layer).out_axis == 0
                else self.index.array(layer.weight))

    def _corrects_bias(self, node: onnx.NodeProto, layer: LinearLayer, s_in: TensorStats) -> bool:
        """Whether this layer's bias is corrected; where the plan asks for it and it cannot be,
        the report's entry says why."""
        entry = self.ctx.report.layer(node.name)
        if not self.o.corrects_bias(self.ctx.plan[node.name].correction):
            return False
        if layer.op == "MatMul":
            entry.reason = "MatMul has no bias input: mean not corrected"
            return False
        # Corrections need statistics worth trusting (kept BN), unless the user asks otherwise or
        # the plan's correction was chosen by measuring it (ctx.measured).
        if not (s_in.trusted or self.o.propagated_stats or node.name in self.ctx.measured):
            entry.reason = "no BN statistics upstream: not corrected (--propagated-stats forces)"
            return False
        return True

    def _streams(self, node: onnx.NodeProto) -> bool:
        """Whether the layer is large and simple enough to take a block of output channels at a
        time (``_streamed_layer``): one group, a grid quantize_by_rows cuts exactly (per channel,
        or max-abs), no compensation into or out of it."""
        layer, _ = as_linear_layer(node, self.index)
        plan = self.ctx.plan[node.name]
        by_rows = plan.quantizer != "paper" and self.o.granularity == "channel"
        if (layer is None or not streams_by_rows(layer) or not (by_rows or plan.quantizer == "maxabs")
                or node.name in self.pending):
            return False
        pairs = self.pairs_of_a.get(node.name, [])
        return not (pairs and plan.correction == "paper") and not any(
            self.ctx.plan[p.b].correction in COMPENSATIONS for p in pairs)

    def _streamed_layer(self, node: onnx.NodeProto) -> None:
        """``_layer`` for a large layer, a block of output channels at a time: the model's float
        weight is read in place and no weight-sized float64 array is made (a VGG classifier layer
        is 100 M weights: 0.8 GB a float64 copy). Same values as ``_layer`` (tested)."""
        ctx, o = self.ctx, self.o
        layer, _ = as_linear_layer(node, self.index)
        s_in = self._input_stats(node, layer)
        inp = self.inputs[node.name] = LayerInput(s_in, self._coverage(layer))
        stored = self._stored(layer)
        b_f = self._float_bias(layer)
        plan = ctx.plan[node.name]
        entry = ctx.report.layer(node.name)
        entry.stats = s_in.source
        qt = quantize_layer(layer, stored, plan, o.granularity == "channel")
        correct = self._corrects_bias(node, layer, s_in)

        def blocks():
            for part in slices_of(stored.shape, layout_of(layer).out_axis):
                yield (layer.canonical_part(np.asarray(stored[part], dtype=np.float64)),
                       layer.canonical_part(qt.dequantize_part(part)))

        out, b_q = through_linear_by_blocks(
            blocks(), b_f, (lambda mf, mq: b_f + bias_shift(mf, mq)) if correct else (lambda *_: b_f),
            s_in, inp.coverage)
        self.index.release(layer.weight)
        if correct:
            ctx.new_bias[node.name] = b_q
        ctx.quantized[node.name] = qt
        entry.quantizer, entry.correction = qt.quantizer, plan.correction
        self._set(node.output[0], out, channel_axis(layer))

    def _layer(self, node: onnx.NodeProto) -> None:
        if self._streams(node):
            self._streamed_layer(node)
            return
        ctx, o = self.ctx, self.o
        layer, inp, w_f, b_f = self._input(node)
        s_in, cover = inp.stats, inp.coverage
        plan = ctx.plan[node.name]
        entry = ctx.report.layer(node.name)
        entry.stats = s_in.source
        bias_corrected = o.corrects_bias(plan.correction)
        w_target = w_f
        pending = self.pending.pop(node.name, None)
        if pending is not None:
            c, ratio = _compensate(COMPENSATIONS[plan.correction], pending, layer, w_f, o.lam,
                                   bias_corrected)
            w_target = layer.scale_inputs(w_f, c)
            entry.comp_min, entry.comp_max, entry.error_ratio = float(c.min()), float(c.max()), ratio
        fold = ctx.bn_fold.get(node.name)
        qt = quantize_layer(layer, layer.from_canonical(w_target), plan,
                            o.granularity == "channel", None if fold is None else fold.k)
        self.index.release(layer.weight)
        b_q = b_f
        pairs = self.pairs_of_a.get(node.name, [])
        if pairs and plan.correction == "paper":
            c = self._paper_factor(layer, w_f, qt, b_f)
            qt, b_q = qt.rescaled(c, layout_of(layer).out_axis), b_f * c
            entry.comp_min, entry.comp_max = float(c.min()), float(c.max())
        w_q = layer.to_canonical(qt.dequantize())
        if self._corrects_bias(node, layer, s_in):
            mean_f, mean_q = output_means(w_f, w_q, layer.group, s_in, cover)
            b_q = b_q + bias_shift(mean_f, mean_q)
        if b_q is not b_f:
            ctx.new_bias[node.name] = b_q
        ctx.quantized[node.name] = qt
        entry.quantizer, entry.correction = qt.quantizer, plan.correction
        out = through_linear(w_f, w_q, b_f, b_q, layer.group, s_in, cover)
        self._set(node.output[0], out, channel_axis(layer))
        compensated = [p for p in pairs if ctx.plan[p.b].correction in COMPENSATIONS
                       and not getattr(p.activation, "scale_only", False)]
        if compensated and (s_in.trusted or node.output[0] in ctx.bn_stats or o.propagated_stats):
            joint = joint_pre_activation(layer.dense(w_f), layer.dense(w_q), b_f, b_q, s_in, cover)
            if node.output[0] in ctx.bn_stats:
                joint = joint.anchored(*ctx.bn_stats[node.output[0]])
            for p in compensated:
                part = joint if p.channels is None else joint.sliced(p.channels.source)
                self.pending.setdefault(p.b, []).append((p.channels, PairInput(part, p.activation)))

    def _paper_factor(self, layer: LinearLayer, w_f: np.ndarray, qt: QuantizedTensor,
                      b_f: np.ndarray) -> np.ndarray:
        """c of Eq. 27 for the low-bit layer of a pair, to fold into its output channels.

        Rows X_j = gamma_j w_j / sigma_j are the BN-folded weight rows and y_j = beta_j - gamma_j
        mu_j / sigma_j the folded bias (with gamma^ = gamma, beta^ = beta, mu^ = mu, sigma^ = sigma:
        the data-free reading). Scaling BN's gamma_j and beta_j by c_j scales the folded row's
        scale and the bias by c_j, so the next layer keeps its grid."""
        rows = w_f.reshape(layer.out_channels, -1)
        rows_q = layer.to_canonical(qt.dequantize()).reshape(layer.out_channels, -1)
        return paper_factor(rows, rows_q, b_f, b_f, self.o.lambda1, self.o.lambda2)

    def _coverage(self, layer: LinearLayer) -> np.ndarray | None:
        """Tap coverage of a Conv from its input's inferred spatial size (None if unknown)."""
        node = layer.node
        if layer.op != "Conv":
            return None
        spatial = self.shapes.spatial.get(node.input[0])
        kernel = list(layer.stored_shape[2:])
        d = len(kernel)
        if spatial is None or len(spatial) != d or attr(node, "auto_pad", "NOTSET") != "NOTSET":
            return None
        return tap_coverage(spatial, kernel, list(attr(node, "strides", [1] * d)),
                            list(attr(node, "pads", [0] * 2 * d)),
                            list(attr(node, "dilations", [1] * d)))


def _compensate(solve, pending: list[tuple[ChannelMap | None, PairInput]], layer: LinearLayer,
               w_f: np.ndarray, lam: float, centred: bool) -> tuple[np.ndarray, float]:
    """B's factor per input channel and the predicted L(c)/L(1): from its one A for the paper's
    pair; else per slice of B's input that some A's channels fill, each solved on B's columns
    there (cross terms with other slices dropped), 1 elsewhere, and the worst slice's ratio."""
    dense = layer.dense(w_f)
    if len(pending) == 1 and pending[0][0] is None:
        return solve(pending[0][1], dense, lam, centred)
    c = np.ones(layer.in_channels)
    ratios = []
    for channels, inp in pending:
        target = slice(None) if channels is None else channels.target
        c[target], ratio = solve(inp, dense[:, target], lam, centred)
        ratios.append(ratio)
    return c, max(ratios)


def _itemsize(index: GraphIndex, weight: str) -> int:
    """Bytes of one scale: scales take the weight's float type."""
    return onnx.helper.tensor_dtype_to_np_dtype(index.initializers[weight].data_type).itemsize


def count_bytes(graph: onnx.GraphProto, ctx: Context) -> None:
    """Float and ideal weight bytes, the one definition ``inspect`` and ``convert`` share: every
    initializer at its size, except each quantized weight at its QuantizedTensor's ideal bytes
    (also each layer's stored bits per weight, what --target-bits counts)."""
    index = GraphIndex(graph)
    nodes = {n.name: n for n in graph.node}
    replaced = {nodes[name].input[1] for name in ctx.quantized}
    total = sum(tensor_bytes(t) for t in graph.initializer)
    kept = sum(tensor_bytes(t) for t in graph.initializer if t.name not in replaced)
    fmt = ctx.container_format or ctx.options.format
    quant = 0.0
    for name, qt in ctx.quantized.items():
        nbytes = qt.ideal_bytes(fmt, _itemsize(index, nodes[name].input[1]))
        entry = ctx.report.layer(name)
        entry.stored_bits = nbytes * 8 / max(entry.params, 1)
        quant += nbytes
    ctx.report.float_weight_bytes = total
    ctx.report.ideal_weight_bytes = int(round(kept + quant))


__all__ = ["QuantizeAndCompensate", "count_bytes", "layout_of", "quantize_layer"]
