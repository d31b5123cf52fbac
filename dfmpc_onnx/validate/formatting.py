"""The plain-text report of ``validate``: a fixed-width table to read or paste into an issue."""

from __future__ import annotations

import math

from .fusion import summary as fusion_summary
from .metrics import ValidationResult

_NAME_MAX = 32


def _short_name(name: str) -> str:
    """Keep long tensor names to one column: the start and the (usually telling) end."""
    if len(name) <= _NAME_MAX:
        return name
    head = (_NAME_MAX - 3) // 2
    return name[:head] + "..." + name[-(_NAME_MAX - 3 - head):]


def _fmt_float(value: float, spec: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def _fmt_size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"


def format_table(result: ValidationResult) -> str:
    """Fixed-width plain-text report (under 90 columns) to print or paste into an issue.

    One row per output, then accuracy (when the inputs carried labels), size, latency, provider
    and input lines. Infinite SQNR (identical outputs) prints as "inf". "top-1 agree" is how often
    the two models pick the same class, not accuracy; it prints "-" for outputs that are not
    (batch, classes). Accuracy against the labels gets its own line per classification output.
    """
    width = max([len("output")] + [len(_short_name(o.name)) for o in result.outputs])
    header = (
        f"{'output':<{width}}  {'cosine':>9}  {'SQNR dB':>8}  {'max |err|':>10}  "
        f"{'mean |err|':>10}  {'top-1 agree':>11}"
    )
    lines = [header, "-" * len(header)]
    for stats in result.outputs:
        top1 = "-" if stats.top1_agreement is None else f"{stats.top1_agreement * 100:.2f}%"
        lines.append(
            f"{_short_name(stats.name):<{width}}  {_fmt_float(stats.cosine, '.6f'):>9}  "
            f"{_fmt_float(stats.sqnr_db, '.2f'):>8}  {_fmt_float(stats.max_abs_error, '.3e'):>10}  "
            f"{_fmt_float(stats.mean_abs_error, '.3e'):>10}  {top1:>11}"
        )
    lines.append("")
    for stats in result.outputs:
        if stats.centered_cosine is not None:
            which = f" ({_short_name(stats.name)})" if len(result.outputs) > 1 else ""
            lines.append(f"{'input-dep':<9} cosine {stats.centered_cosine:.4f}, relative error "
                         f"{_fmt_float(stats.centered_rel_error, '.2e')}{which}: each output "
                         "minus its mean over the samples")
    for stats in result.outputs:
        if stats.divergence is not None:
            which = f" ({_short_name(stats.name)})" if len(result.outputs) > 1 else ""
            lines.append(f"{'diverge':<9} {_fmt_float(stats.divergence, '.2e')} {stats.metric}{which}:"
                         " the figure `convert` predicts on synthetic inputs, here on these")
    for stats in result.outputs:
        if stats.float_accuracy is None or stats.quant_accuracy is None:
            continue
        which = f"output {_short_name(stats.name)!r}, " if len(result.outputs) > 1 else ""
        lines.append(
            f"{'accuracy':<9} float {stats.float_accuracy * 100:>8.2f} %   "
            f"quant {stats.quant_accuracy * 100:>8.2f} %   ({which}top-1 against {result.labels!r})"
        )
    if result.quant_size_bytes <= 0 or result.float_size_bytes <= 0:
        compression = "n/a"
    elif result.quant_size_bytes <= result.float_size_bytes:
        compression = f"{result.float_size_bytes / result.quant_size_bytes:.2f}x smaller"
    else:
        compression = f"{result.quant_size_bytes / result.float_size_bytes:.2f}x larger"
    lines.append(
        f"{'size':<9} float {_fmt_size(result.float_size_bytes):>10}   "
        f"quant {_fmt_size(result.quant_size_bytes):>10}   ({compression})"
    )
    runs = f"median of {result.repeats} runs, " if result.repeats else ""
    lines.append(
        f"{'latency':<9} float {result.float_latency_ms:>7.3f} ms   "
        f"quant {result.quant_latency_ms:>7.3f} ms   "
        f"(quant/float {_fmt_float(result.latency_ratio, '.2f')}x; "
        f"{runs}batch {result.samples})"
    )
    settings = []
    if result.threads:
        settings.append(f"{result.threads} threads")
    settings.append(f"session.disable_quant_qdq={int(result.disable_quant_qdq)}")
    lines.append(f"{'provider':<9} {result.provider} ({', '.join(settings)})")
    if result.fused is not None:
        lines.append(f"{'fused':<9} {fusion_summary(result.fused)}")
    lines.append(f"{'inputs':<9} {result.input_source}, {result.samples} samples")
    lines += [f"note: {note}" for note in result.notes]
    lines += [f"FAILED: {failure}" for failure in result.failures]
    return "\n".join(lines)
