"""Which activations get QuantizeLinear/DequantizeLinear pairs, and writing them (issue 11).

ONNX Runtime's graph optimiser turns ``DQ -> op -> Q`` node groups into integer kernels
(QLinearConv, QGemm, QLinearMatMul, QLinearAdd, QLinearConcat, QLinearGlobalAveragePool,
QLinearAveragePool) and runs MaxPool, Reshape, Flatten, Transpose, Squeeze and Unsqueeze on the
integers when their input and output share one scale and zero point. A ReLU (or Clip) whose
output grid starts at 0 is dropped: the Q before it already clamps. So, following what ORT fuses
(``tests/test_activations.py`` checks the optimised graph):

- every data input and output of a Conv/Gemm/MatMul whose weight is quantized is an activation to
  quantize, and so is the output of an Add/Concat/pooling whose inputs all are;
- MaxPool, the shape ops, ReLU and Clip pass their input's grid on: their input and output form
  one group with one scale and zero point, whose range is that of the group's outputs (a ReLU's
  input takes the ReLU's grid only when the ReLU is its only reader, so the clamp is exact);
- graph outputs stay float (the last Gemm then runs as QGemm with a float output).

Biases of quantized Conv/Gemm become int32 on the scale input scale x weight scale, which is what
QLinearConv and QGemm compute with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.measure.calibrate import QuantParams
from dfmpc_onnx.model.graph import GraphIndex, attr

CORE_OPS = ("Conv", "Gemm", "MatMul")
INTEGER_OPS = ("Add", "Concat", "GlobalAveragePool", "AveragePool")
PASS_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Relu", "Clip")
_CLAMPS = ("Relu", "Clip")


@dataclass
class ActivationPlan:
    """The activations to quantize and how they share grids.

    ``tensors``: every activation that gets a Q/DQ pair, graph order. ``group``: tensor -> the
    representative of its shared-grid group. ``range_from``: representative -> the members whose
    calibrated ranges set the group's range (a clamp's input is not among them)."""

    tensors: list[str] = field(default_factory=list)
    group: dict[str, str] = field(default_factory=dict)
    range_from: dict[str, list[str]] = field(default_factory=dict)
    clamps: dict[str, str] = field(default_factory=dict)  # ReLU/Clip output -> its input, one group
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # clamp output -> its bounds

    def elided(self, params: Mapping[str, QuantParams]) -> dict[str, str]:
        """The clamps the Q before them makes redundant: a grid whose zero point is the lowest
        code (uint8 with a range starting at 0) clamps at 0, which must be the clamp's lower
        bound, and at the top of its range, which ``params`` keeps within the upper bound.
        Clamp output -> its input; a clamp whose group stays float (not in ``params``) stays."""
        return {y: x for y, x in self.clamps.items()
                if y in params and params[y].dtype == "uint8" and params[y].zero_point == 0
                and self.bounds[y][0] == 0.0}

    def params(self, ranges: Mapping[str, tuple[float, float]], dtype: str,
               make) -> dict[str, QuantParams]:
        """Each tensor's QuantParams from the calibrated ``ranges`` (``make``: quant_params),
        never wider than the bounds of a clamp in its group (the values cannot leave them)."""
        out: dict[str, QuantParams] = {}
        for rep, members in self.range_from.items():
            lo = min(ranges[m][0] for m in members)
            hi = max(ranges[m][1] for m in members)
            for y in members:
                if y in self.bounds:
                    lo, hi = max(lo, self.bounds[y][0]), min(hi, self.bounds[y][1])
            p = make(lo, hi, dtype)
            for t in self.tensors:
                if self.group[t] == rep:
                    out[t] = p
        return out


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    if node.op_type in ("Add", "Concat"):
        return [i for i in node.input if i]
    return [node.input[0]] if node.input and node.input[0] else []


def plan_activations(graph: onnx.GraphProto, quantized_layers: Iterable[str],
                     float_tensors: set[str]) -> ActivationPlan:
    """The activations of ``graph`` to quantize around the layers ``quantized_layers`` (node
    names whose weights are DequantizeLinear outputs). ``float_tensors``: the float32 activations
    (others, integer shapes and indices, are never quantized)."""
    index = GraphIndex(graph)
    layers = set(quantized_layers)
    outputs = index.graph_outputs

    def activation(name: str) -> bool:
        return name in float_tensors and name not in index.initializers and name not in outputs

    chosen: set[str] = set()
    for node in graph.node:
        if node.name in layers and node.op_type in CORE_OPS:
            chosen.update(t for t in (node.input[0], node.output[0]) if activation(t))
    # Outputs of integer-capable ops whose inputs are all quantized, in graph order (a chain of
    # Add -> Relu -> GlobalAveragePool -> Flatten follows in one sweep).
    for node in graph.node:
        ins = _data_inputs(node)
        if node.op_type in INTEGER_OPS + PASS_OPS and ins and all(i in chosen for i in ins):
            chosen.update(o for o in node.output[:1] if activation(o))

    parent = {t: t for t in chosen}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    plan = ActivationPlan()
    clamp_inputs: set[str] = set()
    for node in graph.node:
        if node.op_type not in PASS_OPS or not node.input or not node.output:
            continue
        x, y = node.input[0], node.output[0]
        if x not in chosen or y not in chosen:
            continue
        if node.op_type in _CLAMPS:
            bounds = _clamp_bounds(node, index)
            if index.only_consumer(x) is None or bounds is None:
                continue  # other readers need the unclamped values, or unknown bounds: own grid
            clamp_inputs.add(x)
            plan.bounds[y] = bounds
            if all(y in reader.input for reader in index.consumers.get(y, [])):
                plan.clamps[y] = x  # a subgraph reading y by name keeps the clamp node
        parent[find(x)] = find(y)
    order = [t for t in index.graph_inputs if t in chosen]
    order += [o for node in graph.node for o in node.output if o in chosen]
    plan.tensors = order
    for t in order:
        rep = find(t)
        plan.group[t] = rep
        members = plan.range_from.setdefault(rep, [])
        if t not in clamp_inputs:
            members.append(t)
    for rep, members in plan.range_from.items():
        if not members:  # only clamp inputs (cannot happen: a clamp's output is a member)
            plan.range_from[rep] = [t for t in order if plan.group[t] == rep]
    return plan


def _clamp_bounds(node: onnx.NodeProto, index: GraphIndex) -> tuple[float, float] | None:
    """(low, high) of a Relu or Clip (attributes before opset 11, constant inputs after); None
    when a bound is not a constant."""
    if node.op_type == "Relu":
        return 0.0, float("inf")
    lo, hi = float(attr(node, "min", -np.inf)), float(attr(node, "max", np.inf))
    for k, name in ((1, "min"), (2, "max")):
        if len(node.input) > k and node.input[k]:
            if node.input[k] not in index.initializers:
                return None
            value = float(index.array(node.input[k]).reshape(-1)[0])
            lo, hi = (value, hi) if name == "min" else (lo, value)
    return lo, hi


def insert_activation_qdq(graph: onnx.GraphProto, params: Mapping[str, QuantParams],
                          elide: Mapping[str, str] | None = None) -> None:
    """A QuantizeLinear -> DequantizeLinear pair after each tensor of ``params``; every reader of
    the tensor reads the dequantized copy instead. ``elide`` (clamp output -> input, from
    ActivationPlan.elided): those ReLU/Clip nodes are removed and their readers read the
    dequantized input, whose grid does the clamping."""
    elide = dict(elide or {})
    index = GraphIndex(graph)
    if elide:
        for y, x in elide.items():
            for reader in index.consumers.get(y, []):
                for k, name in enumerate(reader.input):
                    if name == y:
                        reader.input[k] = x
        drop = {index.producer[y].name for y in elide}
        kept = [n for n in graph.node if n.name not in drop]  # copies: rewire first
        del graph.node[:]
        graph.node.extend(kept)
        index = GraphIndex(graph)
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for t, p in params.items():
        if t in elide:
            continue
        zp_type = onnx.TensorProto.UINT8 if p.dtype == "uint8" else onnx.TensorProto.INT8
        scale, zp = f"{t}_act_scale", f"{t}_act_zero_point"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(p.scale, dtype=np.float32), scale),
            helper.make_tensor(zp, zp_type, [], [p.zero_point])])
        pairs[t] = [helper.make_node("QuantizeLinear", [t, scale, zp], [f"{t}_act_q"],
                                     name=f"{t}_act_QuantizeLinear"),
                    helper.make_node("DequantizeLinear", [f"{t}_act_q", scale, zp],
                                     [f"{t}_act_dq"], name=f"{t}_act_DequantizeLinear")]
        for reader in index.consumers.get(t, []):
            for k, name in enumerate(reader.input):
                if name == t:
                    reader.input[k] = f"{t}_act_dq"
    nodes = [n for t in index.graph_inputs if t in pairs for n in pairs[t]]
    for node in graph.node:
        nodes.append(node)
        for o in node.output:
            nodes.extend(pairs.get(o, ()))
    del graph.node[:]
    graph.node.extend(nodes)


def quantize_biases(graph: onnx.GraphProto, layers: Iterable[str],
                    params: Mapping[str, QuantParams]) -> list[str]:
    """Int32 biases (on input scale x weight scale) for the Conv/Gemm of ``layers`` whose data
    input is quantized; returns the names of layers whose bias stayed float, and why."""
    index = GraphIndex(graph)
    nodes = {n.name: n for n in graph.node}
    kept: list[str] = []
    before: dict[str, onnx.NodeProto] = {}  # layer name -> its bias DequantizeLinear
    for name in layers:
        node = nodes.get(name)
        if node is None or node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x_dq, w_dq, b = node.input[0], node.input[1], node.input[2]
        if not b or b not in index.initializers:
            continue
        x = x_dq[: -len("_act_dq")] if x_dq.endswith("_act_dq") else None
        w_node = index.producer.get(w_dq)
        if x is None or x not in params or w_node is None or w_node.op_type != "DequantizeLinear":
            continue
        if node.op_type == "Gemm" and (attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0):
            kept.append(f"{name} (Gemm alpha/beta)")
            continue
        w_scale = index.array(w_node.input[1]).astype(np.float64)
        if attr(w_node, "block_size", 0):
            kept.append(f"{name} (block-wise weight scales)")
            continue
        bias = index.array(b).astype(np.float64).reshape(-1)
        scale = (np.float32(params[x].scale) * w_scale.astype(np.float32)).astype(np.float32)
        scale = np.broadcast_to(scale, bias.shape) if scale.ndim == 0 else scale.reshape(-1)
        safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(bias / safe), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        base = f"{name}_bias_int32"
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_q"),
            numpy_helper.from_array(safe, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(q.shape, np.int32), f"{base}_zero_point")])
        before[name] = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale",
                                                             f"{base}_zero_point"], [f"{base}_dq"],
                                        name=f"{base}_DequantizeLinear", axis=0)
        node.input[2] = f"{base}_dq"
    if before:
        ordered = []
        for node in graph.node:
            if node.name in before:
                ordered.append(before[node.name])
            ordered.append(node)
        del graph.node[:]
        graph.node.extend(ordered)
    return kept


def weight_zero_points(graph: onnx.GraphProto) -> None:
    """Give every weight DequantizeLinear without a zero point an explicit zero one of its
    integer type: the QDQ selectors of ONNX Runtime read the weight type from it."""
    index = GraphIndex(graph)
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) >= 3 and node.input[2]:
            continue
        q = index.initializers.get(node.input[0])
        s = index.initializers.get(node.input[1])
        if q is None or s is None or q.data_type not in (onnx.TensorProto.INT8,
                                                          onnx.TensorProto.UINT8):
            continue
        zp = f"{node.input[0]}_zero_point"
        if zp not in index.initializers:
            graph.initializer.append(helper.make_tensor(zp, q.data_type, list(s.dims),
                                                        [0] * int(np.prod(s.dims, dtype=np.int64))))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = zp
