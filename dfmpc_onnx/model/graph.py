"""A read-only index over an ONNX graph: who produces and who consumes each tensor.

The pipeline works on plain ``onnx.ModelProto`` (see README, "Design"): untouched nodes, subgraphs,
custom domains and external data then survive byte for byte. This index is the only graph helper;
transforms rebuild it after they change the graph instead of keeping it in sync.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from dfmpc_onnx.model.proto import LARGE_TENSOR_BYTES, opset_version, tensor_bytes  # noqa: F401 (re-exported)


class GraphIndex:
    """Producers, consumers and constants of one graph, looked up by tensor name."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            # Tensors read from inside a subgraph (If/Loop bodies) count as consumed by the node.
            for name in _subgraph_outer_inputs(node):
                self.consumers[name].append(node)
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = {o.name for o in graph.output}
        self._arrays: dict[str, np.ndarray] = {}

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def array(self, name: str) -> np.ndarray:
        """The value of an initializer (cached: large weights are decoded once)."""
        if name not in self._arrays:
            t = self.initializers[name]
            if t.data_location == onnx.TensorProto.EXTERNAL:
                from dfmpc_onnx.model.weightstore import read  # a stub: the value lives in the weight store

                self._arrays[name] = read(t)
            else:
                self._arrays[name] = numpy_helper.to_array(t)
        return self._arrays[name]

    def rows(self, name: str):
        """The value of an initializer to slice along its first axis: a weight-store stub's
        ``StoredArray`` (slices read only their rows; nothing cached), else ``array(name)``."""
        t = self.initializers[name]
        if t.data_location == onnx.TensorProto.EXTERNAL and name not in self._arrays:
            from dfmpc_onnx.model.weightstore import StoredArray

            return StoredArray(t)
        return self.array(name)

    def release(self, name: str) -> None:
        """Drop the cached value of ``name`` (it is decoded again if asked for): the quantize pass
        is done with each float weight once it is rounded, and on a large model the cache would
        otherwise hold a second float copy of every weight."""
        self._arrays.pop(name, None)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0]


def _subgraph_outer_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scope (so they are not dead tensors)."""
    names: set[str] = set()
    for _, g in bodies(node):
        local = {t.name for t in g.initializer} | {i.name for i in g.input}
        for n in g.node:
            local.update(n.output)
        for n in g.node:
            names.update(i for i in n.input if i and i not in local)
            names.update(_subgraph_outer_inputs(n) - local)
        names.update(o.name for o in g.output if o.name not in local)
    return names


def bodies(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """The subgraphs a node holds (If's branches, a Loop's or Scan's body), with their attribute
    names."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        out.extend((a.name, g) for g in a.graphs)
    return out


def body_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """Every node inside ``node``'s subgraphs, at any depth, in graph order."""
    for _, body in bodies(node):
        for inner in body.node:
            yield inner
            yield from body_nodes(inner)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The main graph's nodes and, after each, the nodes of its subgraphs (any depth): layers
    inside If/Loop bodies are layers too (their weights hoisted to main-graph initializers by
    constants-to-initializers), so every lookup of a layer by name goes through this."""
    for node in graph.node:
        yield node
        yield from body_nodes(node)


def enclosing(graph: onnx.GraphProto) -> dict[str, str]:
    """Each node inside a subgraph, by name -> where it is ("inside the then_branch of If
    'If_0'", the innermost control-flow node): the report's reason for a body layer, and the set
    of layers measure-layers checks are reached."""
    out: dict[str, str] = {}

    def visit(node: onnx.NodeProto) -> None:
        for attr_name, body in bodies(node):
            for inner in body.node:
                out[inner.name] = f"inside the {attr_name} of {node.op_type} {node.name!r}"
                visit(inner)

    for node in graph.node:
        visit(node)
    return out


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's value, or ``default`` when the node does not set it."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def topological_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in an order where every producer comes first (ONNX requires it; we re-check)."""
    return list(graph.node)


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers nothing reads (and their legacy graph-input entries, IR < 4).

    Deletes in place: rebuilding the repeated field would copy every weight (seconds and
    gigabytes on VGG-sized models)."""
    index = GraphIndex(graph)
    used = set(index.consumers) | index.graph_outputs
    dropped = {t.name for t in graph.initializer if t.name not in used}
    if not dropped:
        return
    for field in (graph.initializer, graph.input, graph.value_info):
        for i in reversed([i for i, item in enumerate(field) if item.name in dropped]):
            del field[i]
