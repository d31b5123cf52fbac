"""All conversion options in one dataclass, read at the edges (CLI, API) and passed down as values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import OptionsError

Solver = Literal["bc", "diag", "full", "none"]
Granularity = Literal["channel", "tensor"]
Format = Literal["packed", "int8"]
Objective = Literal["energy", "mse"]

VALID_BITS = range(2, 9)


@dataclass(frozen=True)
class ConvertOptions:
    """What a conversion does. Defaults follow the paper: 2-bit first layer of each pair, 8-bit second.

    low_bits / high_bits: weight bits of the first (A) and second (B) layer of each pair; layers in no
        pair, and the first and last layer, get high_bits.
    granularity: one scale per output channel ("channel") or per weight tensor ("tensor").
    solver: how the error of the low-bit layers is corrected. "bc" (default): bias correction only,
        each layer's output mean restored (the best of our methods on every kept-BN example, see
        BENCHMARKS.md). "diag": also DF-MPC's per-channel compensation c of each pair's second
        layer, one channel at a time (or the per-channel "energy" rule); "full": the n x n
        cross-channel system of the "mse" objective (needs objective "mse"). "none": plain rounding
        with the same bit plan, the baseline every result is compared with.
    lam: ridge weight pulling the compensation towards 1; guards badly conditioned layers.
    bias_correction: shift biases so the mean of every quantized layer's output matches the float
        model's (classic bias correction of the layer's own rounding error). None (default) means
        on for "bc", "diag" and "full" and off for "none", so that "none" is plain rounding.
    objective: what the compensation c aims for. "energy" (default) rescales each channel of the
        second layer's input so the quantized activation has the float one's variance; "mse" is
        METHOD.md's least-squares objective, solved in closed form ("full" or "diag"). We measured
        "mse" below plain rounding on every example model: it shrinks signals (c ~ 0.5), and the
        nonlinear layers downstream pay for the lost scale (BENCHMARKS.md).
    propagated_stats: also correct layers whose input statistics were only propagated from the
        assumed input distribution (BN folded). Off by default: on BN-folded models those
        statistics were measured to mislead bias correction; kept BatchNormalization statistics
        are trusted.
    equalize: cross-layer equalization of each ReLU-like pair before quantizing (Nagel et al. 2019).
    input_mean / input_std: assumed per-element distribution of the model input, the start of the
        statistics propagation when no BatchNormalization statistics are available.
    format: "packed" stores real INT2/INT4/INT8 initializers; "int8" stores every weight in an int8
        container limited to its bit grid (for int8 kernels and TensorRT).
    plan: per-layer overrides by node name: {"conv1": 4, "fc": null} (null keeps a layer in float).
    protect_first_last: keep the first and the last quantizable layer at high_bits (the paper's
        choice: they are the most sensitive); when False the first layer may start a low-bit pair.
    """

    low_bits: int = 2
    high_bits: int = 8
    granularity: Granularity = "channel"
    solver: Solver = "bc"
    lam: float = 1e-3
    bias_correction: bool | None = None
    objective: Objective = "energy"
    propagated_stats: bool = False
    equalize: bool = False
    input_mean: float = 0.0
    input_std: float = 1.0
    format: Format = "packed"
    plan: dict[str, int | None] = field(default_factory=dict)
    protect_first_last: bool = True

    def __post_init__(self) -> None:
        for name in ("low_bits", "high_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or value not in VALID_BITS:
                flag = name.replace("_", "-")
                raise OptionsError(f"--{flag} must be an integer from 2 to 8, got {value!r}")
        if self.low_bits > self.high_bits:
            raise OptionsError(
                f"--low-bits ({self.low_bits}) must not exceed --high-bits ({self.high_bits})"
            )
        if self.granularity not in ("channel", "tensor"):
            raise OptionsError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")
        if self.solver not in ("bc", "diag", "full", "none"):
            raise OptionsError(f"solver must be 'bc', 'diag', 'full' or 'none', got {self.solver!r}")
        if self.objective not in ("energy", "mse"):
            raise OptionsError(f"objective must be 'energy' or 'mse', got {self.objective!r}")
        if self.solver == "full" and self.objective == "energy":
            # Energy matching is per channel; silently running diag under the name "full" would
            # make a comparison table lie.
            raise OptionsError("solver 'full' solves the cross-channel system of the 'mse' objective; "
                               "the 'energy' objective is per channel: use solver 'diag', or "
                               "objective 'mse' with solver 'full'")
        if self.format not in ("packed", "int8"):
            raise OptionsError(f"format must be 'packed' or 'int8', got {self.format!r}")
        if not self.lam >= 0:
            raise OptionsError(f"--lam must be >= 0, got {self.lam!r}")
        if not self.input_std > 0:
            raise OptionsError(f"--input-std must be > 0, got {self.input_std!r}")
        for layer, bits in self.plan.items():
            if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool)
                                     or bits not in VALID_BITS):
                raise OptionsError(
                    f"plan: layer {layer!r} asks for {bits!r} bits; use an integer from 2 to 8 or null"
                )
