"""Cross-layer equalization (Nagel et al. 2019) of each pair, before quantizing.

For a positive-homogeneous activation (ReLU, LeakyReLU, PReLU, identity), scaling A's output
channel j by 1/s_j and B's input channel j by s_j leaves the float model unchanged. Choosing
s_j = sqrt(r_A,j / r_B,j) (r: the channel's max |w|) equalises the ranges so that per-tensor
rounding stops zeroing whole channels. Kept-BN statistics recorded for A's output scale along.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from dfmpc_onnx.graph import GraphIndex
from dfmpc_onnx.layers import as_linear_layer

from .base import Context


class EqualizePairs:
    name = "equalize-pairs"
    requires = ("pairs",)
    provides = ()

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        changed = False
        for pair in ctx.pairs:
            index = GraphIndex(graph)
            nodes = {n.name: n for n in graph.node}
            a, _ = as_linear_layer(nodes[pair.a], index)
            b, _ = as_linear_layer(nodes[pair.b], index)
            if a is None or b is None or not pair.activation.is_positive_homogeneous(
                    a.out_channels):
                ctx.report.notes.append(f"equalize: skipped pair {pair.a} -> {pair.b} "
                                        "(activation is not positive-homogeneous)")
                continue
            shared = [n for n in graph.node if n is not a.node and
                      (a.weight in n.input or (a.bias and a.bias in n.input))]
            shared += [n for n in graph.node if n is not b.node and b.weight in n.input]
            if shared:
                ctx.report.notes.append(f"equalize: skipped pair {pair.a} -> {pair.b} "
                                        "(weights shared with other nodes)")
                continue
            w_a = a.to_canonical(index.array(a.weight).astype(np.float64))
            w_b = b.to_canonical(index.array(b.weight).astype(np.float64))
            r_a = np.abs(w_a).max(axis=(1, 2))
            r_b = np.abs(b.dense(w_b)).max(axis=(0, 2))
            s = np.where((r_a > 0) & (r_b > 0), np.sqrt(r_a / np.where(r_b > 0, r_b, 1)), 1.0)
            _write(graph, index, a.weight, a.from_canonical(w_a / s[:, None, None]))
            if a.bias:
                _write(graph, index, a.bias, index.array(a.bias).astype(np.float64) / s)
            _write(graph, index, b.weight, b.from_canonical(b.scale_inputs(w_b, s)))
            for name in [a.node.output[0]]:
                if name in ctx.bn_stats:
                    mean, std = ctx.bn_stats[name]
                    ctx.bn_stats[name] = (mean / s, std / s)
            changed = True
        return changed


def _write(graph: onnx.GraphProto, index: GraphIndex, name: str, value: np.ndarray) -> None:
    tensor = index.initializers[name]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    tensor.CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
