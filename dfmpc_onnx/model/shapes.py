"""Inferred tensor shapes as the analyses read them: one place that reads value_info (and the
graph's inputs and outputs), used by channel following and by statistics propagation."""

from __future__ import annotations

import onnx


class Shapes:
    """Inferred dims of every tensor that has them (None for a symbolic dim)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.dims: dict[str, list[int | None]] = {}
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            t = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and t.HasField("shape"):
                self.dims.setdefault(vi.name, [d.dim_value if d.HasField("dim_value") else None
                                               for d in t.shape.dim])

    def rank(self, name: str) -> int | None:
        dims = self.dims.get(name)
        return None if dims is None else len(dims)

    def channels(self, name: str, axis: int) -> int | None:
        dims = self.dims.get(name)
        if not dims or not -len(dims) <= axis < len(dims):
            return None
        return dims[axis]

    def spatial(self, name: str) -> list[int] | None:
        """The dims after N, C where all are known."""
        dims = self.dims.get(name)
        if dims is None or len(dims) < 3 or any(d is None for d in dims[2:]):
            return None
        return list(dims[2:])
