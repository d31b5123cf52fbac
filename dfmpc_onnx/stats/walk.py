"""The statistics walk: the graph once, in order, carrying two-stream (float and quantized)
statistics from the inputs to every layer (``dfmpc_onnx.stats.propagate`` through the nodes
between). With ``quantize=False`` it quantizes nothing and yields each layer's float input
statistics (what measure-layers' bias correction needs); with ``quantize=True`` it rounds and
corrects each planned layer as it reaches it (what quantize-and-compensate does).

The walk reads the conversion's context (plan, pairs, BN statistics and folds, options) and
writes its decisions back into it (quantized tensors, new biases, report entries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from dfmpc_onnx.model.channels import ChannelMap
from dfmpc_onnx.model.graph import GraphIndex, attr, body_nodes
from dfmpc_onnx.model.layers import LinearLayer, as_linear_layer, channel_axis, layout_of
from dfmpc_onnx.model.shapes import Shapes
from dfmpc_onnx.quant.corrections import COMPENSATIONS, PairInput, bias_shift, paper_factor
from dfmpc_onnx.quant.layer import quantize_layer
from dfmpc_onnx.quant.quantizers import QuantizedTensor, get_quantizer
from dfmpc_onnx.quant.quantizers.base import slices_of
from dfmpc_onnx.stats.propagate import propagate
from dfmpc_onnx.stats.tensor_stats import (
    TensorStats,
    joint_pre_activation,
    output_means,
    tap_coverage,
    through_linear,
    through_linear_by_blocks,
)

# Layers with at least this many weights are quantized and measured a block of output channels
# at a time when they can be (see Walker._streams): 64 MB as float32.
STREAM_ELEMENTS = 1 << 24


def streams_by_rows(layer: LinearLayer) -> bool:
    """Whether a layer is large enough, and simple enough, to be walked a block of output
    channels at a time (its statistics are per output channel, so blocks are independent)."""
    return (layer.row_sliceable and layer.out_channels > 0
            and int(np.prod(layer.stored_shape)) >= STREAM_ELEMENTS)


@dataclass(frozen=True)
class LayerInput:
    """The float model's statistics at a layer's input, and its tap coverage: what bias
    correction needs, independent of how any layer is quantized."""

    stats: TensorStats
    coverage: np.ndarray | None


def layer_inputs(graph: onnx.GraphProto, ctx: Any) -> dict[str, LayerInput]:
    """Input statistics of every layer of ``ctx.layers`` with nothing quantized (one walk)."""
    walker = Walker(graph, ctx, quantize=False)
    walker.walk()
    return walker.inputs


def corrected_bias(layer: LinearLayer, w_f: np.ndarray, w_q: np.ndarray, b_f: np.ndarray,
                   inp: LayerInput) -> np.ndarray:
    """Bias correction of the layer's own rounding error (canonical weights)."""
    mean_f, mean_q = output_means(w_f, w_q, layer.group, inp.stats, inp.coverage)
    return b_f + bias_shift(mean_f, mean_q)


class Walker:
    def __init__(self, graph: onnx.GraphProto, ctx: Any, quantize: bool = True) -> None:
        self.graph = graph
        self.ctx = ctx
        self.quantize = quantize
        self.layers = set(ctx.plan) if quantize else set(ctx.layers)
        self.inputs: dict[str, LayerInput] = {}
        # Layers whose bias correction was asked for but not made: no trusted statistics upstream.
        self.untrusted: list[str] = []
        self.o = ctx.options
        self.index = GraphIndex(graph)
        self.shapes = Shapes(graph)
        self.pairs_of_a: dict[str, list[Any]] = {}
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

        def visit(layer: onnx.NodeProto) -> None:
            nonlocal done
            done += 1
            if self.quantize:
                self.ctx.say(f"[{done}/{total}] {layer.name}: {self.ctx.plan[layer.name].bits} bits")
                self._layer(layer)
            else:
                self._float_layer(layer)

        handled: set[int] = set()
        for node in self.graph.node:
            if id(node) in handled:
                continue
            if node.name in self.layers:
                visit(node)
                continue
            # Layers inside If/Loop/Scan bodies: no statistics reach them (control flow), so
            # they take the assumed input distribution, untrusted (no bias correction unless
            # measured or --propagated-stats).
            for inner in body_nodes(node):
                if inner.name in self.layers:
                    visit(inner)
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
            self.untrusted.append(node.name)
            return False
        return True

    def _streams(self, node: onnx.NodeProto) -> bool:
        """Whether the layer is large and simple enough to take a block of output channels at a
        time (``_streamed_layer``): one group, a grid quantize_by_rows cuts exactly (per channel,
        or max-abs), no compensation into or out of it."""
        layer, _ = as_linear_layer(node, self.index)
        plan = self.ctx.plan[node.name]
        by_rows = not get_quantizer(plan.quantizer).per_layer and self.o.per_channel
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
        qt = quantize_layer(layer, stored, plan, o.per_channel, rounding=o.rounding)
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
                            o.per_channel, None if fold is None else fold.k, o.rounding)
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
        spatial = self.shapes.spatial(node.input[0])
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
