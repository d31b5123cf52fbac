"""Emit QDQ: write the decisions of quantize-and-compensate into the graph.

Each quantized weight W of layer L becomes ``L_W_q`` (INT2/INT4/INT8 initializer, packed) and
``L_W_scale``, read by a DequantizeLinear node ``L_W_DequantizeLinear`` whose output ``L_W_dq``
replaces W as the layer's input. Corrected biases become ``L_bias``. Names derive from the layer's
node name, so a weight shared by two layers still gets one dequantized tensor per layer. Nothing
else in the graph is touched; initializers nobody reads any more are dropped.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.graph import GraphIndex, drop_unused_initializers, tensor_bytes
from dfmpc_onnx.quant import storage_bits, to_tensor

from .base import Context


def _float_dtype(tensor: onnx.TensorProto):
    return onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)


class EmitQDQ:
    name = "emit-qdq"

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        index = GraphIndex(graph)
        fmt = ctx.options.format
        before = sum(tensor_bytes(t) for t in graph.initializer)
        new_nodes: list[onnx.NodeProto] = []
        ideal = 0.0
        for node in graph.node:
            qw = ctx.quantized.get(node.name)
            if qw is None:
                new_nodes.append(node)
                continue
            w_tensor = index.initializers[node.input[1]]
            dtype = _float_dtype(w_tensor)
            base = node.name
            q_name, s_name, dq_name = f"{base}_W_q", f"{base}_W_scale", f"{base}_W_dq"
            graph.initializer.append(to_tensor(qw, q_name, fmt))
            graph.initializer.append(numpy_helper.from_array(qw.scale.astype(dtype), s_name))
            attrs = {} if qw.axis is None else {"axis": qw.axis}
            new_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name], [dq_name],
                                              name=f"{base}_W_DequantizeLinear", **attrs))
            node.input[1] = dq_name
            ideal += qw.q.size * qw.bits / 8 + qw.scale.size * np.dtype(dtype).itemsize
            bias = ctx.new_bias.get(node.name)
            if bias is not None:
                b_name = f"{base}_bias_corrected"
                graph.initializer.append(numpy_helper.from_array(bias.astype(dtype), b_name))
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = b_name
            new_nodes.append(node)
        del graph.node[:]
        graph.node.extend(new_nodes)
        drop_unused_initializers(graph)
        after = sum(tensor_bytes(t) for t in graph.initializer)
        ctx.report.float_weight_bytes = before
        ctx.report.quant_weight_bytes = after
        unquantized = after - sum(tensor_bytes(t) for t in graph.initializer
                                  if t.name.endswith(("_W_q", "_W_scale")))
        ctx.report.ideal_weight_bytes = int(ideal + unquantized)
        if fmt == "packed":
            odd = sorted({qw.bits for qw in ctx.quantized.values()
                          if storage_bits(qw.bits, fmt) != qw.bits})
            if odd:
                ctx.report.notes.append(
                    f"{'/'.join(map(str, odd))}-bit weights are stored in the next container "
                    "(INT4 or INT8): ONNX has no INT3/INT5-7")
        return bool(ctx.quantized)
