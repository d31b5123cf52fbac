"""Find pairs: A -> activation -> B, where B reads only A's (activated) output channel by channel;
else (``pair_through``) A with every layer reading its channels through Concat, Split, a Slice of
the channels, branches and a kept BatchNormalization, where each reader's input channel is a
function of one of A's (dfmpc_onnx.model.channels).

Analysis only: fills ``ctx.layers`` (every quantizable layer, graph order), ``ctx.pairs`` and a
report entry for every Conv/Gemm/MatMul, with the reason when one is left alone.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import numpy as np
import onnx

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.model.activation import find_activation
from dfmpc_onnx.model.channels import follow
from dfmpc_onnx.model.graph import GraphIndex, all_nodes, enclosing
from dfmpc_onnx.model.layers import LINEAR_OPS, LinearLayer, as_linear_layer, channel_axis
from dfmpc_onnx.model.shapes import Shapes
from dfmpc_onnx.quant.quantizers.base import slices_of
from dfmpc_onnx.report import PARTNER_SEP, LayerReport

from .base import Context, Fact, Pair


def tensor_rank(graph: onnx.GraphProto, name: str) -> int | None:
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == name and vi.type.HasField("tensor_type"):
            if vi.type.tensor_type.HasField("shape"):
                return len(vi.type.tensor_type.shape.dim)
    return None


def output_rank(graph: onnx.GraphProto, layer: LinearLayer) -> int | None:
    """Rank of a layer's output: from shapes, else a Conv's weight rank, else 2 for Gemm."""
    rank = tensor_rank(graph, layer.node.output[0])
    if rank is None and layer.op in ("Conv", "ConvTranspose"):
        return len(layer.stored_shape)
    if rank is None and layer.op == "Gemm":
        return 2
    return rank


class FindPairs:
    name = "find-pairs"
    requires = (Fact.NAMES, Fact.CONSTANTS, Fact.SHAPES)
    provides = (Fact.LAYERS, Fact.PAIRS)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        index = GraphIndex(graph)
        layers: dict[str, LinearLayer] = {}
        inside = enclosing(graph)
        for node in all_nodes(graph):
            if node.op_type not in LINEAR_OPS or node.domain not in ("", "ai.onnx"):
                continue
            layer, reason = as_linear_layer(node, index)
            if layer is not None:
                rows = index.rows(layer.weight)  # a block of rows at a time from a weight store
                finite = all(np.isfinite(rows[p]).all() for p in slices_of(rows.shape, 0))
                index.release(layer.weight)  # decoded only for this check; quantize decodes it again
                if not finite:
                    # No scale represents NaN or Inf; rounding would silently turn them into numbers.
                    layer, reason = None, "weight holds NaN or Inf values"
            entry = LayerReport(node.name, node.op_type)
            if layer is None:
                entry.reason = f"{inside[node.name]}: {reason}" if node.name in inside else reason
            else:
                layers[node.name] = layer
                entry.params = int(layer.out_channels * layer.canonical_shape[1]
                                   * layer.canonical_shape[2])
                ctx.layers.append(node.name)
            ctx.report.layers.append(entry)
        if not ctx.layers:
            _nothing_to_quantize(graph, ctx)
        body_layers = [n for n in ctx.layers if n in inside]
        if body_layers and ctx.options.integer_kernels:
            _no_int8_inside(body_layers, inside, ctx)

        protected = set()
        if ctx.options.protect_first_last and ctx.layers:
            protected = {ctx.layers[0], ctx.layers[-1]}
        # Layers the plan file keeps in float are in no pair: pairing them would leave their
        # partner single without a reason once plan-bits drops the pair.
        kept_float = {n for n, raw in ctx.options.plan.items()
                      if n in layers and ctx.options.plan_entry(n, raw) is None}
        shapes = Shapes(graph)
        order = {name: i for i, name in enumerate(ctx.layers)}
        used_a: set[str] = set()
        used_b: set[str] = set()
        for name in ctx.layers:
            a = layers[name]
            if name in used_a or name in used_b or name in kept_float:
                continue
            entry = ctx.report.layer(name)
            if name in inside:
                entry.reason = f"{inside[name]}: quantized alone, never paired"
                continue
            if name in protected:
                entry.reason = ("first/last layer: never a pair's low-bit layer "
                                "(--no-protect-first-last pairs it)")
                continue
            b, phi, why = _partner(graph, index, a, layers)
            if b is not None:
                if b.name in used_a or b.name in used_b:
                    entry.reason = f"partner {b.name!r} already paired"
                    continue
                if b.name in kept_float:
                    entry.reason = f"partner {b.name!r} is kept in float by the plan"
                    continue
                pairs = [Pair(a.name, b.name, phi)]
            elif ctx.options.pair_through:
                pairs, why = _readers(graph, index, shapes, a, layers, used_a, kept_float)
                pairs.sort(key=lambda p: (order[p.b], p.channels.offset))
            else:
                pairs = []
            if not pairs:
                entry.reason = why or "no layer reads its output channel by channel"
                continue
            ctx.pairs.extend(pairs)
            used_a.add(a.name)
            used_b.update(p.b for p in pairs)
            label = _joined(p.activation.label for p in pairs)
            entry.partner, entry.activation = _joined(p.b for p in pairs), label
            entry.reason = ""
            for p in pairs:
                b_entry = ctx.report.layer(p.b)
                b_entry.partner = _joined([*(b_entry.partner or "").split(PARTNER_SEP), a.name])
                b_entry.activation, b_entry.reason = p.activation.label, ""
        if ctx.options.method != "auto":  # the measured plan does not use pairs
            ctx.report.notes.append(f"{len(ctx.pairs)} pairs among {len(ctx.layers)} layers")
        return False


# Operators of a model that is already quantized (ONNX Runtime's quantizers write these).
QUANTIZED_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
                           "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
                           "MatMulNBits", "QGemm", "QuantizeLinear", "DequantizeLinear"})


def _nothing_to_quantize(graph: onnx.GraphProto, ctx: Context) -> None:
    """No layer can be quantized: an explicit --target-bits or --activations int8 is refused
    (the model would be written unchanged with exit 0), and the default says why."""
    ops = sorted({n.op_type for n in all_nodes(graph)} & QUANTIZED_OPS)
    entries = ctx.report.layers
    if ops:
        why = f"the model is already quantized ({', '.join(ops)}); convert its float export"
    elif entries:
        why = (f"none of its {len(entries)} Conv/ConvTranspose/Gemm/MatMul layers can be (e.g. "
               f"{entries[0].name}: {entries[0].reason})")
    else:
        why = "it has no Conv/ConvTranspose/Gemm/MatMul layer"
    asked = ctx.options.explicit_request
    if asked is not None:
        raise OptionsError(f"{asked}: nothing to quantize: {why}")
    ctx.report.notes.append(f"nothing quantized: {why}; the output computes what the input does")


def _no_int8_inside(body_layers: list[str], inside: dict[str, str], ctx: Context) -> None:
    """Int8 activations are not inserted inside If/Loop/Scan bodies: their layers keep int8
    weights and float activations (said in the report); where no layer is outside a body,
    ``--activations int8`` cannot be honoured and is refused, never written as weight-only."""
    if len(body_layers) == len(ctx.layers):
        raise OptionsError(
            f"--activations int8: all {len(body_layers)} Conv/Gemm/MatMul layers of this model are "
            f"inside If/Loop/Scan bodies (e.g. {body_layers[0]}, {inside[body_layers[0]]}), where "
            "this version inserts no activation quantization; convert without --activations for "
            "weight-only quantization (which does quantize them), or an export without control flow")
    ctx.report.notes.append(
        f"--activations int8: {len(body_layers)} layer(s) inside If/Loop/Scan bodies keep float "
        f"activations (int8 weights only): {', '.join(body_layers[:3])}"
        + (" ..." if len(body_layers) > 3 else ""))


def _partner(graph: onnx.GraphProto, index: GraphIndex, a: LinearLayer,
             layers: dict[str, LinearLayer]):
    """B and the activation between, or (None, None, reason)."""
    if a.op == "ConvTranspose":
        return None, None, "ConvTranspose is quantized alone"
    z = a.node.output[0]
    axis = channel_axis(a)
    phi = find_activation(index, z, output_rank(graph, a), axis)
    if phi is None:
        return None, None, "output is not followed by a single elementwise activation"
    h = phi.exit
    consumer = index.only_consumer(h)
    if consumer is None or consumer.name not in layers:
        return None, None, _why_no_partner(index, h, bool(phi.nodes))
    b = layers[consumer.name]
    if b.op == "ConvTranspose" or consumer.input[0] != h:
        return None, None, "next layer does not read the activation as its data input"
    if channel_axis(b) != axis and output_rank(graph, a) != 2:
        return None, None, f"channel layouts differ ({a.op} -> {b.op})"
    if b.in_channels != a.out_channels:
        return None, None, f"channel counts differ ({a.out_channels} -> {b.in_channels})"
    for value in phi.constants.values():
        if value.ndim and len(value) != a.out_channels:
            return None, None, "activation constants do not match the channel count"
    return b, phi, ""


def _readers(graph: onnx.GraphProto, index: GraphIndex, shapes: Shapes, a: LinearLayer,
             layers: dict[str, LinearLayer], used_a: set[str], kept_float: AbstractSet[str] = frozenset()
             ) -> tuple[list[Pair], str]:
    """A's pairs with every layer reading its channels (dfmpc_onnx.model.channels), or ([], why not).
    A reader may already compensate another layer's channels (a Concat's other inputs), but not
    be a low-bit layer itself, nor a layer the plan keeps in float."""
    if a.op == "ConvTranspose":
        return [], "ConvTranspose is quantized alone"
    readers, why = follow(index, shapes, a, channel_axis(a), output_rank(graph, a), layers)
    for r in readers:
        if r.layer.name in used_a or r.layer.name == a.name:
            return [], f"reader {r.layer.name!r} is already the low-bit layer of a pair"
        if r.layer.name in kept_float:
            return [], f"reader {r.layer.name!r} is kept in float by the plan"
    return [Pair(a.name, r.layer.name, r.path, r.channels) for r in readers], why


def _joined(names) -> str:
    """Distinct non-empty names in order, joined as the report shows several partners."""
    return PARTNER_SEP.join(dict.fromkeys(n for n in names if n))


def _why_no_partner(index: GraphIndex, h: str, has_activation: bool) -> str:
    """Name what the output feeds instead of one quantizable layer (Add of a residual, a Concat,
    several branches), so users see the graph's shape rather than a rule."""
    what = "activation output" if has_activation else "output (no activation)"
    users = index.consumers.get(h, [])
    if h in index.graph_outputs:
        return f"{what} is a graph output"
    if len(users) > 1:
        return f"{what} feeds {len(users)} nodes ({', '.join(sorted({u.op_type for u in users}))})"
    if users:
        return f"{what} feeds {users[0].op_type} {users[0].name!r}, not a planned Conv/Gemm/MatMul"
    return f"{what} is not used"
