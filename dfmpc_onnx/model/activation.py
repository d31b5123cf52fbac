"""Elementwise activations, however an exporter spelled them.

An activation is a small region of elementwise nodes with one entry tensor and one exit tensor
(Relu; Clip as ReLU6; x*Sigmoid(x) as SiLU; x*Clip(x+3,0,6)/6 as HardSwish; Gelu from Erf...).
Rather than pattern-match each spelling, we find the region and *evaluate* it with a small NumPy
interpreter of elementwise ops. The statistics and the solver then only need phi as a function,
which also lets us test properties such as positive homogeneity numerically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from dfmpc_onnx.model.graph import GraphIndex, attr

MAX_REGION_NODES = 12


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26): vectorised, and exact enough for moments."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                        + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _clip(x, lo, hi):
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x


# op -> f(inputs, node) on float64 arrays; every op here is elementwise with broadcasting.
_OPS: dict[str, Callable[[list, onnx.NodeProto], np.ndarray]] = {
    "Relu": lambda a, n: np.maximum(a[0], 0.0),
    "LeakyRelu": lambda a, n: np.where(a[0] >= 0, a[0], attr(n, "alpha", 0.01) * a[0]),
    "PRelu": lambda a, n: np.where(a[0] >= 0, a[0], a[1] * a[0]),
    "Elu": lambda a, n: np.where(a[0] >= 0, a[0], attr(n, "alpha", 1.0) * np.expm1(a[0])),
    "Sigmoid": lambda a, n: 1.0 / (1.0 + np.exp(-a[0])),
    "Tanh": lambda a, n: np.tanh(a[0]),
    "Softplus": lambda a, n: np.logaddexp(0.0, a[0]),
    "HardSigmoid": lambda a, n: np.clip(attr(n, "alpha", 0.2) * a[0] + attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda a, n: a[0] * np.clip(a[0] / 6.0 + 0.5, 0, 1),
    "Clip": lambda a, n: _clip(
        a[0],
        a[1] if len(a) > 1 and a[1] is not None else attr(n, "min", None),
        a[2] if len(a) > 2 and a[2] is not None else attr(n, "max", None),
    ),
    "Gelu": lambda a, n: (
        0.5 * a[0] * (1 + np.tanh(math.sqrt(2 / math.pi) * (a[0] + 0.044715 * a[0] ** 3)))
        if attr(n, "approximate", "none") == "tanh"
        else 0.5 * a[0] * (1 + _erf(a[0] / math.sqrt(2)))
    ),
    "Erf": lambda a, n: _erf(a[0]),
    "Add": lambda a, n: a[0] + a[1],
    "Sub": lambda a, n: a[0] - a[1],
    "Mul": lambda a, n: a[0] * a[1],
    "Div": lambda a, n: a[0] / a[1],
    "Min": lambda a, n: np.minimum.reduce(a),
    "Max": lambda a, n: np.maximum.reduce(a),
    "Identity": lambda a, n: a[0],
    "Dropout": lambda a, n: a[0],
    "Neg": lambda a, n: -a[0],
}
ELEMENTWISE_OPS = frozenset(_OPS)


@dataclass
class Activation:
    """phi: a region of elementwise nodes from ``entry`` to ``exit`` with per-channel constants.

    ``constants`` maps a constant input name to its value reshaped to (C or 1, 1, ..., 1) so that
    it broadcasts against arrays whose axis 0 is the channel axis.
    """

    entry: str
    exit: str
    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray]

    @property
    def is_identity(self) -> bool:
        return all(n.op_type in ("Identity", "Dropout") for n in self.nodes)

    @property
    def label(self) -> str:
        if not self.nodes:
            return "identity"
        return "+".join(n.op_type for n in self.nodes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """phi(x) for ``x`` with the channel axis first (any trailing shape).

        The arithmetic is IEEE on purpose, so it does not warn. Overflow to +-inf is what makes
        the saturating functions right: exp(-x) for a very negative x gives Sigmoid
        1 / (1 + inf) = 0, its limit; Elu's expm1 and Gelu's x**3 overflow only in the branch or
        factor that saturates. A division by zero (a Div whose divisor is 0 at some point) gives
        +-inf, and an invalid operation (inf * 0, inf - inf) needs such an inf or a non-finite
        input or model constant; inf and NaN are then the honest answers, and the
        statistics in stats.py never pass non-finite inputs and give a channel whose phi is not
        finite no statistics (NaN). Values are exactly the same as without the errstate.
        """
        values: dict[str, np.ndarray] = {self.entry: np.asarray(x, dtype=np.float64)}
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            for node in self.nodes:
                args = []
                for name in node.input:
                    if not name:
                        args.append(None)
                    elif name in values:
                        args.append(values[name])
                    else:
                        c = self.constants[name]
                        args.append(c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c)
                values[node.output[0]] = _OPS[node.op_type](args, node)
        return values[self.exit]

    def is_positive_homogeneous(self, channels: int) -> bool:
        return positive_homogeneous(self, channels)


def positive_homogeneous(phi: Callable[[np.ndarray], np.ndarray], channels: int) -> bool:
    """phi(s*x) == s*phi(x) for s > 0 (ReLU, LeakyRelu, PRelu, identity): checked numerically,
    which is what makes cross-layer equalization exact through this activation."""
    x = np.linspace(-5, 5, 41)[None, :].repeat(channels, 0)
    for s in (0.25, 3.0):
        if not np.allclose(phi(s * x), s * phi(x), rtol=1e-9, atol=1e-12):
            return False
    return True


def channel_constant(value: np.ndarray, rank: int | None, channel_axis: int) -> np.ndarray | None:
    """A constant as a per-channel vector (C,) or scalar (), or None if it varies along other axes."""
    v = np.asarray(value, dtype=np.float64)
    if v.size == 1:
        return v.reshape(())
    if rank is None:
        rank = max(v.ndim, 2)
    if v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    axis = channel_axis % rank
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return v.reshape(-1)


def find_activation(index: GraphIndex, entry: str, rank: int | None, channel_axis: int,
                    claimed: set[str] | None = None) -> Activation | None:
    """The largest elementwise region starting at ``entry`` with a single exit tensor.

    Every tensor inside the region except the exit must be consumed only inside it, so the region
    really is a function of ``entry`` alone. Returns an identity activation when ``entry`` itself
    feeds no elementwise node. Returns None when the elementwise consumers do not close into one exit.
    """
    inside = {entry}
    nodes: list[onnx.NodeProto] = []
    constants: dict[str, np.ndarray] = {}
    taken: set[int] = set()
    changed = True
    while changed and len(nodes) < MAX_REGION_NODES:
        changed = False
        for tensor in list(inside):
            for node in index.consumers.get(tensor, []):
                if id(node) in taken or node.op_type not in ELEMENTWISE_OPS:
                    continue
                if node.domain not in ("", "ai.onnx") or (claimed and node.name in claimed):
                    continue
                if node.op_type == "Dropout" and len([o for o in node.output if o]) > 1:
                    continue
                ok = True
                for name in node.input:
                    if not name or name in inside:
                        continue
                    if not index.is_constant(name):
                        ok = False
                        break
                    c = channel_constant(index.array(name), rank, channel_axis)
                    if c is None:
                        ok = False
                        break
                    constants[name] = c
                if not ok:
                    continue
                nodes.append(node)
                taken.add(id(node))
                inside.add(node.output[0])
                changed = True
    # The exit: the one tensor of the region read by something outside it (or a graph output).
    exits = []
    for tensor in inside:
        users = [n for n in index.consumers.get(tensor, []) if id(n) not in taken]
        if users or tensor in index.graph_outputs:
            exits.append(tensor)
    if len(exits) != 1:
        return None
    exit_ = exits[0]
    # Keep only nodes the exit depends on; a dangling elementwise branch makes it not a function.
    needed = {exit_}
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if node.output[0] in needed:
            kept.append(node)
            needed.update(i for i in node.input if i in inside)
    if len(kept) != len(nodes):
        return None
    return Activation(entry, exit_, list(reversed(kept)), constants)
