"""Where a layer's output channels go: through elementwise activations, a kept BatchNormalization,
Concat, Split and a Slice of the channel axis, to every layer that reads them.

A low-bit layer A can be compensated in each layer B that reads its channels when B's input
channel ``offset + j`` is a function of A's output channel j alone (``ChannelPath``): then our
compensations, which see B's input only through that function's two-stream statistics, act on
A's channel j and on nothing else, and the paper's factor, folded into A's own output channels,
reaches every reader the same way. ``follow`` finds the readers and refuses, with the reason a
report can show, when any reader of A's channels is not such a layer: a residual Add or a gating
Mul mixes in another tensor, a pooling or a Reshape moves values across positions or channels, a
graph output cannot be compensated. A factor some reader of the channel does not take is not exact,
so there is no pair then.

What passes a positive per-channel scale exactly (what cross-layer equalization needs) is
narrower: ``ChannelPath.is_positive_homogeneous`` checks the function numerically, as
``Activation`` does (ReLU, LeakyReLU, PReLU: yes; GELU, SiLU, a kept BN's shift: no).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from dfmpc_onnx.model.activation import ELEMENTWISE_OPS, Activation, find_activation, positive_homogeneous
from dfmpc_onnx.model.graph import GraphIndex, attr
from dfmpc_onnx.model.layers import LINEAR_OPS, LinearLayer
from dfmpc_onnx.model.shapes import Shapes
from dfmpc_onnx.stats.propagate import single_node_activation

MAX_TENSORS = 512  # tensors visited from one layer's output (a DenseNet block visits ~100)


@dataclass(frozen=True)
class ChannelMap:
    """A's output channels [start, stop) are the reader's input channels [offset, offset + size)."""

    start: int
    stop: int
    offset: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def source(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def target(self) -> slice:
        return slice(self.offset, self.offset + self.size)

    def __str__(self) -> str:
        return f"[{self.start}:{self.stop}]->[{self.offset}:{self.offset + self.size}]"


@dataclass(frozen=True)
class Affine:
    """A BatchNormalization kept in the graph (pre-activation: BN -> ReLU -> conv on a Concat),
    on the channels of A that pass it: ``k * x + b``."""

    k: np.ndarray
    b: np.ndarray
    label = "BatchNormalization"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (np.ndim(x) - 1)
        return np.asarray(x, np.float64) * self.k.reshape(shape) + self.b.reshape(shape)

    def cut(self, i: int, j: int) -> Affine:
        return Affine(self.k[i:j], self.b[i:j])


def _cut(step: Activation | Affine, i: int, j: int) -> Activation | Affine:
    """The step on channels [i, j) of those it was made for."""
    if isinstance(step, Affine):
        return step.cut(i, j)
    return replace(step, constants={k: (v[i:j] if v.ndim and v.size > 1 else v)
                                    for k, v in step.constants.items()})


@dataclass(frozen=True)
class ChannelPath:
    """The per-channel function from A's output channels to a reader's input channels, with the
    words of the route (Concat, Split) for the report."""

    steps: tuple[Activation | Affine, ...] = ()
    route: tuple[str, ...] = ()
    # The reader's channel is A's channel (through the steps) times something that does not
    # depend on A: a gate (SwiGLU's up * act(gate)), attention weights (V -> attention -> output
    # projection). A positive factor passes exactly; the channel's statistics are not a function
    # of A's channel alone, so our statistical compensations do not apply.
    scale_only: bool = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = step(x)
        return np.asarray(x, np.float64)

    @property
    def label(self) -> str:
        return "+".join(self.route) or "identity"

    @property
    def through_batchnorm(self) -> bool:
        return any(isinstance(s, Affine) for s in self.steps)

    def is_positive_homogeneous(self, channels: int) -> bool:
        return positive_homogeneous(self, channels)

    def then(self, step: Activation | Affine | None, word: str | None,
             scale_only: bool = False) -> ChannelPath:
        steps = self.steps + ((step,) if step is not None else ())
        return ChannelPath(steps, self.route + ((word,) if word else ()),
                           self.scale_only or scale_only)

    def cut(self, i: int, j: int) -> ChannelPath:
        return replace(self, steps=tuple(_cut(s, i, j) for s in self.steps))


@dataclass(frozen=True)
class Reader:
    """A layer that reads channels of A as its data input, where, and through what function."""

    layer: LinearLayer
    channels: ChannelMap
    path: ChannelPath


@dataclass(frozen=True)
class _At:
    """A's channels [lo, hi) sit at channels [pos, pos + hi - lo) of ``tensor`` (``count`` in all).

    ``heads``: the channels are split into attention heads, (axis of the head, axis of the
    channel within it, channels per head), axes counted from the end: channel h * D + d."""

    tensor: str
    lo: int
    hi: int
    pos: int
    count: int
    path: ChannelPath
    heads: tuple[int, int, int] | None = None


def follow(index: GraphIndex, shapes: Shapes, a: LinearLayer, axis: int, rank: int | None,
           layers: dict[str, LinearLayer]) -> tuple[list[Reader], str]:
    """Every layer reading A's output channels, or ([], why not) when some reader of them is not
    a layer that can take a factor per channel (see the module's docstring)."""
    readers: list[Reader] = []
    todo = [_At(a.node.output[0], 0, a.out_channels, 0, a.out_channels, ChannelPath())]
    visited = 0
    while todo:
        at = todo.pop()
        visited += 1
        if visited > MAX_TENSORS:
            return [], f"output reaches more than {MAX_TENSORS} tensors"
        if at.tensor in index.graph_outputs:
            return [], f"output reaches a graph output ({at.tensor!r})"
        t_rank = shapes.rank(at.tensor) or rank
        phi = None if at.heads else find_activation(index, at.tensor, t_rank, axis)
        if phi is not None and phi.nodes:  # one region takes every use of the tensor
            step, why = _activation_step(phi, at)
            if step is None:
                return [], why
            todo.append(replace(at, tensor=phi.exit, path=at.path.then(step, phi.label)))
            continue
        users = {id(n): n for n in index.consumers.get(at.tensor, [])}  # Concat[x, x]: once
        for node in users.values():
            if at.heads:
                nxt, found, why = _through_heads(index, shapes, node, at, a)
            else:
                nxt, found, why = _through(index, shapes, node, at, axis, t_rank, layers, a)
            if why:
                return [], why
            todo.extend(nxt)
            readers.extend(found)
    if not readers:
        return [], "output is not read by any layer"
    return readers, ""


def _activation_step(phi: Activation, at: _At) -> tuple[Activation | None, str]:
    """phi on A's channels, or None when its constants are not one per channel of the tensor."""
    for value in phi.constants.values():
        if value.ndim and value.size > 1 and len(value) != at.count:
            return None, "activation constants do not match the channel count"
    return _cut(phi, at.pos, at.pos + at.hi - at.lo), ""


def _through(index: GraphIndex, shapes: Shapes, node: onnx.NodeProto, at: _At, axis: int,
             rank: int | None, layers: dict[str, LinearLayer], a: LinearLayer
             ) -> tuple[list[_At], list[Reader], str]:
    """One use of ``at.tensor``: where A's channels go next, the layers that read them, or why
    that use cannot take a per-channel factor."""
    where = f"{node.op_type} {node.name!r}"
    if node.domain not in ("", "ai.onnx"):
        return [], [], f"output reaches {where}, a custom operator"
    default_axis = 0 if node.op_type == "Split" else axis
    on_axis = rank is not None and int(attr(node, "axis", default_axis)) % rank == axis % rank
    if node.name in layers:
        b = layers[node.name]
        if node.input[0] != at.tensor or at.tensor in node.input[1:]:
            return [], [], f"output reaches {where} other than as its data input"
        if b.op == "ConvTranspose":
            return [], [], f"output reaches {where} (ConvTranspose is quantized alone)"
        b_axis = 1 if b.op == "Conv" else -1
        if b_axis != axis and rank != 2:
            return [], [], f"channel layouts differ (reaches {where})"
        if b.in_channels != at.count:
            return [], [], f"channel counts differ ({at.count} -> {b.in_channels} at {where})"
        return [], [Reader(b, ChannelMap(at.lo, at.hi, at.pos), at.path)], ""
    if node.op_type == "Concat" and on_axis:
        counts = [shapes.channels(name, axis) for name in node.input]
        nxt = []
        for k, name in enumerate(node.input):
            if name != at.tensor:
                continue
            if any(c is None for c in counts[:k]) or counts[k] != at.count:
                return [], [], f"channel counts at {where} are unknown"
            total = shapes.channels(node.output[0], axis)
            if total is None:
                return [], [], f"channel counts at {where} are unknown"
            nxt.append(_At(node.output[0], at.lo, at.hi, at.pos + sum(counts[:k]), total,
                           at.path.then(None, "Concat")))
        return nxt, [], ""
    if node.op_type == "Split" and on_axis and node.input[0] == at.tensor:
        sizes = _split_sizes(index, node, at.count)
        if sizes is None:
            return [], [], f"split sizes of {where} are unknown"
        nxt, begin = [], 0
        for out, size in zip(node.output, sizes, strict=True):
            lo, hi = max(at.pos, begin), min(at.pos + at.hi - at.lo, begin + size)
            if out and lo < hi:
                i, j = lo - at.pos, hi - at.pos  # A's channels that go this way, relative to at.lo
                nxt.append(_At(out, at.lo + i, at.lo + j, lo - begin, size,
                               at.path.cut(i, j).then(None, "Split")))
            begin += size
        return nxt, [], ""
    if node.op_type == "Slice" and node.input[0] == at.tensor:
        window, why = _slice_window(index, node, axis, rank, at.count)
        if window is None:
            return [], [], f"output reaches {where}, {why}"
        begin, end = window
        lo, hi = max(at.pos, begin), min(at.pos + at.hi - at.lo, end)
        if lo >= hi:  # none of A's channels are in the window: this use reads none of them
            return [], [], ""
        i, j = lo - at.pos, hi - at.pos
        return [_At(node.output[0], at.lo + i, at.lo + j, lo - begin, end - begin,
                    at.path.cut(i, j).then(None, "Slice"))], [], ""
    if node.op_type == "BatchNormalization" and node.input[0] == at.tensor:
        step = _batchnorm(index, node, at)
        if step is None:
            return [], [], f"output reaches {where} with statistics that are not constants"
        return [_At(node.output[0], at.lo, at.hi, at.pos, at.count,
                    at.path.then(step, "BatchNormalization"))], [], ""
    other = [i for i in node.input if i and i != at.tensor]
    if node.op_type == "Mul" and len(other) == 1 and not index.is_constant(other[0]):
        if _depends_on(index, other[0], a.node):
            return [], [], f"output reaches {where}, whose other factor depends on it"
        if shapes.channels(node.output[0], axis) not in (None, at.count):
            return [], [], f"output reaches {where}, which broadcasts its channels"
        return [replace(at, tensor=node.output[0],
                        path=at.path.then(None, "Mul", scale_only=True))], [], ""
    if node.op_type == "Reshape" and node.input[0] == at.tensor and axis == -1:
        dims_in, dims_out = shapes.dims.get(at.tensor), shapes.dims.get(node.output[0])
        if (dims_in and dims_out and len(dims_out) == len(dims_in) + 1 and dims_out[-1]
                and dims_out[-2] and dims_out[-2] * dims_out[-1] == at.count
                and _same(dims_in[:-1], dims_out[:-2]) and at.hi - at.lo == at.count):
            return [replace(at, tensor=node.output[0], heads=(-2, -1, dims_out[-1]))], [], ""
    if node.op_type == "MatMul" and node.input[1:2] == [at.tensor] and axis == -1 and other:
        return _attention(index, node, at, a)
    if node.op_type in ELEMENTWISE_OPS:
        phi = single_node_activation(index, node, at.tensor, rank, axis)
        if phi is None:
            return [], [], f"output reaches {where}, which mixes in another tensor"
        step, why = _activation_step(phi, at)
        if step is None:
            return [], [], why
        return [replace(at, tensor=phi.exit, path=at.path.then(step, phi.label))], [], ""
    if node.op_type in LINEAR_OPS:
        return [], [], f"output reaches {where}, which is kept in float"
    return [], [], f"output reaches {where}, which passes no per-channel factor on"


def _through_heads(index: GraphIndex, shapes: Shapes, node: onnx.NodeProto, at: _At,
                   a: LinearLayer) -> tuple[list[_At], list[Reader], str]:
    """One use of a tensor whose channels are split into heads: a Transpose moving the head
    axes, attention (the tensor as the right operand of a MatMul: every channel of a head is
    mixed across positions by the same weights) or the Reshape that merges the heads back."""
    where = f"{node.op_type} {node.name!r}"
    h, d, size = at.heads
    if node.op_type == "Transpose" and node.input[0] == at.tensor:
        perm = [int(p) for p in attr(node, "perm", [])]
        if not perm:
            return [], [], f"output reaches {where} without a permutation"
        r = len(perm)
        moved = (perm.index(h % r) - r, perm.index(d % r) - r)
        return [replace(at, tensor=node.output[0], heads=(*moved, size))], [], ""
    if node.op_type == "MatMul" and node.input[1:2] == [at.tensor] and node.input[0] != at.tensor:
        return _attention(index, node, at, a)
    if node.op_type == "Reshape" and node.input[0] == at.tensor and (h, d) == (-2, -1):
        dims_in, dims_out = shapes.dims.get(at.tensor), shapes.dims.get(node.output[0])
        if (dims_in and dims_out and len(dims_out) == len(dims_in) - 1
                and dims_out[-1] == at.count and _same(dims_in[:-2], dims_out[:-1])):
            return [replace(at, tensor=node.output[0], heads=None)], [], ""
    return [], [], f"output reaches {where} while split into heads"


def _attention(index: GraphIndex, node: onnx.NodeProto, at: _At, a: LinearLayer
               ) -> tuple[list[_At], list[Reader], str]:
    """The tensor as the right operand of a MatMul (attention weights @ V): its last axis is
    kept, its second-to-last is summed over with weights that must not depend on A."""
    where = f"{node.op_type} {node.name!r}"
    axes = at.heads[:2] if at.heads else (-1,)
    if -2 in axes:
        return [], [], f"output reaches {where}, which sums over its channels"
    if _depends_on(index, node.input[0], a.node):
        return [], [], f"output reaches {where}, whose weights depend on it"
    return [replace(at, tensor=node.output[0],
                    path=at.path.then(None, "attention", scale_only=True))], [], ""


def _same(a: list[int | None], b: list[int | None]) -> bool:
    """Equal dims, a symbolic (None) dim matching anything."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _depends_on(index: GraphIndex, tensor: str, node: onnx.NodeProto) -> bool:
    """Whether ``tensor`` is computed from ``node``'s outputs."""
    seen, todo = set(), [tensor]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        producer = index.producer.get(t)
        if producer is node:
            return True
        if producer is not None:
            todo.extend(i for i in producer.input if i)
    return False


def _batchnorm(index: GraphIndex, node: onnx.NodeProto, at: _At) -> Affine | None:
    """A kept BatchNormalization in inference mode as k * x + b on A's channels."""
    names = list(node.input[1:5])
    if (len(names) != 4 or not all(index.is_constant(n) for n in names)
            or attr(node, "training_mode", 0) or len([o for o in node.output if o]) != 1):
        return None
    gamma, beta, mean, var = (index.array(n).astype(np.float64).reshape(-1) for n in names)
    if not all(len(v) == at.count for v in (gamma, beta, mean, var)):
        return None
    k = gamma / np.sqrt(np.maximum(var + float(attr(node, "epsilon", 1e-5)), 1e-12))
    return Affine(k, beta - mean * k).cut(at.pos, at.pos + at.hi - at.lo)


def _slice_window(index: GraphIndex, node: onnx.NodeProto, axis: int, rank: int | None,
                  count: int) -> tuple[tuple[int, int] | None, str]:
    """Channels [begin, end) that a Slice keeps, where it slices the channel axis alone with step 1
    and constant bounds (GhostNet's ``cat([x1, x2], 1)[:, :oup]``); else (None, why not)."""
    if rank is None:
        return None, "whose input rank is unknown"
    if len(node.input) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        names = list(node.input[1:5]) + [""] * (5 - len(node.input))
        if not all(not n or index.is_constant(n) for n in names):
            return None, "whose bounds are not constants"
        starts, ends, axes, steps = ([int(v) for v in index.array(n).reshape(-1)] if n else None
                                     for n in names)
    else:  # opset 1-9: attributes
        starts, ends = attr(node, "starts", None), attr(node, "ends", None)
        axes, steps = attr(node, "axes", None), None
        if starts is None or ends is None:
            return None, "whose bounds are not given"
        starts, ends = [int(v) for v in starts], [int(v) for v in ends]
    axes = [int(a) for a in axes] if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        return None, "whose bounds do not match its axes"
    if [a % rank for a in axes] != [axis % rank] or steps != [1]:
        return None, "which slices other axes than the channels or with a step"

    def clamp(v: int) -> int:
        return min(max(v + count if v < 0 else v, 0), count)

    begin, end = clamp(starts[0]), clamp(ends[0])
    if begin >= end:
        return None, "which keeps no channel"
    return (begin, end), ""


def _split_sizes(index: GraphIndex, node: onnx.NodeProto, count: int) -> list[int] | None:
    split = attr(node, "split", None)
    if split is None and len(node.input) > 1 and node.input[1]:
        if not index.is_constant(node.input[1]):
            return None
        split = [int(s) for s in index.array(node.input[1]).reshape(-1)]
    n = len(node.output)
    if split is None:
        if count % n:
            return None
        split = [count // n] * n
    split = [int(s) for s in split]
    return split if len(split) == n and sum(split) == count else None

