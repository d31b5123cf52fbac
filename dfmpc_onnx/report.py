"""What a conversion did, layer by layer: the user's evidence that the model is what they expect."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PARTNER_SEP = ", "  # between the names of several partners


@dataclass
class LayerReport:
    """One Conv/Gemm/MatMul. ``role``: "A" (low-bit, first of a pair), "B" (compensated second),
    "single" (quantized alone) or "float" (left alone; ``reason`` says why)."""

    name: str
    op: str
    role: str = "float"
    bits: int | None = None
    params: int = 0
    partner: str | None = None  # the pair's other layer(s), joined by PARTNER_SEP
    activation: str | None = None
    reason: str = ""
    stats: str = ""  # where the input statistics came from: bn, propagated, assumed
    comp_min: float | None = None
    comp_max: float | None = None
    error_ratio: float | None = None  # predicted L(c) / L(1) for B layers
    quantizer: str | None = None  # the grid the layer got (registry name)
    correction: str | None = None
    stored_bits: float | None = None  # bits per weight as stored: container + scales (+ zero points)
    sensitivity: dict[int, float] | None = None  # measured divergence, this layer alone, by bits


@dataclass
class Report:
    """Everything a user needs to trust (or distrust) the converted model."""

    layers: list[LayerReport] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    opset_in: int = 0
    opset_out: int = 0
    float_weight_bytes: int = 0
    quant_weight_bytes: int = 0
    ideal_weight_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Seconds each pass took, in the order they ran (--verbose prints them as they end).
    pass_seconds: dict[str, float] = field(default_factory=dict)
    # Predicted fidelity of the result, measured on synthetic inputs: score (mean divergence:
    # KL of softmax for class scores, relative MSE otherwise), top1_agreement, samples, inputs,
    # single_class (agreement is uninformative) and centered_error (see fidelity.Fidelity).
    fidelity: dict = field(default_factory=dict)
    # --activations int8: type, how many tensors and grids, the clip rule kept and each rule's
    # measured divergence from the weight-only model (passes/quantize_activations.py).
    activations: dict = field(default_factory=dict)
    # What the synthetic inputs were, by input: the shape of one run (symbolic dimensions set by
    # dfmpc_onnx.measure.input_spec's rules or --input-shape), the rule, and the value range and its source.
    inputs: dict = field(default_factory=dict)

    def fidelity_line(self) -> str:
        """One line: the predicted fidelity of the result (``validate`` measures the real one)."""
        return "predicted fidelity: " + _fmt_fidelity(self.fidelity)

    def layer(self, name: str) -> LayerReport:
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def stored_bits(self) -> float:
        """Parameter-weighted stored bits per weight of the quantized layers (containers, scales
        and zero points): what --target-bits counts."""
        quantized = [e for e in self.layers if e.stored_bits is not None]
        total = sum(e.params for e in quantized)
        if not total:
            return 0.0
        return sum(e.params * e.stored_bits for e in quantized) / total

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(A, B) for each compensating layer B of each low-bit layer A (an A whose channels
        several layers read has several; its ``partner`` names them, joined by ", ")."""
        return [(e.name, b) for e in self.layers if e.role == "A" and e.partner
                for b in e.partner.split(PARTNER_SEP)]

    @property
    def average_bits(self) -> float:
        """Parameter-weighted bits over quantized layers (float layers count as 32)."""
        total = sum(e.params for e in self.layers)
        if not total:
            return 0.0
        return sum(e.params * (e.bits or 32) for e in self.layers) / total

    def to_dict(self) -> dict:
        d = asdict(self)
        d["average_bits"] = self.average_bits
        d["stored_bits"] = self.stored_bits
        d["pairs"] = self.pairs
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """A fixed-width table for terminals and issue comments.

        Exported names are long and share their prefixes (``/blocks/blocks.3/block/block.0/Conv``),
        so names are never cut at the end: the column fits the longest name up to 64 characters and
        longer ones lose their middle. The partner or reason comes last, in full."""
        width = min(64, max([len("layer")] + [len(e.name) for e in self.layers]))
        lines = [f"{'layer':<{width}} {'op':<8} {'role':<6} {'bits':>4} {'stored':>6} "
                 f"{'grid':<11} {'correction':<10} {'params':>9} {'comp c':>11} {'L(c)/L(1)':>9}"
                 f" {'alone@2/4/8 bits':>20}  partner / reason"]
        for e in self.layers:
            comp = f"{e.comp_min:.2f}..{e.comp_max:.2f}" if e.comp_min is not None else ""
            err = f"{e.error_ratio:.3f}" if e.error_ratio is not None else ""
            bits = str(e.bits) if e.bits else "fp"
            stored = f"{e.stored_bits:.2f}" if e.stored_bits is not None else ""
            extra = (PARTNER_SEP.join(_elide(n, width) for n in e.partner.split(PARTNER_SEP))
                     if e.partner else e.reason)
            widest = max(e.sensitivity) if e.sensitivity else 8  # 7 with uint8 activations
            sens = "/".join(f"{e.sensitivity[b]:.0e}" if b in e.sensitivity else "-"
                            for b in (2, 4, max(widest, 7))) if e.sensitivity else ""
            lines.append(f"{_elide(e.name, width):<{width}} {e.op:<8} {e.role:<6} {bits:>4} "
                         f"{stored:>6} {e.quantizer or '':<11} {e.correction or '':<10} "
                         f"{e.params:>9} {comp:>11} {err:>9} {sens:>20}  {extra}".rstrip())
        mb = 1024 * 1024
        lines.append("")
        lines.append(f"pairs: {len(self.pairs)}   average weight bits: {self.average_bits:.2f} "
                     f"({self.stored_bits:.2f} stored, scales included)   "
                     f"opset {self.opset_in} -> {self.opset_out}")
        if self.quant_weight_bytes:
            lines.append(f"weights: {self.float_weight_bytes / mb:.2f} MB float -> "
                         f"{self.quant_weight_bytes / mb:.2f} MB quantized "
                         f"(ideal {self.ideal_weight_bytes / mb:.2f} MB)")
        else:  # inspect: nothing was written, only the plan's ideal size is known
            lines.append(f"weights: {self.float_weight_bytes / mb:.2f} MB float -> "
                         f"{self.ideal_weight_bytes / mb:.2f} MB at the planned bits (ideal)")
        if self.fidelity:
            lines.append(self.fidelity_line())
        slow = {k: v for k, v in self.pass_seconds.items() if v >= 0.05}
        if slow:
            lines.append("seconds per pass: " + ", ".join(f"{k} {v:.1f}" for k, v in slow.items()))
        for name, spec in self.inputs.items():
            lines.append(f"measured on: {name} {'x'.join(map(str, spec['shape']))} ({spec['rule']}), "
                         f"range {spec['range']}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _fmt_fidelity(f: dict) -> str:
    kinds = sorted(set(f.get("kinds", {}).values()) - {"class", "regression", "mismatch"})
    label = f"agreement ({'/'.join(kinds)})" if kinds else "top-1 agreement"
    agree = ("" if f.get("top1_agreement") is None
             else f"{label} {100 * f['top1_agreement']:.1f}%, ")
    if f.get("single_class") and f.get("centered_error") == float("inf"):
        agree += "(uninformative: the float model's outputs do not vary over these inputs), "
    elif f.get("single_class"):
        agree += (f"(uninformative: the float model gives every input the same class; error of the "
                  f"input-dependent outputs {f['centered_error']:.2e}), ")
    return (f"{agree}divergence {f['score']:.2e} ({'/'.join(f.get('metric', []))}) on "
            f"{f['samples']} synthetic {f['inputs']} inputs")


def _elide(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, keeping both ends (where exported names differ)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "~" + name[len(name) - (width - 1 - head):]
