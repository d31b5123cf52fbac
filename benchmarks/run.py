"""The benchmark: every example model under every bit setting and method, beside the peers.

    python -m benchmarks.run              # full run (~15 min on 2 cores): BENCHMARKS.md + plot
    python -m benchmarks.run --quick      # smoke test (< 1 min): one model, two settings,
                                          # written to out/benchmarks unless --out says where
    python -m benchmarks.run --out DIR    # write the results somewhere else

Every row is a real conversion through the public API, evaluated in ONNX Runtime (CPU, 2 threads)
on the model's whole held-out set. Methods, all on the same bit plan (first/last layer and
unpaired layers at high bits, in each pair A at low bits and B at high bits):

    round      plain rounding, max-abs scales                      --correction none
    measured   bias correction where measured to help (the pair plan's default)  --correction auto
    bc         rounding + bias correction on every layer with kept-BN statistics  --correction bias
    ls-full    + our least-squares compensation (full system)      --correction ls-full
    dfq        cross-layer equalization + bias correction (the classic DFQ of Nagel et al. 2019)
                                                                   --equalize
    bc+prop    bias correction trusting statistics propagated from the input, on the models
               without BatchNormalization nodes only (BN folded, or none)  --propagated-stats

    python -m benchmarks.run --report-only   # rebuild BENCHMARKS.md from results.csv (no rerun)

Peers (benchmarks/peers.py): ONNX Runtime's quantize_static (int8 QDQ, calibrated on seeded random
Gaussian inputs), its 4-bit MatMul weight quantizer, and aimet-onnx's cross-layer equalization
followed by our plain rounding, when a separate aimet environment exists.

Latency: median of repeated batch-8 runs, interleaved with the FP32 model in the same process,
2 threads; weight-only models run with session.disable_quant_qdq=1.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert_file
from dfmpc_onnx.passes.choose_plan import CHECK_FACTOR
from dfmpc_onnx.validate import make_session, measure_latency

from .datasets import EXAMPLES, load_test_set

ROOT = Path(__file__).resolve().parent.parent

METHODS: dict[str, dict] = {
    "round": dict(correction="none"),
    "measured": dict(),
    "bc": dict(correction="bias"),
    "ls-full": dict(correction="ls-full"),
    "dfq": dict(equalize=True),
    "bc+prop": dict(propagated_stats=True),
}
# bc+prop only where no kept BN gives trusted statistics, on the settings that show damage.
PROP_SETTINGS = [(2, 8, "channel"), (3, 8, "channel"), (3, 8, "tensor"), (4, 8, "tensor")]
FULL_SETTINGS = [(low, 8, gran) for gran, low in itertools.product(("channel", "tensor"), (2, 3, 4))]
QUICK_SETTINGS = [(2, 8, "channel"), (3, 8, "tensor")]
QUICK_MODELS = ["digits_resnet20_bnkept"]
QUICK_METHODS = ["round", "measured"]
# The measured plan (--method auto) at fixed budgets and at its default (no target), and at the
# stored bits of each fixed pair plan, so that each is compared at equal bits.
AUTO_TARGETS = [3.0, 4.0, 5.0, 6.0]
FIXED_FOR_AUTO = [(2, 8, "channel"), (3, 8, "channel"), (4, 8, "channel")]
# The paper's Table 1 on our models: its own algorithm (--method paper) with and without its
# compensation, at its settings (one scale per layer, so no channel/tensor choice).
PAPER_METHODS: dict[str, dict] = {"paper-nocomp": dict(method="paper", correction="none"),
                                  "paper": dict(method="paper")}
PAPER_SETTINGS = [(2, 6, "layer"), (2, 8, "layer"), (3, 6, "layer")]
# Each weight grid alone (plain rounding, no correction) on the pair plan.
GRID_QUANTIZERS = ["maxabs", "twn", "mse-ternary", "mse", "asym", "block32", "block64", "block128"]
GRID_SETTINGS = [(2, 8, "channel"), (4, 8, "channel")]
LATENCY_BATCH = 8  # batch 1 on these tiny models is ~1 ms: timer noise would dominate the ratio


@dataclass
class Row:
    """One measured configuration; every field is written to results.csv."""

    model: str
    setting: str          # "2/8 channel", "fp32", "int8 (peer)", ...
    method: str
    top1: float | None
    samples: int
    avg_bits: float | None
    size_bytes: int | None
    convert_s: float | None
    latency_ms: float | None
    fp32_latency_ms: float | None
    note: str = ""
    ideal_bytes: int | None = None  # the report's ideal size: weights at container bits + scales
    stored_bits: float | None = None  # average stored bits per weight, scales included
    weight_bytes: int | None = None  # bytes of the written initializers

    @property
    def latency_ratio(self) -> float | None:
        if self.latency_ms is None or not self.fp32_latency_ms:
            return None
        return self.latency_ms / self.fp32_latency_ms


def top1(path: Path, x: np.ndarray, y: np.ndarray, disable_quant_qdq: bool = True,
         batch: int = 256) -> float:
    sess = make_session(path, disable_quant_qdq=disable_quant_qdq)
    name = sess.get_inputs()[0].name
    preds = [sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    return float((np.concatenate(preds) == y).mean())


def latency_pair(fp32: Path, quant: Path, x1: np.ndarray, repeats: int,
                 disable_quant_qdq: bool = True) -> tuple[float, float]:
    """(fp32 ms, quantized ms), interleaved in one measurement so the ratio is fair."""
    a, b = make_session(fp32), make_session(quant, disable_quant_qdq=disable_quant_qdq)
    feeds = [{a.get_inputs()[0].name: x1}, {b.get_inputs()[0].name: x1}]
    f, q = measure_latency([a, b], feeds, repeats=repeats)
    return f, q


def is_ours(method: str) -> bool:
    return (method in METHODS or method in PAPER_METHODS or method.startswith("grid:")
            or method == "auto")


def _fixed(setting: tuple, **kw) -> tuple[str, dict]:
    low, high, gran = setting
    return (f"{low}/{high} {gran}",
            dict(low_bits=low, high_bits=high,
                 granularity="channel" if gran == "layer" else gran, **kw))


def jobs_for(model: Path, settings, methods, extra: bool) -> list[tuple[str, str, dict]]:
    """(setting label, method name, ConvertOptions keywords) of every conversion of one model."""
    jobs = []
    for s, m in itertools.product(settings, methods):
        if m != "bc+prop":
            label, kw = _fixed(s, **METHODS[m])
            jobs.append((label, m, kw))
    has_bn = any(n.op_type == "BatchNormalization"
                 for n in onnx.load(str(model), load_external_data=False).graph.node)
    if "bc+prop" in methods and not has_bn:
        jobs += [(_fixed(s)[0], "bc+prop", _fixed(s, **METHODS["bc+prop"])[1])
                 for s in PROP_SETTINGS if s in settings]
    if extra:
        jobs += [(_fixed(s)[0], m, _fixed(s, **kw)[1]) for s in PAPER_SETTINGS
                 for m, kw in PAPER_METHODS.items()]
        jobs += [(_fixed(s)[0], f"grid:{q}", _fixed(s, quantizer=q, correction="none")[1])
                 for q in GRID_QUANTIZERS for s in GRID_SETTINGS]
        jobs += [("auto", "auto", {})]
        jobs += [(f"target {t:g}", "auto", dict(target_bits=t)) for t in AUTO_TARGETS]
        if "measured" in methods:
            jobs += [(f"auto @ {_fixed(s)[0]}", "auto", dict(target_bits="same"))
                     for s in FIXED_FOR_AUTO if s in settings]
    return jobs


def our_rows(model: Path, jobs, repeats: int, tmp: Path, progress,
             latency: bool = False) -> Iterator[Row]:
    """Every job on one model. Latency per row only with ``latency``: on these sub-millisecond
    models it is timer noise (the ResNet-18 rows are the speed figures), and it doubled the run."""
    x, y = load_test_set(model)
    x1 = x[:LATENCY_BATCH]
    f_lat, _ = latency_pair(model, model, x1, repeats) if latency else (None, None)
    yield Row(model.stem, "fp32", "fp32", top1(model, x, y), len(y), 32.0, model.stat().st_size,
              None, f_lat, f_lat)
    stored: dict[str, float] = {}
    for setting, method, kw in jobs:
        if kw.get("target_bits") == "same":  # the measured plan at a fixed plan's stored bits
            kw = dict(kw, target_bits=stored[setting.split(" @ ")[1]])
        tag = f"{setting}.{method}".replace("/", "").replace(" ", "_").replace(":", "_")
        out = tmp / f"{model.stem}.{tag}.onnx"
        start = time.perf_counter()
        report = convert_file(model, out, ConvertOptions(**kw))
        secs = time.perf_counter() - start
        if method == "measured":
            stored[setting] = report.stored_bits
        f_ms, q_ms = latency_pair(model, out, x1, repeats) if latency else (None, None)
        row = Row(model.stem, setting, method, top1(out, x, y), len(y),
                  report.average_bits, out.stat().st_size, secs, q_ms, f_ms,
                  ideal_bytes=report.ideal_weight_bytes, stored_bits=report.stored_bits,
                  weight_bytes=report.quant_weight_bytes)
        progress(row)
        yield row
        out.unlink()


def peer_rows(model: Path, settings, repeats: int, tmp: Path, progress) -> Iterator[Row]:
    """Rows of the peers that run here; a peer that cannot run gives one row with its reason."""
    from . import peers

    x, y = load_test_set(model)
    x1 = x[:LATENCY_BATCH]

    def measured(setting: str, method: str, res: peers.PeerResult) -> Row:
        if res.path is None:
            return Row(model.stem, setting, method, None, len(y), None, None, res.seconds, None,
                       None, res.note)
        dq = res.weight_only
        f_ms, q_ms = latency_pair(model, res.path, x1, repeats, disable_quant_qdq=dq)
        return Row(model.stem, setting, method, top1(res.path, x, y, disable_quant_qdq=dq), len(y),
                   res.avg_bits,
                   res.path.stat().st_size, res.seconds, q_ms, f_ms, res.note)

    for per_channel in (True, False):
        gran = "channel" if per_channel else "tensor"
        res = peers.ort_static_int8(model, tmp / f"{model.stem}.ort8.onnx", per_channel=per_channel)
        yield progress(measured(f"8/8 {gran}, int8 act", "ort-static", res))
    if "mlp" in model.stem:
        res = peers.ort_int4_weights(model, tmp / f"{model.stem}.ort4.onnx")
        yield progress(measured("4 block32", "ort-int4", res))
    plans = [(tmp / f"{model.stem}.aimet{low}{high}.onnx", low, high)
             for low, high, gran in settings if gran == "channel"]
    for (_, low, high), res in zip(plans, peers.aimet_equalize_plans(model, plans), strict=True):
        yield progress(measured(f"{low}/{high} channel", "aimet-cle", res))
        if res.path is None:
            break  # the reason is the same for every setting


def resnet18_size_speed(tmp: Path, repeats: int, options: ConvertOptions | None = None) -> dict:
    """Issue-2 figures on a ResNet-18-shaped model: conversion time, size against ideal, latency."""
    from .resnet18 import resnet18

    src, dst = tmp / "resnet18.onnx", tmp / "resnet18.q.onnx"
    model = resnet18()
    onnx.save(model, src)
    start = time.perf_counter()
    report = convert_file(src, dst, options or ConvertOptions())
    wall = time.perf_counter() - start
    x1 = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    f_ms, q_ms = latency_pair(src, dst, x1, repeats)
    _, slow_ms = latency_pair(src, dst, x1, max(3, repeats // 3), disable_quant_qdq=False)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith(".weight"))
    return dict(params=params, convert_s=wall, avg_bits=report.average_bits, pairs=len(report.pairs),
                float_bytes=src.stat().st_size, packed_bytes=dst.stat().st_size,
                ideal_bytes=report.ideal_weight_bytes, fp32_ms=f_ms, q_ms=q_ms, q_slow_ms=slow_ms)


# -- report ------------------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def pivot_table(rows: list[Row], model: str) -> list[str]:
    """Top-1 of one model: a line per method, a column per setting."""
    mine = [r for r in rows if r.model == model and r.method in METHODS]
    settings = list(dict.fromkeys(r.setting for r in mine))
    methods = list(dict.fromkeys(r.method for r in mine))
    cell = {(r.method, r.setting): r for r in mine}
    lines = ["| method | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for m in methods:
        vals = []
        for s in settings:
            r = cell.get((m, s))
            best = max((cell[(k, s)].top1 or 0) for k in methods if (k, s) in cell)
            text = _pct(r.top1) if r else ""
            vals.append(f"**{text}**" if r and r.top1 == best else text)
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    bits = {s: next(r.avg_bits for r in mine if r.setting == s) for s in settings}
    lines.append("| *avg weight bits* | " + " | ".join(f"*{bits[s]:.2f}*" for s in settings) + " |")
    return lines


def paper_table(rows: list[Row]) -> list[str]:
    """The paper's Table 1 laid out on our models: FP32, its plan without compensation, DF-MPC."""
    settings = [f"{lo}/{hi} layer" for lo, hi, _ in PAPER_SETTINGS]
    head = "| model | FP32 | " + " | ".join(
        f"MP{s.split()[0].replace('/', '/')} no comp | MP{s.split()[0]} DF-MPC" for s in settings) + " |"
    lines = [head, "|---|---:|" + "---:|---:|" * len(settings)]
    for model in dict.fromkeys(r.model for r in rows):
        cell = {(r.method, r.setting): r.top1 for r in rows if r.model == model}
        if ("paper", settings[0]) not in cell:
            continue
        vals = [_pct(cell.get(("fp32", "fp32")))]
        for st in settings:
            vals += [_pct(cell.get(("paper-nocomp", st))), _pct(cell.get(("paper", st)))]
        lines.append(f"| {model} | " + " | ".join(vals) + " |")
    return lines


def grid_table(rows: list[Row]) -> list[str]:
    """Top-1 of each weight grid alone (plain rounding, pair plan), with stored bits per weight."""
    settings = [f"{lo}/{hi} {g}" for lo, hi, g in GRID_SETTINGS]
    lines = ["| model | grid | " + " | ".join(settings) + " | stored bits (" + settings[0] + ") |",
             "|---|---|" + "---:|" * (len(settings) + 1)]
    for model in dict.fromkeys(r.model for r in rows):
        mine = {(r.method, r.setting): r for r in rows if r.model == model and
                r.method.startswith("grid:")}
        for q in GRID_QUANTIZERS:
            if (f"grid:{q}", settings[0]) not in mine:
                continue
            vals = []
            for st in settings:
                best = max(r.top1 or 0 for (m, s2), r in mine.items() if s2 == st)
                r = mine.get((f"grid:{q}", st))
                text = _pct(r.top1) if r else ""
                vals.append(f"**{text}**" if r and r.top1 == best else text)
            sb = mine[(f"grid:{q}", settings[0])].stored_bits
            lines.append(f"| {model} | {q} | " + " | ".join(vals) +
                         f" | {'' if sb is None else f'{sb:.2f}'} |")
    return lines


def auto_table(rows: list[Row]) -> list[str]:
    """Top-1 against stored bits: the fixed pair plans and the measured plan (--method auto)."""
    fixed = [f"{lo}/{hi} {g}" for lo, hi, g in FIXED_FOR_AUTO]
    lines = ["| model | FP32 | plan | stored bits | top-1 % | measured plan at the same bits | "
             "difference (points) |", "|---|---:|---|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r.model for r in rows):
        cell = {(r.method, r.setting): r for r in rows if r.model == model}
        fp = cell.get(("fp32", "fp32"))
        if fp is None or ("auto", "auto") not in cell:
            continue
        for st in fixed:
            for method in ("round", "measured", "bc"):
                r = cell.get((method, st))
                a = cell.get(("auto", f"auto @ {st}"))
                if r is None:
                    continue
                diff = "" if a is None else f"{100 * (a.top1 - r.top1):+.1f}"
                auto = "" if a is None else f"{_pct(a.top1)} ({a.stored_bits:.2f} bits)"
                lines.append(f"| {model} | {_pct(fp.top1)} | {st} {method} | {r.stored_bits:.2f} | "
                             f"{_pct(r.top1)} | {auto} | {diff} |")
        for st in ["auto"] + [f"target {t:g}" for t in AUTO_TARGETS]:
            r = cell.get(("auto", st))
            if r is not None:
                lines.append(f"| {model} | {_pct(fp.top1)} | {st} | {r.stored_bits:.2f} | "
                             f"{_pct(r.top1)} | | |")
    return lines


def size_check(rows: list[Row]) -> list[str]:
    """Written file against the ideal size (weights at container bits, scales, zero points)."""
    ratios = [(r.size_bytes / r.ideal_bytes, r) for r in rows if r.ideal_bytes and r.size_bytes]
    if not ratios:
        return []
    worst = max(ratios, key=lambda t: t[0])
    by_grid: dict[str, list[float]] = {}
    for ratio, r in ratios:
        key = r.method[5:] if r.method.startswith("grid:") else r.method
        by_grid.setdefault(key, []).append(ratio)
    packing = [r.weight_bytes / r.ideal_bytes for r in rows if r.ideal_bytes and r.weight_bytes]
    lines = [f"Written initializers over the ideal size, {len(packing)} conversions: "
             f"{min(packing):.4f}-{max(packing):.4f}. Whole file over the ideal: median "
             f"{np.median([t[0] for t in ratios]):.3f}, worst {worst[0]:.3f} ({worst[1].model}, "
             f"{worst[1].setting}, {worst[1].method}): the excess is the graph itself (nodes and "
             "names), 20-30 kB, which weighs on these 150-600 kB models and not on real ones "
             "(ResNet-18 shape above).", "",
             "| method or grid | conversions | median file/ideal | worst |", "|---|---:|---:|---:|"]
    for key, vals in by_grid.items():
        lines.append(f"| {key} | {len(vals)} | {np.median(vals):.3f} | {max(vals):.3f} |")
    return lines


def detail_table(rows: list[Row]) -> list[str]:
    lines = ["| model | setting | method | top-1 % | avg bits | size kB | convert s | latency x FP32 "
             "| note |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = r.latency_ratio
        lines.append(
            f"| {r.model} | {r.setting} | {r.method} | {_pct(r.top1)} | "
            f"{'' if r.avg_bits is None else f'{r.avg_bits:.2f}'} | "
            f"{'' if r.size_bytes is None else f'{r.size_bytes / 1024:.0f}'} | "
            f"{'' if r.convert_s is None else f'{r.convert_s:.2f}'} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {r.note} |")
    return lines


def wins_summary(rows: list[Row]) -> list[str]:
    """Per model: in how many settings each method beats / ties / loses to plain rounding."""
    lines = ["| model | method | beats round | ties (±0.5) | below round | mean gain (points) |",
             "|---|---|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r.model for r in rows):
        base = {r.setting: r.top1 for r in rows if r.model == model and r.method == "round"}
        for method in [m for m in METHODS if m != "round"]:
            diffs = [100 * (r.top1 - base[r.setting]) for r in rows
                     if r.model == model and r.method == method and r.setting in base]
            if not diffs:
                continue
            lines.append(f"| {model} | {method} | {sum(d > 0.5 for d in diffs)} | "
                         f"{sum(abs(d) <= 0.5 for d in diffs)} | {sum(d < -0.5 for d in diffs)} | "
                         f"{np.mean(diffs):+.1f} |")
    return lines


def plot(rows: list[Row], path: Path) -> str:
    """Accuracy against average weight bits, one panel per model. Needs matplotlib (ref extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install '.[ref]')"
    models = list(dict.fromkeys(r.model for r in rows))
    cols = min(4, len(models))
    nrows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    methods = list(dict.fromkeys(r.method for r in rows if r.method != "fp32"
                                 and not r.method.startswith("grid:")))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, model in zip(axes.flat, models, strict=False):
        fp = next((r for r in rows if r.model == model and r.method == "fp32"), None)
        if fp is not None:
            ax.axhline(100 * fp.top1, color="k", lw=0.8, ls="--", label="fp32")
        for m in methods:
            pts = [(r.stored_bits or r.avg_bits, 100 * r.top1, r.setting.endswith("tensor"))
                   for r in rows if r.model == model and r.method == m and r.top1 is not None
                   and (r.stored_bits or r.avg_bits) and not r.method.startswith("grid:")]
            for marker, tensor in (("o", False), ("x", True)):
                sel = [(b, a) for b, a, t in pts if t == tensor]
                if sel:
                    ax.scatter(*zip(*sel, strict=True), color=colors[m], marker=marker, s=18,
                               label=m if not tensor else None)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("stored bits per weight (scales included)")
        ax.set_ylabel("top-1 %")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("Top-1 against stored bits per weight (o per-channel scales, x per-tensor)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path.name}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}{int8_isa()}; Python {platform.python_version()}, onnx {onnx.__version__}, "
            f"onnxruntime {ort.__version__}, NumPy {np.__version__}")


def int8_isa() -> str:
    """The CPU's int8 dot-product instructions, in words, for the machine line: full-range int8
    weights against uint8 activations saturate in ONNX Runtime's AVX2 kernels (int16 pair sums)
    and not with VNNI or AMX, so the same int8 model scores differently by machine (W8A8 on the
    digits ResNet-20: 81.5% on an AMD EPYC without VNNI, 99.3% with it, both ORT 1.32)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in
                      Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    except OSError:
        return ""
    have = [name for flag, name in (("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                                    ("amx_int8", "AMX")) if flag in flags]
    if have:
        return f" ({', '.join(have)})"
    return " (AVX2, no VNNI: full-range int8 weights saturate)" if "avx2" in flags else ""


def write_report(out: Path, rows: list[Row], r18: dict | None, args, wall: float,
                 plot_note: str, png: Path) -> Path:
    md = out / "BENCHMARKS.md"
    reading = ROOT / "benchmarks" / "READING.md"
    cmd = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    lines = ["# Benchmarks", "",
             f"Made by `{cmd}` in {wall / 60:.1f} min on {machine()}, "
             f"{datetime.date.today().isoformat()}. Everything below is regenerated by that "
             "command; the reading is written by hand (`benchmarks/READING.md`) against this run.",
             "", "Top-1 is measured on each model's whole held-out set "
             "(digits: 540 images, glyphs: 2976 images from fonts training never saw). "
             "Bit setting `L/H g`: in each pair the first layer at L bits, the second at H; "
             "first, last and unpaired layers at H; scales per output channel or per tensor. "
             "Methods are listed in `benchmarks/run.py`'s docstring.", ""]
    if reading.is_file() and not args.quick:
        lines += [reading.read_text().rstrip(), ""]
    if r18:
        ideal = r18["ideal_bytes"]
        lines += ["## Size and speed on a ResNet-18-shaped model", "",
                  f"{r18['params'] / 1e6:.2f} M conv/fc weights (random, BN kept), default options "
                  "(the measured plan, packed). With random weights every synthetic input gets "
                  "the same near-uniform prediction, so the predicted agreement is trivially "
                  "high and the plan takes the smallest budget: read the time and sizes here, "
                  "and accuracy on the trained examples below.", "",
                  "| figure | value |", "|---|---:|",
                  f"| conversion wall time | {r18['convert_s']:.2f} s |",
                  f"| average weight bits | {r18['avg_bits']:.2f} |",
                  f"| float file | {r18['float_bytes'] / 2**20:.2f} MiB |",
                  f"| packed file | {r18['packed_bytes'] / 2**20:.2f} MiB |",
                  f"| ideal (params x bits / 8 + scales + float tensors) | {ideal / 2**20:.2f} MiB |",
                  f"| packed / ideal | {r18['packed_bytes'] / ideal:.3f} |",
                  f"| latency FP32, batch 1, 2 threads | {r18['fp32_ms']:.1f} ms |",
                  f"| latency packed, session.disable_quant_qdq=1 | {r18['q_ms']:.1f} ms "
                  f"({r18['q_ms'] / r18['fp32_ms']:.2f}x) |",
                  f"| latency packed, QDQ kept (the default session) | {r18['q_slow_ms']:.1f} ms "
                  f"({r18['q_slow_ms'] / r18['fp32_ms']:.2f}x) |", ""]
    matmul = ROOT / "benchmarks" / "MATMUL.md"  # hand-run figures (benchmarks/matmul_speed.py)
    if matmul.is_file() and not args.quick:
        lines += [matmul.read_text().rstrip(), ""]
    lines += ["## Against plain rounding, per model", "",
              "Settings where each method is above, within 0.5 points of, or below plain rounding "
              "with the same bit plan.", ""] + wins_summary(rows) + [""]
    paper = paper_table(rows)
    if len(paper) > 2:
        lines += ["## The paper's method, as published (`--method paper`)", "",
                  "Its Table 1 laid out on our models: the same plan and grids (ternary TWN at 2 "
                  "bits, DoReFa otherwise, one scale per layer, pairs as `find-pairs` forms them, "
                  "first and last layer high) without compensation (`--correction none`) and with "
                  "its c (Eq. 27, lambda1 = 0.5, lambda2 = 0). Top-1 %. The paper's own figures "
                  "for reference (its models and data, not ours; METHOD.md): CIFAR-10 MP2/6 "
                  "ResNet-18 92.61 FP32 / 10.78 no compensation / 89.12 DF-MPC, ResNet-56 93.88 / "
                  "38.03 / 91.05, VGG-16 93.70 / 10.00 / 90.48.", ""] + paper + [""]
    auto = auto_table(rows)
    default = ConvertOptions()
    if len(auto) > 2:
        lines += ["## The measured plan (`--method auto`, the default) against fixed plans", "",
                  "Each fixed pair plan beside the measured plan given the same budget of stored "
                  "bits (`--target-bits` = the fixed plan's stored bits: containers and scales "
                  "included), then the measured plan at its default (no target: the fewest bits of "
                  "its ladder whose predicted top-1 agreement stays >= "
                  f"{default.min_agreement:g}, measured on {CHECK_FACTOR * default.fidelity_samples} "
                  f"{default.synthetic} synthetic inputs other than the {default.fidelity_samples} "
                  "it was chosen on, or, where 8 bits everywhere keep less, on the samples they "
                  "keep) "
                  "and at fixed targets. Top-1 on the held-out data, which the converter never "
                  "sees.", ""] + auto + [""]
    grids = grid_table(rows)
    if len(grids) > 2:
        lines += ["## Weight grids (`--quantizer`)", "",
                  "Each grid alone, plain rounding (`--correction none`), pair plan, per channel. "
                  "Ternary grids (twn, mse-ternary) differ from maxabs at 2 bits only. Stored "
                  "bits count the container and the scales (and zero points). Best of each "
                  "column in bold.", ""] + grids + [""] + size_check(rows) + [""]
    lines += ["## Top-1 (%) per model", "", plot_note, ""]
    if png.is_file():
        lines += [f"![top-1 against average weight bits]({png.relative_to(out).as_posix()})", ""]
    for model in dict.fromkeys(r.model for r in rows):
        fp = next(r for r in rows if r.model == model and r.method == "fp32")
        lines += [f"### {model}", "", f"FP32: {_pct(fp.top1)} % on {fp.samples} held-out samples, "
                  f"{fp.size_bytes / 1024:.0f} kB. Best of each column in bold.", ""]
        lines += pivot_table(rows, model) + [""]
    peers_ = [r for r in rows if not is_ours(r.method) and r.method != "fp32"]
    if peers_:
        lines += ["## Peers", "", "Notes on installing and running them: "
                  "`benchmarks/PEERS_NOTES.md`.", ""] + detail_table(peers_) + [""]
    lines += ["## Every row", "", "Also in `results.csv`. Latency is relative to the FP32 model "
              "measured interleaved in the same run (batch 8, 2 threads, median).", ""]
    lines += detail_table(rows) + [""]
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return md


def save_results(csv_path: Path, rows: list[Row], meta: dict) -> None:
    """results.csv (one line per row) and results.json (the run's other figures) beside it."""
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*asdict(rows[0]), "latency_ratio"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "latency_ratio": r.latency_ratio})
    csv_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_results(csv_path: Path) -> tuple[list[Row], dict]:
    def num(text: str, kind=float):
        return None if text in ("", "None") else kind(float(text))

    rows = []
    with open(csv_path, newline="") as fh:
        for d in csv.DictReader(fh):
            rows.append(Row(d["model"], d["setting"], d["method"], num(d["top1"]), int(d["samples"]),
                            num(d["avg_bits"]), num(d["size_bytes"], int), num(d["convert_s"]),
                            num(d["latency_ms"]), num(d["fp32_latency_ms"]), d["note"],
                            num(d.get("ideal_bytes", ""), int), num(d.get("stored_bits", "")),
                            num(d.get("weight_bytes", ""), int)))
    return rows, json.loads(csv_path.with_suffix(".json").read_text())


def output_folder(args: argparse.Namespace) -> Path:
    """Where the report goes: what --out says, else the repository for a full run only."""
    if args.out is not None:
        return args.out
    partial = args.quick or args.models or args.no_peers
    return ROOT / "out" / "benchmarks" if partial and not args.report_only else ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: one model, two settings")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for BENCHMARKS.md (default: the repository for a full run; "
                         "out/benchmarks for --quick, --models or --no-peers, so a partial run "
                         "never overwrites the committed report)")
    ap.add_argument("--models", nargs="*", help="model stems under examples/models (default: all)")
    ap.add_argument("--no-peers", action="store_true", help="skip the peer quantizers")
    ap.add_argument("--repeats", type=int, default=None, help="latency runs per row")
    ap.add_argument("--latency", action="store_true",
                    help="also time every row of the example models (noise on models this small)")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild BENCHMARKS.md and the plot from the last run's results, no rerun")
    args = ap.parse_args()
    args.out = output_folder(args)
    if args.out == ROOT / "out" / "benchmarks":
        print(f"partial run: writing to {args.out} (the committed BENCHMARKS.md is untouched)")
    csv_path = args.out / "results.csv" if args.out != ROOT else ROOT / "benchmarks" / "results.csv"
    png = args.out / ("benchmarks" if args.out == ROOT else ".") / "accuracy_vs_bits.png"
    if args.report_only:
        rows, meta = load_results(csv_path)
        md = write_report(args.out, rows, meta.get("resnet18"), args, meta["wall_s"], plot(rows, png),
                          png)
        print(f"rebuilt {md} from {csv_path} ({len(rows)} rows)")
        return
    start = time.perf_counter()
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    methods = QUICK_METHODS if args.quick else list(METHODS)
    names = args.models or (QUICK_MODELS if args.quick else None)
    models = sorted((EXAMPLES / "models").glob("*.onnx"))
    if names:
        models = [m for m in models if m.stem in names]
    repeats = args.repeats or (5 if args.quick else 10)
    args.out.mkdir(parents=True, exist_ok=True)

    def progress(row: Row) -> Row:
        print(f"{row.model:34s} {row.setting:22s} {row.method:10s} top-1 {_pct(row.top1):>5s}"
              + (f"  {row.note}" if row.note else ""), flush=True)
        return row

    rows: list[Row] = []
    r18 = None
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        for model in models:
            jobs = jobs_for(model, settings, methods, extra=not args.quick)
            rows += list(our_rows(model, jobs, repeats, tmp, progress, latency=args.latency))
            if not args.quick and not args.no_peers:
                rows += list(peer_rows(model, settings, repeats, tmp, progress))
        if not args.quick:
            r18 = resnet18_size_speed(tmp, repeats=30)
    plot_note = plot(rows, png) if not args.quick else "plot skipped in --quick mode"
    save_results(csv_path, rows, {"resnet18": r18, "wall_s": time.perf_counter() - start,
                                  "quick": args.quick})
    md = write_report(args.out, rows, r18, args, time.perf_counter() - start, plot_note, png)
    print(f"wrote {md} ({len(rows)} rows, {(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
