"""Emit QDQ: write the decisions of quantize-and-compensate into the graph.

Each quantized weight W of layer L becomes ``L_W_q`` (an INT2/INT4/INT8/INT16 or unsigned
initializer, packed, as its QuantizedTensor says), ``L_W_scale`` (and ``L_W_zero_point`` for
asymmetric grids), read by a DequantizeLinear node ``L_W_DequantizeLinear`` (with ``axis`` and
``block_size`` as the tensor says) whose output ``L_W_dq`` replaces W as the layer's input.
Corrected biases become ``L_bias_corrected``. Names derive from the layer's node name, so a weight
shared by two layers still gets one dequantized tensor per layer. Nothing else in the graph is
touched; initializers nobody reads any more are dropped.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.model.graph import GraphIndex, body_nodes, drop_unused_initializers, tensor_bytes
from dfmpc_onnx.quant.quantizers import QuantizedTensor

from .base import Context, Fact


def qdq_initializers(qt: QuantizedTensor, base: str, float_dtype, fmt: str
                     ) -> tuple[list[onnx.TensorProto], dict]:
    """The initializers (integers, scale, zero point) and DequantizeLinear attributes of ``qt``."""
    container = qt.container(fmt)
    inits = [numpy_helper.from_array(qt.q.astype(container), f"{base}_W_q"),
             numpy_helper.from_array(qt.scale.astype(float_dtype), f"{base}_W_scale")]
    if qt.zero_point is not None:
        inits.append(numpy_helper.from_array(qt.zero_point.astype(container), f"{base}_W_zero_point"))
    attrs = {}
    if qt.axis is not None:
        attrs["axis"] = qt.axis
    if qt.block_size is not None:
        attrs["block_size"] = qt.block_size
    return inits, attrs


class EmitQDQ:
    name = "emit-qdq"
    requires = (Fact.QUANTIZED, Fact.OPSET)
    provides = (Fact.QDQ,)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        index = GraphIndex(graph)
        fmt = ctx.container_format or ctx.options.format
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            # A layer inside an If/Loop/Scan body reads its DequantizeLinear's output from the
            # outer scope: the node is placed in the main graph, before the one holding the body.
            for layer in [*body_nodes(node), node]:
                qt = ctx.quantized.get(layer.name)
                if qt is not None:
                    new_nodes.append(self._dequantize(graph, index, layer, qt, ctx, fmt))
            new_nodes.append(node)
        del graph.node[:]
        graph.node.extend(new_nodes)
        drop_unused_initializers(graph)
        ctx.report.quant_weight_bytes = sum(tensor_bytes(t) for t in graph.initializer)
        wide = sorted({f"{qt.quantizer} {qt.bits}-bit -> INT{qt.container_bits(fmt)}"
                       for qt in ctx.quantized.values() if qt.container_bits(fmt) != qt.bits})
        if wide and fmt == "packed":
            ctx.report.notes.append(
                "stored in a wider container than their bits (ONNX has INT2/4/8/16 only, and the "
                f"paper's DoReFa grid of 2^k levels without zero needs k+1 bits): {', '.join(wide)}")
        return bool(ctx.quantized)

    @staticmethod
    def _dequantize(graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto,
                    qt: QuantizedTensor, ctx: Context, fmt: str) -> onnx.NodeProto:
        """Layer ``node``'s quantized weight (and corrected bias) as initializers; returns the
        DequantizeLinear that ``node`` now reads its weight from."""
        dtype = helper.tensor_dtype_to_np_dtype(index.initializers[node.input[1]].data_type)
        base = node.name
        inits, attrs = qdq_initializers(qt, base, dtype, fmt)
        graph.initializer.extend(inits)
        dq = helper.make_node("DequantizeLinear", [t.name for t in inits], [f"{base}_W_dq"],
                              name=f"{base}_W_DequantizeLinear", **attrs)
        node.input[1] = f"{base}_W_dq"
        bias = ctx.new_bias.get(node.name)
        if bias is not None:
            b_name = f"{base}_bias_corrected"
            graph.initializer.append(numpy_helper.from_array(bias.astype(dtype), b_name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = b_name
        return dq
