"""Normalise: make every model look the same to the later passes.

Constant / ConstantOfShape weights become initializers, shapes are inferred, and BatchNormalization
is folded into the layer before it after its statistics are recorded (they are the best data-free
evidence of the activations we have). The opset is upgraded later (passes/upgrade_opset.py), once
the quantized tensors say which opset their DequantizeLinear needs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from dfmpc_onnx.errors import UnsupportedModelError
from dfmpc_onnx.model.graph import (
    GraphIndex,
    all_nodes,
    attr,
    bodies,
    body_nodes,
    drop_unused_initializers,
    opset_version,
)
from dfmpc_onnx.model.layers import LINEAR_OPS, as_linear_layer
from dfmpc_onnx.model.opset import light_copy
from dfmpc_onnx.model.weightstore import set_array

from .base import BnFold, Context, Fact


class ConstantsToInitializers:
    """Constant and ConstantOfShape (with a constant shape) nodes of the main graph -> initializers;
    the weights of layers inside If/Loop/Scan bodies -> main-graph initializers too."""

    name = "constants-to-initializers"
    requires = ()
    provides = (Fact.CONSTANTS,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        keep = []
        changed = False
        known = {t.name: t for t in graph.initializer}
        outputs = {o.name for o in graph.output}
        for node in graph.node:
            value = None
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute:
                a = node.attribute[0]
                if a.name == "value":
                    value = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_int"):
                    value = np.asarray(onnx.helper.get_attribute_value(a),
                                       np.float32 if a.name == "value_float" else np.int64)
                elif a.name in ("value_floats", "value_ints"):
                    value = np.asarray(onnx.helper.get_attribute_value(a),
                                       np.float32 if a.name == "value_floats" else np.int64)
            elif (node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx")
                  and node.input and node.input[0] in known):
                tensor = _fill(graph, node, numpy_helper.to_array(known[node.input[0]]))
                if tensor is not None:
                    known[tensor.name] = tensor
                    changed = True
                    continue
            elif node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx") and node.input and all(
                    i in known for i in node.input if i) and node.output[0] not in outputs:
                value = _fold(node, [numpy_helper.to_array(known[i]) if i else None for i in node.input])
            if value is None:
                keep.append(node)
                continue
            tensor = numpy_helper.from_array(value, node.output[0])
            graph.initializer.append(tensor)
            known[tensor.name] = tensor
            changed = True
        changed = _hoist_body_weights(graph) or changed
        if changed:
            del graph.node[:]
            graph.node.extend(keep)
            # The shapes fed to ConstantOfShape are dead now (legacy exports also list them as
            # graph inputs, which drop_unused_initializers removes with them).
            drop_unused_initializers(graph)
            if model.ir_version < 4:
                # IR < 4 requires every initializer to be a graph input; the new ones are not.
                # IR 4 allows plain initializers and reads the old inputs-with-defaults the same.
                model.ir_version = 4
        return changed


def _hoist_body_weights(graph: onnx.GraphProto) -> bool:
    """Weights and biases of the layers inside If/Loop/Scan bodies (a body's Constant nodes or
    initializers) -> main-graph initializers, which the body reads from the outer scope (ONNX's
    lexical scoping). Every layer pass looks weights up among the main graph's initializers;
    hoisted, a body layer is quantized like any other, its DequantizeLinear in the main graph
    (emit-qdq). A name another scope also defines (sibling branches may reuse names) is renamed
    where the body reads it."""
    defined: dict[str, int] = {}
    for name in [t.name for t in graph.initializer] + [i.name for i in graph.input]:
        defined[name] = defined.get(name, 0) + 1
    for node in all_nodes(graph):
        for name in node.output:
            defined[name] = defined.get(name, 0) + 1
        for _, body in bodies(node):
            for name in [t.name for t in body.initializer] + [i.name for i in body.input]:
                defined[name] = defined.get(name, 0) + 1
    changed = False
    for node in graph.node:
        for _, body in bodies(node):
            changed = _hoist_from(body, graph, defined) or changed
    return changed


def _hoist_from(body: onnx.GraphProto, main: onnx.GraphProto, defined: dict[str, int]) -> bool:
    wanted = {n.input[k] for n in body.node if n.op_type in LINEAR_OPS and n.domain in ("", "ai.onnx")
              for k in (1, 2) if len(n.input) > k and n.input[k]}
    # Not a body output, nor a body input (a legacy subgraph lists its initializers as inputs: a
    # value a Loop iteration may pass in stays where it is).
    wanted -= {o.name for o in body.output} | {i.name for i in body.input}
    found: dict[str, onnx.TensorProto] = {}
    for i in reversed(range(len(body.initializer))):
        if body.initializer[i].name in wanted:
            t = onnx.TensorProto()
            t.CopyFrom(body.initializer[i])
            found[t.name] = t
            del body.initializer[i]
    for i in reversed(range(len(body.node))):
        n = body.node[i]
        if (n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1
                and n.output[0] in wanted and len(n.attribute) == 1 and n.attribute[0].name == "value"):
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            found[t.name] = t
            del body.node[i]
    for name, t in found.items():
        new, k = name, 1
        while defined.get(new, 0) > (1 if new == name else 0):
            new, k = f"{name}_hoisted{k}", k + 1
        if new != name:
            _rename_reads(body, name, new)
            defined[new] = 1
            t.name = new
        main.initializer.append(t)
        for j in reversed([j for j, vi in enumerate(body.value_info) if vi.name == name]):
            del body.value_info[j]
    changed = bool(found)
    for n in body.node:  # nested bodies hoist to the main graph as well
        for _, inner in bodies(n):
            changed = _hoist_from(inner, main, defined) or changed
    return changed


def _rename_reads(g: onnx.GraphProto, old: str, new: str) -> None:
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new
        for _, inner in bodies(n):
            _rename_reads(inner, old, new)


_MAX_FILL_BYTES = 4 << 30
# Shape-only ops on constants: legacy exports reshape or transpose a weight before its Gemm/Conv,
# which would otherwise hide the weight ("weight is not a constant"), and unsqueeze a BN's scale
# and shift to (C, 1, 1) before a Mul and an Add (Caffe2's DenseNet and Inception v2), which
# would otherwise hide the per-channel activation between two layers.
_FOLDABLE = ("Reshape", "Transpose", "Identity", "Unsqueeze", "Squeeze")


def _fold(node: onnx.NodeProto, values: list[np.ndarray | None]) -> np.ndarray | None:
    """The value of a shape-only op on constant inputs, or None to keep the node."""
    x = values[0]
    if x is None:
        return None
    if node.op_type == "Identity":
        return x
    if node.op_type == "Transpose":
        perm = attr(node, "perm", None)
        if perm is not None and sorted(perm) != list(range(x.ndim)):
            return None
        return np.transpose(x, perm)
    if node.op_type in ("Unsqueeze", "Squeeze"):
        return _fold_squeeze(node, x, values[1] if len(values) > 1 else None)
    shape = values[1] if len(values) > 1 else None  # Reshape
    if shape is None or shape.ndim != 1 or shape.dtype.kind not in "iu":
        return None
    target = [int(d) for d in shape]
    if not attr(node, "allowzero", 0):
        if any(d == 0 and i >= x.ndim for i, d in enumerate(target)):
            return None
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    try:
        return x.reshape(target)
    except ValueError:
        return None


def _fold_squeeze(node: onnx.NodeProto, x: np.ndarray, axes_input: np.ndarray | None
                  ) -> np.ndarray | None:
    """Unsqueeze or Squeeze of a constant; axes from the attribute (opset < 13) or the input."""
    axes = attr(node, "axes", None)
    if axes is None and axes_input is not None:
        axes = [int(a) for a in np.asarray(axes_input).reshape(-1)]
    try:
        if node.op_type == "Squeeze":
            return np.squeeze(x) if axes is None else np.squeeze(x, tuple(a % max(x.ndim, 1)
                                                                            for a in axes))
        if axes is None:
            return None
        rank = x.ndim + len(axes)
        return np.expand_dims(x, tuple(sorted(a % rank for a in axes)))
    except (ValueError, np.exceptions.AxisError):
        return None


def _fill(graph: onnx.GraphProto, node: onnx.NodeProto, shape: np.ndarray) -> onnx.TensorProto | None:
    """Add the initializer a ConstantOfShape with a known shape produces, or None to keep the node
    (a shape that is not a vector of non-negative sizes, or absurdly large: the runtime decides).

    Legacy exports (onnx's light models) make every weight this way; repeating the fill's bytes
    is several times faster than np.full + from_array on hundreds of megabytes."""
    if shape.ndim != 1 or shape.dtype.kind not in "iu" or (shape < 0).any():
        return None
    fill = attr(node, "value", None)
    value = (numpy_helper.to_array(fill).reshape(-1)[:1] if fill is not None
             else np.zeros(1, np.float32))
    if value.size != 1 or value.dtype == object:
        return None
    count = int(np.prod(shape.astype(object)))  # exact, no int64 overflow
    if count * value.dtype.itemsize > _MAX_FILL_BYTES:
        return None
    tensor = graph.initializer.add(name=node.output[0], dims=[int(d) for d in shape],
                                   data_type=onnx.helper.np_dtype_to_tensor_dtype(value.dtype))
    tensor.raw_data = value.astype(value.dtype.newbyteorder("<")).tobytes() * count  # in place
    return tensor


class CheckOpset:
    """Refuse, first, an opset newer than the installed onnx knows: nothing after could be trusted."""

    name = "check-opset"
    requires = ()
    provides = (Fact.OPSET_KNOWN,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        current = opset_version(model)
        ctx.report.opset_in = ctx.report.opset_out = current
        newest = onnx.defs.onnx_opset_version()
        if current > newest:
            raise UnsupportedModelError(
                f"model uses ai.onnx opset {current}; this onnx {onnx.__version__} knows up to "
                f"{newest}: upgrade the onnx package")
        return False


class NameNodes:
    """Give every node a unique name, subgraphs included (their layers are quantized too): the
    report, the plan file and the emitted tensor names all refer to layers by node name. Existing
    unique names are kept."""

    name = "name-nodes"
    requires = ()
    provides = (Fact.NAMES,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        seen: set[str] = set()
        changed = False
        # Main-graph nodes first: where a body node has a main node's name, the body's is renamed.
        graph = model.graph
        nodes = list(graph.node) + [n for node in graph.node for n in body_nodes(node)]
        for i, node in enumerate(nodes):
            if not node.name or node.name in seen:
                base = node.name or f"{node.op_type}_{i}"
                name, k = base, 1
                while name in seen:
                    name, k = f"{base}_{k}", k + 1
                node.name = name
                changed = True
            seen.add(node.name)
        return changed


class InferShapes:
    """ONNX shape inference, so passes know ranks and channel counts. Failure is only a note."""

    name = "infer-shapes"
    requires = ()
    provides = (Fact.SHAPES,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        try:  # on a light copy: weights' values never matter to shapes
            inferred = shape_inference.infer_shapes(light_copy(model), strict_mode=False,
                                                    data_prop=True)
        except Exception as exc:  # noqa: BLE001
            ctx.report.notes.append(f"shape inference failed ({exc}); continuing without shapes")
            return False
        model.graph.ClearField("value_info")
        model.graph.value_info.extend(inferred.graph.value_info)
        return True


class FoldBatchNorm:
    """Record each BatchNormalization's statistics, then fold it into the layer before it.

    After folding, the layer writes the BN's output tensor, so ``ctx.bn_stats[tensor]`` describes
    the float model's values there: mean beta, std |gamma| (what BN was trained to produce).
    A BN that cannot be folded (its input is not a layer's private output) stays in the graph with
    its statistics recorded all the same.
    """

    name = "fold-batchnorm"
    requires = (Fact.CONSTANTS,)
    provides = (Fact.BN_STATS,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        index = GraphIndex(graph)
        weight_users: dict[str, int] = {}
        for node in graph.node:
            for name in node.input[1:]:
                weight_users[name] = weight_users.get(name, 0) + 1
        removed: set[int] = set()
        changed = False
        for bn in list(graph.node):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            if len([o for o in bn.output if o]) != 1 or attr(bn, "training_mode", 0):
                continue
            if not all(index.is_constant(n) for n in bn.input[1:5]):
                continue
            gamma, beta, mean, var = (index.array(n).astype(np.float64) for n in bn.input[1:5])
            if not all(v.ndim == 1 and v.shape == gamma.shape for v in (beta, mean, var)):
                continue  # not per-channel vectors: an invalid model, left for the checks to name
            eps = float(attr(bn, "epsilon", 1e-5))
            if not (var + eps > 0).all():
                continue  # an invalid BN (variance <= -eps): left for the checks to name
            ctx.bn_stats[bn.output[0]] = (beta, np.abs(gamma))
            producer = index.producer.get(bn.input[0])
            if producer is None or index.only_consumer(bn.input[0]) is not bn:
                continue
            layer, _ = as_linear_layer(producer, index)
            if layer is None or layer.op == "MatMul" or weight_users.get(layer.weight, 0) != 1:
                continue
            if layer.bias is not None and weight_users.get(layer.bias, 0) != 1:
                continue
            if layer.out_channels != len(gamma):
                continue
            k = gamma / np.sqrt(var + eps)
            w_tensor = index.initializers[layer.weight]
            w = layer.to_canonical(index.array(layer.weight).astype(np.float64)) * k[:, None, None]
            index.release(layer.weight)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(w_tensor.data_type)
            set_array(w_tensor, layer.from_canonical(w), ctx.store)
            del w
            b = index.array(layer.bias).astype(np.float64) if layer.bias else 0.0
            b = (b - mean) * k + beta
            if layer.bias:
                set_array(index.initializers[layer.bias], b, ctx.store)
            else:
                bias_name = f"{producer.name or layer.weight}_bn_bias"
                graph.initializer.append(numpy_helper.from_array(b.astype(dtype), bias_name))
                while len(producer.input) < 3:
                    producer.input.append("")
                producer.input[2] = bias_name
            producer.output[0] = bn.output[0]
            ctx.bn_fold[producer.name] = BnFold(k, beta)
            removed.add(id(bn))
            changed = True
        if changed:
            keep = [n for n in graph.node if id(n) not in removed]
            del graph.node[:]
            graph.node.extend(keep)
            drop_unused_initializers(graph)
        return changed
