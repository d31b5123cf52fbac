"""Cross-layer equalization (Nagel et al. 2019) of each pair, before quantizing.

A layer whose channels several layers read (find-pairs' groups) is equalized with all of them at
once: its channel j is divided by s_j and every reader's input channels holding it are multiplied
by s_j, so the float model is unchanged only if every path is positive-homogeneous; a path
through a kept BatchNormalization is skipped (its recorded statistics would be stale).

For a positive-homogeneous activation (ReLU, LeakyReLU, PReLU, identity), scaling A's output
channel j by 1/s_j and B's input channel j by s_j leaves the float model unchanged. Choosing
s_j = sqrt(r_A,j / r_B,j) (r: the channel's max |w|) equalises the ranges so that per-tensor
rounding stops zeroing whole channels. Kept-BN statistics recorded for A's output scale along.
"""

from __future__ import annotations

import numpy as np
import onnx

from dfmpc_onnx.model.graph import GraphIndex
from dfmpc_onnx.model.layers import as_linear_layer
from dfmpc_onnx.model.weightstore import set_array

from .base import Context, Fact, Pair


class EqualizePairs:
    name = "equalize-pairs"
    requires = (Fact.PAIRS, Fact.BN_STATS)
    provides = ()
    # Before measuring, so that what is measured is what is quantized; before choose-plan, whose
    # default (auto) plan drops the pairs: equalizing keeps the float model, so it needs none after.
    before = (Fact.MEASUREMENT, Fact.CHOSEN)

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool:
        graph = model.graph
        changed = False
        equalized = 0
        groups: dict[str, list[Pair]] = {}
        for pair in ctx.pairs:
            groups.setdefault(pair.a, []).append(pair)
        for a_name, pairs in groups.items():
            index = GraphIndex(graph)
            nodes = {n.name: n for n in graph.node}
            a, _ = as_linear_layer(nodes[a_name], index)
            bs = [as_linear_layer(nodes[p.b], index)[0] for p in pairs]
            what = f"pair {a_name} -> {', '.join(dict.fromkeys(p.b for p in pairs))}"
            if any(getattr(p.activation, "through_batchnorm", False) for p in pairs):
                ctx.report.notes.append(f"equalize: skipped {what} (a BatchNormalization "
                                        "between: its recorded statistics would not follow)")
                continue
            if a is None or any(b is None for b in bs) or not all(
                    p.activation.is_positive_homogeneous(
                        a.out_channels if p.channels is None else p.channels.size) for p in pairs):
                ctx.report.notes.append(f"equalize: skipped {what} "
                                        "(activation is not positive-homogeneous)")
                continue
            shared = [n for n in graph.node if n is not a.node and
                      (a.weight in n.input or (a.bias and a.bias in n.input))]
            for b in {b.name: b for b in bs}.values():
                shared += [n for n in graph.node if n is not b.node and b.weight in n.input]
            if shared:
                ctx.report.notes.append(f"equalize: skipped {what} "
                                        "(weights shared with other nodes)")
                continue
            w_a = a.to_canonical(index.array(a.weight).astype(np.float64))
            w_b = {b.name: b.to_canonical(index.array(b.weight).astype(np.float64)) for b in bs}
            # r_B,j: the largest |w| on A's channel j over every reader (its slice of the input)
            r_a = np.abs(w_a).max(axis=(1, 2))
            r_b = np.zeros(a.out_channels)
            for p, b in zip(pairs, bs, strict=True):
                source, target = _slices(p)
                columns = np.abs(b.dense(w_b[b.name])).max(axis=(0, 2))
                r_b[source] = np.maximum(r_b[source], columns[target])
            s = np.where((r_a > 0) & (r_b > 0), np.sqrt(r_a / np.where(r_b > 0, r_b, 1)), 1.0)
            _write(index, a.weight, a.from_canonical(w_a / s[:, None, None]), ctx)
            if a.bias:
                _write(index, a.bias, index.array(a.bias).astype(np.float64) / s, ctx)
            for b in {b.name: b for b in bs}.values():
                s_in = np.ones(b.in_channels)
                for p in pairs:
                    if p.b == b.name:
                        source, target = _slices(p)
                        s_in[target] = s[source]
                _write(index, b.weight, b.from_canonical(b.scale_inputs(w_b[b.name], s_in)), ctx)
            for name in [a.node.output[0]]:
                if name in ctx.bn_stats:
                    mean, std = ctx.bn_stats[name]
                    ctx.bn_stats[name] = (mean / s, std / s)
            changed = True
            equalized += len(pairs)
        if ctx.pairs:
            ctx.report.notes.append(f"equalize: equalized {equalized} of {len(ctx.pairs)} pairs")
        return changed


def _slices(pair: Pair) -> tuple[slice, slice]:
    """A's channels and where they are in B's input."""
    if pair.channels is None:
        return slice(None), slice(None)
    return pair.channels.source, pair.channels.target


def _write(index: GraphIndex, name: str, value: np.ndarray, ctx: Context) -> None:
    set_array(index.initializers[name], value, ctx.store)
    index.release(name)
