"""All conversion options in one dataclass, read at the edges (CLI, API) and passed down as values.

Each field carries its help text and choices in its metadata: the CLI builds its options from them,
so a default, a choice list or a help text is written once, here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

from dfmpc_onnx.quant.quantizers import QUANTIZERS
from dfmpc_onnx.quant.quantizers.base import WEIGHT_BITS
from dfmpc_onnx.quant.rounding import ROUNDINGS

from .errors import OptionsError

VALID_BITS = WEIGHT_BITS  # the range every quantizer supports, defined once there
METHODS = ("auto", "pairs", "paper")
CORRECTIONS = ("auto", "bias", "none", "paper", "energy", "ls-diag", "ls-full")
# --method auto without --target-bits: the budgets tried, smallest first (stored bits per weight).
AUTO_BUDGETS = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)
SYNTHETIC_KINDS = ("auto", "smooth", "mixed", "gaussian", "uniform", "leaves", "strokes", "distilled")
GRANULARITIES = ("channel", "tensor")
FORMATS = ("packed", "int8")
ACTIVATIONS = ("none", "int8")
ACTIVATION_TYPES = ("uint8", "int8")
CLIP_CHOICES = ("auto", "minmax", "percentile", "mse", "bn")
# Grids ONNX Runtime's integer kernels (QLinearConv, QGemm) read: symmetric, one scale per tensor
# or per output channel, in an 8-bit container.
INTEGER_KERNEL_GRIDS = ("maxabs", "mse", "twn", "mse-ternary")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, **kw: Any) -> Any:
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class LayerPlan:
    """What one layer gets: bits, the quantizer that makes its grid, and its correction."""

    bits: int
    quantizer: str
    correction: str


@dataclass(frozen=True)
class ConvertOptions:
    """What a conversion does. See each field's help (``dfmpc-onnx convert --help`` shows them)."""

    method: str | None = _opt(
        None, "auto (the default, unless --low-bits or --high-bits is given): bits, grid and "
        "correction per layer chosen by measuring what each choice does to the network's outputs "
        "on synthetic inputs, within --target-bits (or, without it, the fewest bits that keep "
        "--min-agreement). pairs (the default when --low-bits/--high-bits is given): our fixed "
        "mixed-precision plan, each pair's first layer at --low-bits, everything else at "
        "--high-bits, with --quantizer and --correction. paper: the DF-MPC paper "
        "exactly (Chen et al. 2023): its disjoint pairs, ternary (TWN, one scale per layer) 2-bit and "
        "DoReFa other layers, and its compensation c (Eq. 27) folded into the low-bit layer; "
        "--correction none gives the same plan without compensation.", METHODS)
    target_bits: float | None = _opt(
        None, "--method auto: the most stored bits per weight (containers and scales included) "
        "the plan may use, e.g. 4. Default: the fewest of "
        + ", ".join(f"{b:g}" for b in AUTO_BUDGETS)
        + " whose plan keeps --min-agreement (else 8 bits everywhere).")
    min_agreement: float = _opt(
        0.99, "--method auto without --target-bits: the predicted top-1 agreement with the float "
        "model, on the synthetic inputs, the plan must keep, or, where 8 bits everywhere keeps "
        "less (a model unsure on noise), as much as that (for outputs that are not class "
        "scores, and for a model that gives every synthetic input the same class: relative "
        "error of the outputs, there of their input-dependent part, at most 1 minus it, or the "
        "8-bit plan's).")
    floor_factor: float = _opt(
        2.0, "--method auto without --target-bits, where 8 bits everywhere itself misses "
        "--min-agreement on the synthetic inputs (they cannot certify the level: a text "
        "recogniser on noise flips most positions at 8 bits): a plan also passes if its divergence "
        "from the float outputs is at most this many times the 8-bit plan's (2: at most 3 dB "
        "more output error than 8 bits; 1: none, which writes 8 bits on such models).")
    low_bits: int | None = _opt(None, "--method pairs/paper: bits of the first layer of each pair "
                                      "(default 2, the paper's setting and the largest saving; 3-4 "
                                      "lose much less accuracy).")
    high_bits: int | None = _opt(None, "--method pairs/paper: bits of each pair's second layer and "
                                       "of every layer outside a pair, the first and last layer "
                                       "included (default 8).")
    quantizer: str = _opt(
        "maxabs", "Weight grid of every quantized layer (a plan file can set it per layer): "
        + "; ".join(f"{q.name}: {q.help}" for q in QUANTIZERS.values() if q.name != "paper")
        + ". --method paper uses the paper's own grids.",
        tuple(n for n in QUANTIZERS if n != "paper"))
    granularity: str = _opt("channel", "One scale per output channel (much more accurate at 2-4 "
                                       "bits) or one per tensor (maxabs, mse, asym).", GRANULARITIES)
    rounding: str = _opt(
        "balanced", "How weights are rounded onto symmetric grids of 4 bits or fewer: balanced "
        "(flip the cheapest roundings so the errors of each kernel and each output channel sum "
        "to under half a step, SQuant-style: what a layer adds up is what its output errs by; "
        "dfmpc_onnx/quant/rounding.py) or nearest (plain rounding). 8-bit grids and the paper's "
        "own grids (--method paper) always round to nearest.", ROUNDINGS)
    correction: str | None = _opt(
        None, "How the low-bit layers' error is corrected. auto (the default of --method pairs; "
        "--method auto always measures): bias correction on each layer where measuring says it "
        "helps. bias: restore each layer's output mean from kept-BN statistics (bias "
        "correction). none: plain "
        "rounding of the same plan. paper: the paper's per-channel factor c (Eq. 27), the default of "
        "--method paper. energy, ls-diag, ls-full: our own per-channel compensation in each pair's "
        "second layer (energy restores each channel's variance; ls-* solve a least-squares "
        "objective, diagonal or full), plus bias correction; measured below bias alone "
        "(BENCHMARKS.md).", CORRECTIONS)
    lam: float = _opt(1e-3, "Ridge weight pulling our compensation factors (energy, ls-*) towards 1, "
                            "relative to the layer's scale.")
    lambda1: float = _opt(0.5, "The paper's lambda1 (Eq. 27): weight of keeping BN's shift y; its "
                               "ablation picks 0.5.")
    lambda2: float = _opt(0.0, "The paper's lambda2 (Eq. 27): ridge on c.")
    bias_correction: bool | None = _opt(
        None, "Correct biases so each quantized layer's output mean matches the float model's. "
        "Default: on with corrections bias, energy, ls-diag and ls-full; off with none and paper.")
    propagated_stats: bool = _opt(
        False, "Also correct layers whose input statistics were only propagated from the assumed "
        "input (BN-folded models). Off by default: measured to mislead corrections.")
    equalize: bool = _opt(False, "Cross-layer equalization of ReLU-like pairs before rounding (helps "
                                 "per-tensor scales most).")
    input_mean: float = _opt(0.0, "Assumed mean of each model input element: where the data-free "
                                  "statistics start when no BatchNormalization statistics exist.")
    input_std: float = _opt(1.0, "Assumed standard deviation of each model input element.")
    input_range: tuple[float, float] | None = _opt(
        None, "Assumed range LOW,HIGH of the model input (e.g. 0,1 or 0,255 for raw images): "
        "synthetic inputs are drawn in it instead of from --input-mean/--input-std. Default: "
        "the range a normalisation (Sub/Div/Mul/Add by constants) or a Clip at the input implies, "
        "where the graph has one; else 0,1 or 0,255 (or -1,1) where the first layer's response to "
        "mean-0/std-1 inputs is more than 3x off the scale a trained layer answers real inputs at "
        "and that range comes closer (dfmpc_onnx/measure/input_spec.py); the report says which "
        "was used and why.")
    input_shapes: dict[str, Any] = _opt(
        {}, "Shapes of one run of inputs with symbolic dimensions other than the batch, for the "
        "synthetic inputs, e.g. --input-shape input=1x3x224x224. Default: each symbolic "
        "dimension set by rule (224 a side, 4x the fixed side of a text line, 128 tokens, 16000 "
        "audio samples, on the model's total stride; dfmpc_onnx/measure/input_spec.py), checked in ONNX "
        "Runtime; the report says which shape was measured.")
    output_kinds: dict[str, Any] = _opt(
        {}, "How an output is judged when measuring plans, where its kind is not what its shape "
        "and final Softmax/Sigmoid say, e.g. --output-kind logits=sequence: class ((batch, "
        "classes) scores: KL and top-1 agreement), sequence ((batch, time, classes) or (time, "
        "batch, classes): KL and top-1 agreement per position), dense (maps: relative error and "
        "agreement of the masks above 0.5) or regression (relative error).")
    fidelity_samples: int = _opt(
        16, "Synthetic inputs the measurements run on (0: measure nothing and use fixed rules). "
        "16 ranked ResNet-18's layers the same across seeds (Spearman 0.99); 8 is faster, 0.97.")
    fast: bool = _opt(
        False, "Plan in seconds rather than minutes: each layer is measured at 4 bits only (max-abs "
        "and the other grid of least weight error; 8 bits is estimated from those trials by "
        "weight error), no 2-bit grids, bias correction by the fixed rule instead of by trial, "
        "and at each budget only the "
        "allocator's, the recipe's and the fixed pair plans are measured whole, with no "
        "refinement; a fixed plan's --correction auto takes the fixed rule (bias correction "
        "where kept BatchNormalization gives statistics). The held-out check of each budget and "
        "the report's predicted fidelity are the same as without it. Time and accuracy against "
        "the default: BENCHMARKS.md, 'Conversion time'.")
    synthetic: str = _opt(
        "auto", "Kind of synthetic inputs: auto (smooth; strokes instead where, for the measured "
        "weight-only plan, a dense output's mask stays empty on smooth noise and not on strokes, "
        "as a text detector's probability map does; the report says so), "
        "smooth (noise with a natural image's 1/f spectrum; "
        "plain Gaussian noise for inputs without spatial axes), mixed (a third each of gaussian, "
        "uniform and smooth), gaussian, uniform, leaves (dead-leaves images: flat discs with "
        "sharp edges at every scale), strokes (rows of glyph-like ink strokes on flat paper: a "
        "text detector responds to them where it stays flat on noise), or distilled (optimised so every kept "
        "BatchNormalization sees its own statistics, ZeroQ-style; needs the optional extra "
        "'synth' with torch, and a model that keeps BN). On our examples, layer sensitivities "
        "measured on smooth inputs ranked closest to real data among noise kinds (Spearman 0.63 "
        "mean), distilled closer still (0.84): benchmarks/sensitivity_truth.py.", SYNTHETIC_KINDS)
    seed: int = _opt(0, "Seed of the synthetic inputs (the conversion is deterministic for it).")
    format: str = _opt("packed", "packed: real INT2/INT4/INT8 initializers (smallest file; opset 25 "
                                 "for INT2, 21 for INT4 and block-wise scales). int8: every weight in "
                                 "an (u)int8 container on its grid (opset 13; for int8 kernels and "
                                 "TensorRT).", FORMATS)
    target_opset: int | None = _opt(
        None, "The newest ai.onnx opset the runtime that will run the output implements: "
        "containers are chosen to fit it (INT2 needs opset 25, INT4 21, per-channel INT8 13; "
        "2-bit grids go into INT4 containers below 25, everything into INT8 below 21), and the "
        "IR version is the lowest the opset needs. E.g. 21 for ONNX Runtime 1.18-1.20. Default: "
        "the narrowest containers.")
    activations: str = _opt(
        "none", "none: weight-only (activations stay float; the model runs at float speed). "
        "int8: also quantize activations to 8 bits, with ranges measured on synthetic inputs, so "
        "ONNX Runtime runs Conv/Gemm/MatMul/Add/pooling on its integer kernels (QLinearConv, "
        "QGemm, ...): faster than float on CPU. Weights go in int8 containers, on a 7-bit grid by "
        "default with uint8 activations (W7A8: ORT's x86 kernels without VNNI saturate on full "
        "int8 weights), 8-bit with --activation-type int8; --target-bits still plans 2/4-bit "
        "grids inside them.", ACTIVATIONS)
    activation_type: str = _opt(
        "uint8", "--activations int8: uint8 (asymmetric; the fast path of ONNX Runtime's CPU "
        "kernels) or int8 (symmetric, zero point 0: what TensorRT wants).", ACTIVATION_TYPES)
    activation_clip: str = _opt(
        "auto", "--activations int8: how each activation's range is cut from what the synthetic "
        "inputs produced: minmax, percentile (0.01/99.99), mse (least quantization error), or "
        "auto: each of these is tried on the whole model and the one whose outputs stay closest "
        "to the weight-only model's on other synthetic inputs is kept; where BatchNormalization "
        "was kept, auto then tries bn over the winner the same way. bn: where a kept "
        "BatchNormalization gives the training data's statistics, each channel's mean +- 6 std "
        "(after its ReLU); elsewhere min-max (under auto: the winning rule).", CLIP_CHOICES)
    activation_headroom: float = _opt(
        3.0, "--activations int8: every range measured on synthetic inputs is widened by this "
        "factor (graph inputs excepted; never past a Clip's bounds; with --activation-headroom-rule "
        "measured, the widest factor tried). Real data drives deep "
        "activations further than noise does: on our examples and a third-party model the real "
        "span exceeded the synthetic one in most layers (90th percentile 1.3-2.6x), and "
        "saturating costs far more than the resolution a wider grid gives up "
        "(benchmarks/ACTIVATIONS.md). 1 trusts the synthetic ranges as they are.")
    activation_headroom_rule: str = _opt(
        "fixed", "--activations int8: fixed: ranges from --synthetic inputs widened by "
        "--activation-headroom. measured: ranges are the union over smooth, gaussian and uniform "
        "inputs, widened by 1, the square root of --activation-headroom or itself, whichever "
        "moves the outputs least on the kind of input left out of the calibration (per model; "
        "on ddddocr's recogniser and PP-OCRv4's it beat fixed, on PaddleOCR's direction "
        "classifier it lost 11 points: benchmarks/int8_check.py).", ("fixed", "measured"))
    activation_float_grids: bool = _opt(
        False, "--activations int8: also try keeping float the few activation grids with the "
        "most quantization noise per channel (up to an eighth of them), as many as bring the "
        "outputs closest to the weight-only model's on held-out synthetic inputs net of a charge "
        "per float grid; the report lists them. Off by default: on the pretrained models of "
        "benchmarks/int8_check.py it changed nothing measurable, and on the MobileNetV2 example "
        "its two float grids cost a third more latency for 0.3 points.")
    plan: dict[str, Any] = _opt(
        {}, 'Per-layer overrides by node name: {"conv1": 4, "fc": null, "conv2": {"bits": 4, '
        '"quantizer": "block32", "correction": "none"}} (null keeps a layer in float).')
    pair_through: bool = _opt(
        True, "--method pairs/paper and --equalize: also pair a layer with every layer that reads "
        "its channels through Concat, Split, branches or a kept BatchNormalization (DenseNet, "
        "Inception, SqueezeNet), where each reader's input channel is a function of one of its "
        "channels; --no-pair-through keeps the paper's rule (one reader of the whole output).")
    protect_first_last: bool = _opt(True, "Keep the first and last layer at --high-bits, as the paper "
                                          "does.")

    def __post_init__(self) -> None:
        if (self.activations == "int8" and self.method is None and self.target_bits is None
                and self.low_bits is None and self.high_bits is None):
            # Integer kernels read int8 containers: lower grids would save no bytes, only
            # accuracy. W8A8 unless a plan of lower grids is asked for.
            object.__setattr__(self, "method", "pairs")
            object.__setattr__(self, "low_bits", self.widest_bits)
            object.__setattr__(self, "high_bits", self.widest_bits)
            if self.correction is None:
                object.__setattr__(self, "correction", "none")
        if self.method is None:  # bits given: the fixed pair plan they describe
            given = self.low_bits is not None or self.high_bits is not None
            object.__setattr__(self, "method", "pairs" if given else "auto")
        if self.method == "auto" and (self.low_bits is not None or self.high_bits is not None):
            raise OptionsError("--low-bits/--high-bits describe a fixed plan: use --method pairs "
                               "(or leave --method out), or --target-bits with --method auto")
        if self.target_bits is not None and self.method != "auto":
            raise OptionsError("--target-bits is for --method auto (the measured plan)")
        if self.target_bits is not None and not 2 <= self.target_bits <= 32:
            raise OptionsError(f"--target-bits must be between 2 and 32, got {self.target_bits!r}")
        if not 0 < self.min_agreement <= 1:
            raise OptionsError(f"--min-agreement must be in (0, 1], got {self.min_agreement!r}")
        if not self.floor_factor >= 1:
            raise OptionsError(f"--floor-factor must be >= 1, got {self.floor_factor!r}")
        if not isinstance(self.fidelity_samples, int) or self.fidelity_samples < 0:
            raise OptionsError(f"--fidelity-samples must be >= 0, got {self.fidelity_samples!r}")
        if self.target_bits is not None and self.fidelity_samples == 0:
            raise OptionsError("--target-bits plans by measuring, and --fidelity-samples 0 turns "
                               "measuring off: drop one of them")
        object.__setattr__(self, "low_bits", 2 if self.low_bits is None else self.low_bits)
        object.__setattr__(self, "high_bits", 8 if self.high_bits is None else self.high_bits)
        for name in ("low_bits", "high_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value not in VALID_BITS:
                flag = name.replace("_", "-")
                raise OptionsError(f"--{flag} must be an integer from 2 to 8, got {value!r}")
        if self.low_bits > self.high_bits:
            raise OptionsError(
                f"--low-bits ({self.low_bits}) must not exceed --high-bits ({self.high_bits})")
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise OptionsError(f"--{f.name.replace('_', '-')} must be one of "
                                   f"{', '.join(choices)}; got {value!r}")
        if self.method == "auto" and self.correction not in (None, "auto"):
            raise OptionsError("--method auto chooses each layer's correction by measurement; "
                               "--correction is for --method pairs/paper")
        if self.method == "paper" and self.correction not in (None, "paper", "none"):
            raise OptionsError("--method paper takes --correction paper (its compensation, the "
                               f"default) or none, not {self.correction!r}")
        if self.method == "paper" and self.equalize:
            raise OptionsError("--method paper is the published algorithm with nothing added; "
                               "--equalize is ours: use --method pairs with it")
        if not self.activation_headroom >= 1:
            raise OptionsError(f"--activation-headroom must be >= 1, got {self.activation_headroom!r}")
        for name in ("lam", "lambda1", "lambda2"):
            if not getattr(self, name) >= 0:
                raise OptionsError(f"--{name} must be >= 0, got {getattr(self, name)!r}")
        if self.target_opset is not None and not (
                isinstance(self.target_opset, int) and 10 <= self.target_opset):
            raise OptionsError(f"--target-opset must be an integer >= 10 (DequantizeLinear with "
                               f"per-tensor scales), got {self.target_opset!r}")
        if not self.input_std > 0:
            raise OptionsError(f"--input-std must be > 0, got {self.input_std!r}")
        for layer, entry in self.plan.items():
            self.plan_entry(layer, entry)  # raises on a bad entry
        from dfmpc_onnx.measure.output_kinds import KINDS

        for name, kind in self.output_kinds.items():
            if kind not in KINDS:
                raise OptionsError(f"--output-kind {name}={kind}: the kind must be one of "
                                   f"{', '.join(KINDS)}")
        if self.activations == "int8":
            grids = {self.quantizer} | {e["quantizer"] for e in self.plan.values()
                                        if isinstance(e, dict) and "quantizer" in e}
            bad = sorted(g for g in grids if g not in INTEGER_KERNEL_GRIDS and g != "paper")
            if bad:
                raise OptionsError(
                    f"--activations int8 runs on integer kernels, which read symmetric grids "
                    f"with one scale per tensor or channel; {', '.join(bad)} cannot be read there "
                    f"(use {', '.join(INTEGER_KERNEL_GRIDS)})")

    # -- what the options mean, asked for by the passes ---------------------------------------

    @property
    def default_correction(self) -> str:
        if self.correction is not None:
            return self.correction
        return "paper" if self.method == "paper" else "auto"

    @property
    def per_channel(self) -> bool:
        """One scale per output channel (``--granularity channel``), derived here once."""
        return self.granularity == "channel"

    @property
    def widest_bits(self) -> int:
        """The widest weight grid the measured plan and the W8A8 default use: 7 with uint8
        activations. ONNX Runtime's U8S8 kernels on x86 CPUs without VNNI add pairs of
        uint8 x int8 products in int16 and saturate when weights use all of int8 (what its own
        quantizer's reduce_range avoids): a 7-bit grid (-63..63) cannot. Within 0.1 point of 8
        bits or above on our examples, 1.8 points below on PaddleOCR's classifier on a VNNI CPU
        (benchmarks/ACTIVATIONS.md, benchmarks/third_party.py): the price of running everywhere."""
        return 7 if self.activations == "int8" and self.activation_type == "uint8" else 8

    def resolved(self, **changes: Any) -> ConvertOptions:
        """A copy with fields the converter settled (resolve-inputs' shapes and input range,
        --synthetic auto's kind): not ``dataclasses.replace``, whose ``__post_init__`` is not
        idempotent (it rewrites method and bits from the options as given)."""
        out = copy.copy(self)
        for key, value in changes.items():
            object.__setattr__(out, key, value)
        return out

    @property
    def explicit_request(self) -> str | None:
        """The option the user gave that only measuring and quantizing can honour, as they
        wrote it (None: the defaults): what is refused, never silently dropped."""
        if self.integer_kernels:
            return "--activations int8"
        if self.target_bits is not None:
            return f"--target-bits {self.target_bits:g}"
        return None

    @property
    def integer_kernels(self) -> bool:
        """Whether the output must run on integer kernels (int8 containers, symmetric grids)."""
        return self.activations != "none"

    def corrects_bias(self, correction: str) -> bool:
        """Whether a layer with ``correction`` also gets bias correction."""
        if self.bias_correction is not None:
            return self.bias_correction
        return correction in ("bias", "energy", "ls-diag", "ls-full")  # "auto" is resolved earlier

    def layer_plan(self, name: str, bits: int) -> LayerPlan:
        """The plan of one layer at ``bits`` before overrides: the method's quantizer and
        correction."""
        quantizer = "paper" if self.method == "paper" else self.quantizer
        return LayerPlan(bits, quantizer, self.default_correction)

    def plan_entry(self, layer: str, entry: Any) -> dict | None:
        """A plan-file entry, checked and normalised: None (keep in float), or a dict with some of
        bits, quantizer and correction (the rest come from the options)."""
        if entry is None:
            return None
        if isinstance(entry, int) and not isinstance(entry, bool):
            entry = {"bits": entry}
        if not isinstance(entry, dict) or not set(entry) <= {"bits", "quantizer", "correction"}:
            raise OptionsError(f"plan: layer {layer!r}: expected bits (2-8), null, or an object "
                               f'like {{"bits": 4, "quantizer": "block32", "correction": "none"}}; '
                               f"got {entry!r}")
        bits = entry.get("bits")
        if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool)
                                 or bits not in VALID_BITS):
            raise OptionsError(
                f"plan: layer {layer!r} asks for {bits!r} bits; use an integer from 2 to 8 or null")
        q = entry.get("quantizer")
        if q is not None and q not in QUANTIZERS:
            raise OptionsError(f"plan: layer {layer!r} asks for quantizer {q!r}; known: "
                               f"{', '.join(QUANTIZERS)}")
        c = entry.get("correction")
        if c is not None and c not in CORRECTIONS:
            raise OptionsError(f"plan: layer {layer!r} asks for correction {c!r}; known: "
                               f"{', '.join(CORRECTIONS)}")
        return entry


def option_help(name: str) -> str:
    """The help text of option ``name`` with its real default, for the CLI."""
    f = next(f for f in fields(ConvertOptions) if f.name == name)
    return f.metadata["help"]


def option_choices(name: str) -> tuple[str, ...]:
    f = next(f for f in fields(ConvertOptions) if f.name == name)
    return f.metadata["choices"]


def option_default(name: str) -> Any:
    f = next(f for f in fields(ConvertOptions) if f.name == name)
    return f.default
