"""The pass machinery: a context that analyses fill in, and a plain sequence that runs passes.

A pass is an object with a ``name`` and ``run(model, ctx) -> bool`` (whether it changed the
model). Analyses only add facts to the context; transforms change the ModelProto in place. The
runner turns an unexpected failure into a PassError that names the pass and the passes before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnx

from dfmpc_onnx.errors import DfmpcError, PassError
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.quant import QuantizedWeight
from dfmpc_onnx.report import Report


@dataclass
class Pair:
    """A -> [BN folded] -> phi -> B, where phi is the activation region between them."""

    a: str  # node names
    b: str
    activation: object  # dfmpc_onnx.activation.Activation


@dataclass
class Context:
    """What passes share: the options, the facts found so far, and the report being written."""

    options: ConvertOptions
    report: Report = field(default_factory=Report)
    # Kept BatchNormalization statistics by tensor (after folding, the producing layer's output):
    # the float model's per-channel mean and std there.
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)  # quantizable layers, graph order
    pairs: list[Pair] = field(default_factory=list)
    bits: dict[str, int] = field(default_factory=dict)  # node name -> weight bits
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)
    new_bias: dict[str, np.ndarray] = field(default_factory=dict)  # node -> corrected bias
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


class Pass(Protocol):
    name: str

    def run(self, model: onnx.ModelProto, ctx: Context) -> bool: ...


def run_passes(passes: Sequence[Pass], model: onnx.ModelProto, ctx: Context) -> onnx.ModelProto:
    """Run ``passes`` in order; a crash becomes a PassError naming the pass and its history."""
    done: list[str] = []
    for p in passes:
        ctx.say(f"pass {p.name}")
        try:
            p.run(model, ctx)
        except DfmpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the pass named
            after = f" (after {', '.join(done)})" if done else ""
            raise PassError(f"pass '{p.name}' failed{after}: {type(exc).__name__}: {exc}") from exc
        done.append(p.name)
    return model
