"""Weight-only quantized Gemm/MatMul layers written in the form ONNX Runtime fuses into its
integer-weight kernel MatMulNBits.

ONNX Runtime (1.32, CPU, default session options) fuses ``DequantizeLinear(constant int2/int4/
int8, per-tensor, per-column or blocks of 16 or more along K) -> MatMul`` and ``-> Gemm(transB=0)``
into MatMulNBits, which reads the packed integers at every call instead of a float copy: several
times faster than float at batch 1, where a layer is memory-bound (benchmarks/matmul_speed.py).
Two forms the converter would otherwise emit miss it, found by reading the optimised graphs
(tests/test_matmul_form.py keeps the finding honest):

* ``Gemm(transB=1)``, the form exporters write for ``nn.Linear`` on 2-D inputs: its weight is
  [N, K] and ORT does not fuse it. The same integers and scales transposed (the DequantizeLinear
  axis moved with them) under ``Gemm(transB=0)`` compute the same product, and fuse.
* ``MatMul -> Add(bias) -> Relu`` on 2-D inputs, or a Gemm before a Relu: ORT first makes them
  one Gemm and then FusedGemm with the Relu, which takes no quantized weight. A Gemm without C and
  the bias in a separate Add escapes that and fuses (ORT then takes the bias into MatMulNBits).
  A layer without a bias straight into a Relu does not fuse at all; a zero bias Add (x + 0 = x)
  between them makes it the case before.

Both rewrites keep every value; only the order of float additions may change.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.model.graph import GraphIndex, attr


def _transposed(t: onnx.TensorProto) -> onnx.TensorProto:
    """The 2-D initializer ``t`` transposed, same name and element type (packed types too)."""
    out = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(t).T), t.name)
    if out.data_type != t.data_type:
        raise ValueError(f"transposing {t.name} changed its element type")
    return out


def _weight_dq(node: onnx.NodeProto, index: GraphIndex) -> onnx.NodeProto | None:
    """The DequantizeLinear giving ``node`` its B from 2-D constant integers read by nothing else,
    while A is not itself dequantized (an activation-quantized layer is left to ORT's integer
    fusions), or None."""
    dq = index.producer.get(node.input[1])
    a = index.producer.get(node.input[0])
    if (dq is None or dq.op_type != "DequantizeLinear" or index.only_consumer(node.input[1]) is None
            or (a is not None and a.op_type == "DequantizeLinear")):
        return None
    inputs = [i for i in dq.input if i]
    if not all(index.is_constant(i) and index.only_consumer(i) is dq for i in inputs):
        return None
    return dq if len(index.initializers[dq.input[0]].dims) == 2 else None


def _rank(graph: onnx.GraphProto, name: str) -> int | None:
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def _feeds_relu(index: GraphIndex, name: str) -> bool:
    return any(n.op_type == "Relu" for n in index.consumers.get(name, []))


def _transpose_weight(dq: onnx.NodeProto, index: GraphIndex) -> None:
    """[N, K] integers, scales and zero points to [K, N], the DequantizeLinear axis with them."""
    for name in [i for i in dq.input if i]:
        t = index.initializers[name]
        if len(t.dims) == 2:
            t.CopyFrom(_transposed(t))
    axis = attr(dq, "axis", 1)
    kept = [a for a in dq.attribute if a.name != "axis"]
    del dq.attribute[:]
    dq.attribute.extend(kept + [helper.make_attribute("axis", 1 - (axis + 2 if axis < 0 else axis))])


def _gemm(node: onnx.NodeProto, index: GraphIndex, graph: onnx.GraphProto
          ) -> list[onnx.NodeProto] | None:
    """The fusable form of a weight-only Gemm, or None where it is one already or cannot be."""
    if attr(node, "transA", 0) != 0 or attr(node, "alpha", 1.0) != 1.0:
        return None
    dq = _weight_dq(node, index)
    trans_b = attr(node, "transB", 0)
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    beta = float(attr(node, "beta", 1.0))
    if dq is None or (trans_b == 0 and not _feeds_relu(index, node.output[0])):
        return None  # transB=0 without a Relu after it fuses as it is
    if c is not None and beta != 1.0 and not index.is_constant(c):
        return None
    if trans_b:
        _transpose_weight(dq, index)
    if c is not None and beta != 1.0:
        ct = index.initializers[c]
        scaled = (numpy_helper.to_array(ct) * beta).astype(helper.tensor_dtype_to_np_dtype(ct.data_type))
        graph.initializer.append(numpy_helper.from_array(scaled, f"{node.name}_C_beta"))
        c = f"{node.name}_C_beta"
    if c is None and _feeds_relu(index, node.output[0]):
        c = _zero_bias(node, dq, index, graph)  # beta scales a C that is not there: nothing
    out = node.output[0]
    core = f"{node.name}_product" if c else out
    nodes = [helper.make_node("Gemm", [node.input[0], node.input[1]], [core], name=node.name)]
    if c:
        nodes.append(helper.make_node("Add", [core, c], [out], name=f"{node.name}_bias"))
    return nodes


def _zero_bias(node: onnx.NodeProto, dq: onnx.NodeProto, index: GraphIndex,
               graph: onnx.GraphProto) -> str:
    """A zero bias of the layer's [K, N] weight's N outputs, in its scale's float type: x + 0 is
    x (before a Relu, -0 and +0 alike), and MatMulNBits takes the Add in."""
    n = index.initializers[dq.input[0]].dims[1]
    dtype = helper.tensor_dtype_to_np_dtype(index.initializers[dq.input[1]].data_type)
    name = f"{node.name}_zero_bias"
    graph.initializer.append(numpy_helper.from_array(np.zeros(n, dtype), name))
    return name


def _matmul(node: onnx.NodeProto, index: GraphIndex, graph: onnx.GraphProto
            ) -> list[onnx.NodeProto] | None:
    """A weight-only MatMul straight into a Relu, with a zero-bias Add between (as a Gemm on 2-D
    inputs); a 2-D one whose output goes through a constant Add into a Relu, as a Gemm without C
    (the Add and Relu stay); else None."""
    dq = _weight_dq(node, index)
    if dq is None:
        return None
    two_d = _rank(graph, node.input[0]) == 2
    if _feeds_relu(index, node.output[0]) and index.only_consumer(node.output[0]) is not None:
        core = f"{node.name}_product"
        return [helper.make_node("Gemm" if two_d else "MatMul", list(node.input), [core], name=node.name),
                helper.make_node("Add", [core, _zero_bias(node, dq, index, graph)], list(node.output),
                                 name=f"{node.name}_bias")]
    if not two_d:
        return None
    add = index.only_consumer(node.output[0])
    if add is None or add.op_type != "Add" or not any(index.is_constant(i) for i in add.input):
        return None
    if not _feeds_relu(index, add.output[0]):
        return None
    return [helper.make_node("Gemm", list(node.input), list(node.output), name=node.name)]


def fusable_linear_form(graph: onnx.GraphProto) -> list[str]:
    """Rewrite, in place, the weight-only Gemm and MatMul layers of ``graph`` that ORT would not
    fuse into MatMulNBits into forms it does (module docstring). Layers keep their names.
    Returns the names rewritten."""
    index = GraphIndex(graph)
    done: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        rule = {"Gemm": _gemm, "MatMul": _matmul}.get(node.op_type)
        replacement = rule(node, index, graph) if rule else None
        if replacement is None:
            new_nodes.append(node)
        else:
            new_nodes.extend(replacement)
            done.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done
