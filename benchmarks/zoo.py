"""The zoo: real architectures exported the way users export them, each converted at default options.

Issue 10 section 2. Every architecture comes from its torchvision or timm definition (or, for the
detector and U-Net, a small module built here from torchvision parts), with seeded random weights:
this measures graph shapes, not accuracy. Each is exported with ``torch.onnx.export`` as a user
would (TorchScript exporter at opsets 11/13/17/20, BN folded by the default eval export or kept with
``TrainingMode.PRESERVE``; ``dynamo=True`` at the opsets it takes), always with a dynamic batch
axis, then converted with ``dfmpc_onnx.convert_file`` at default options and again at 8/8, whose
output is compared with the float model's in ONNX Runtime on seeded random inputs.

Each (architecture, export) runs in a forked child so that one hang or crash costs one row; export
and each conversion are time-boxed. Rows are appended to ``benchmarks/zoo_results.csv`` as they
finish, and a rerun skips the rows already there, so the matrix fills progressively::

    PYTHONPATH=$PWD nice -n 19 env OMP_NUM_THREADS=1 /work/venv-zoo/bin/python -m benchmarks.zoo \
        --phase 1            # every architecture at opset 17, TorchScript, BN folded
    ... --phase 2            # TorchScript, BN folded, opsets 11, 13, 20
    ... --phase 3            # TorchScript, BN kept, opset 17
    ... --phase 4            # dynamo=True, opset 18 (its own)
    ... --phase 5 / 6        # BN kept at 11, 13, 20; dynamo at 20 and 17
    ... --phase 7            # instead of 2-6: one more export per architecture, rotating
    ... --table              # rewrite ZOO.md from the CSV
    ... --refill-coverage TAG  # rows of an older converter: pair columns and unpaired reasons
                               # anew (re-export, find-pairs alone; no conversion, cosines stay)

The pair columns come from find-pairs alone (``benchmarks/pair_coverage.py``) under both rules:
the paper's one reader of the whole output (``--no-pair-through``) and the default through
Concat, Split, branches and a kept BN; the 8/8 conversion's report gives ``pairs`` as a check.

``--fixtures tests/data/zoo`` writes the tiny CI models that ``tests/test_zoo_subset.py`` converts
(no torch needed there). Needs torch, torchvision and timm; the converter itself never imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import fcntl
import math
import multiprocessing as mp
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .zoo_catalogue import (
    ARCHS,
    PHASES,
    ROOT,
    ROTATION,
    SEED,
    Arch,
    Export,
    Timeout,
    _alarm,
    export_model,
)
from .zoo_fixtures import write_fixtures

RESULTS = ROOT / "benchmarks" / "zoo_results.csv"
TABLE = ROOT / "ZOO.md"
EXPORT_TIMEOUT_S = 120
# 900: on 2 shared cores a conversion the zoo once did in 190 s took over 300 s (coatnet_0)
CONVERT_TIMEOUT_S = 900
JOB_TIMEOUT_S = EXPORT_TIMEOUT_S + 2 * CONVERT_TIMEOUT_S + 120
COSINE_BATCH = 2
COSINE_MIN = 0.999
CALIBRATION_BATCH = 8
COMMAND = ("`PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 19 /work/venv-zoo/bin/python -m benchmarks.zoo "
           "--phase 1` with the ts17-folded rows deleted from the CSV first, two such processes at "
           "once, each given its share of the architectures with `--only`; the other exports' rows "
           "(earlier `--phase 7` runs) brought up to date with `--refill-coverage TAG` for each, "
           "coatnet_0's dynamo18-folded row converted anew (`--phase 4 --only coatnet_0`); then "
           "`--table`. Phases 2-7 convert the rest of the matrix anew (hours on 2 cores)")



# --------------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    arch: str
    source: str
    input: str
    params_m: float
    export: str
    exporter: str
    opset: int
    bn: str
    export_ok: str = ""
    export_s: float = 0.0
    export_error: str = ""
    onnx_mb: float = 0.0
    conv: int = 0
    gemm: int = 0
    matmul: int = 0
    convert_exit: str = ""
    convert_s: float = 0.0
    convert_error: str = ""
    opset_out: int = 0
    pairs: int = 0
    layers: int = 0
    layers_float: int = 0
    float_reasons: str = ""
    unpaired_reasons: str = ""
    params_in_pairs: int = 0
    params_linear: int = 0
    pct_in_pairs: float = 0.0
    cos_default: float = math.nan
    exit_88: str = ""
    cos_88: float = math.nan
    sqnr_88: float = math.nan
    cos_ref88: float = math.nan
    input_dependence: float = math.nan
    error_88: str = ""
    # find-pairs alone (benchmarks.pair_coverage, no conversion) under both rules: the paper's one
    # reader of the whole output (--no-pair-through) and through Concat/Split/branches (default)
    pairs_one: str = ""
    pct_one: str = ""
    pairs_through: str = ""
    pct_through: str = ""
    convert88_s: float = math.nan
    # notes of either conversion saying a measurement did not run: its plan used fixed rules
    unmeasured: str = ""


COLUMNS = [f.name for f in fields(Row)]


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _reason_key(reason: str) -> str:
    """Group reasons by their first clause without node names: names differ per layer."""
    text = re.sub(r"'[^']*'", "", reason).split(", not")[0].split(":")[0].split(";")[0]
    return " ".join(text.split())[:60]


def _compare(src: Path, out: Path) -> tuple[float, float, str]:
    """Smallest cosine and SQNR (dB) over the outputs of the two models on seeded standard-normal
    inputs, and a note when they could not run at batch ``COSINE_BATCH``. SQNR too: random-weight
    logits can share a large common component that keeps the cosine near 1 whatever the error.

    An export whose float model itself fails at batch 2 although its batch axis is declared
    dynamic (coatnet_0 through dynamo at opset 18: its attention's Reshape targets hold the
    example's batch, [1, 12, 96, -1]) is compared at batch 1, and the note says so: that is the
    exporter's fault, not the converter's."""
    from dfmpc_onnx.validate import make_session, output_stats, random_inputs

    ref_s, q_s = make_session(src, threads=1), make_session(out, threads=1)
    feeds, note = random_inputs(ref_s, COSINE_BATCH, SEED), ""
    try:
        ref = ref_s.run(None, feeds)
    except Exception as exc:
        note = (f"note: the float model fails at batch {COSINE_BATCH} ({_first_line(exc)[:120]}); "
                "compared at batch 1")
        feeds = random_inputs(ref_s, 1, SEED)
        ref = ref_s.run(None, feeds)
    got = q_s.run(None, feeds)
    stats = [output_stats(str(i), a, b) for i, (a, b) in enumerate(zip(ref, got, strict=True))]
    return min(s.cosine for s in stats), min(s.sqnr_db for s in stats), note


def calibrate_bn(model: object, size: int) -> None:
    """Set every BatchNorm's running statistics from one train-mode pass over seeded random inputs.

    Freshly built BN (mean 0, var 1) leaves activations to shrink or grow layer after layer: in
    GoogLeNet and the MobileNetV3 segmenters the float output then does not depend on the input at
    all, and every cosine is 1 whatever the converter does. Calibrated BN normalizes every layer, as
    in a trained network, so the folded weights and the kept BN statistics are realistic too."""
    import torch

    bns = [m for m in model.modules()  # type: ignore[attr-defined]
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one pass sets the statistics outright
        model.train()  # type: ignore[attr-defined]
        model(torch.randn(CALIBRATION_BATCH, 3, size, size, generator=gen))  # type: ignore[operator]
        model.eval()  # type: ignore[attr-defined]


def unpaired_reasons(reasons: dict[str, str]) -> str:
    """Why layers are in no pair, grouped: find-pairs' own reasons (``pair_coverage.coverage``).
    Not a report's after planning: there a single layer's reason is overwritten by why it was not
    bias-corrected ("no BN statistics upstream"), and the measured plan drops every pair."""
    singles = Counter(_reason_key(r) or "no reason given" for r in reasons.values())
    return "; ".join(f"{n}x {r}" for r, n in singles.most_common())


def fill_coverage(row: Row | dict[str, str], src: Path) -> None:
    """The pair columns from find-pairs alone under both rules (seconds: nothing is quantized)."""
    from .pair_coverage import coverage

    one, through = coverage(src, False), coverage(src, True)
    values = {"pairs_one": one.pairs, "pct_one": round(100 * one.weight_share, 1),
              "pairs_through": through.pairs, "pct_through": round(100 * through.weight_share, 1),
              "unpaired_reasons": unpaired_reasons(through.unpaired)}
    for k, v in values.items():
        if isinstance(row, dict):
            row[k] = str(v)
        else:
            setattr(row, k, str(v))


def reference_88(model: object, size: int) -> tuple[float, float]:
    """The cosine that plain symmetric per-output-channel 8-bit rounding of every Conv2d/Linear
    weight gives in torch itself, on the same inputs as ``_compare``: the yardstick that tells a
    converter fault from what 8-bit weights do to a deep random network."""
    import copy

    import torch

    quant = copy.deepcopy(model)
    with torch.no_grad():
        for mod in quant.modules():  # type: ignore[attr-defined]
            if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
                w = mod.weight
                scale = (w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127).view(-1, *[1] * (w.dim() - 1))
                w.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
        x = np.random.default_rng(SEED).standard_normal((COSINE_BATCH, 3, size, size)).astype(np.float32)
        want, got = model(torch.from_numpy(x)), quant(torch.from_numpy(x))  # type: ignore[operator]
    pairs = list(zip(want, got, strict=True)) if isinstance(want, tuple) else [(want, got)]
    cosines = []
    for a, b in pairs:
        a, b = a.double().flatten(), b.double().flatten()
        cosines.append(float(a @ b / (a.norm() * b.norm())))
    # How much the float output changes between the two inputs, relative to its size: near 0, the
    # output ignores the input and no cosine means anything.
    first = pairs[0][0].double()
    dependence = float((first[0] - first[1]).norm() / first[0].norm().clamp_min(1e-30))
    return min(cosines), dependence


def _convert(src: Path, dst: Path, options: object) -> tuple[str, str, object]:
    """convert_file time-boxed: (exit code as the CLI would give it, first error line, report)."""
    from dfmpc_onnx import convert_file
    from dfmpc_onnx.errors import DfmpcError

    try:
        _alarm(CONVERT_TIMEOUT_S)
        report = convert_file(src, dst, options)
        signal.alarm(0)
        return "0", "", report
    except Timeout as exc:
        return "timeout", f"convert {exc}", None
    except DfmpcError as exc:
        if isinstance(exc.__cause__, Timeout):
            return "timeout", f"convert {exc.__cause__}", None
        return str(exc.exit_code), _first_line(exc), None
    except Exception as exc:  # a bug in the converter: the CLI says exit 1
        return "1", _first_line(exc), None
    finally:
        signal.alarm(0)


def _unmeasured(which: str, report: object) -> str:
    """The report's notes that say a measurement did not run (fixed rules instead)."""
    notes = [n for n in report.notes  # type: ignore[attr-defined]
             if "could not measure" in n or "not measured" in n or "no measurement" in n]
    return f"{which}: {notes[0].splitlines()[0][:150]}" if notes else ""


def run_one(arch: Arch, how: Export, work: Path) -> Row:
    """Build, export, convert at default and at 8/8, compare: one CSV row. Runs in a child."""
    import onnx
    import torch

    from dfmpc_onnx import ConvertOptions

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = arch.build().eval()
    calibrate_bn(model, arch.size)
    params = sum(p.numel() for p in model.parameters())
    row = Row(arch.name, arch.source, f"1x3x{arch.size}x{arch.size}", round(params / 1e6, 2),
              how.tag, how.exporter, how.opset, how.bn)
    x = torch.randn(1, 3, arch.size, arch.size)
    # Every row: it does not depend on the export, but an architecture whose phase-1 row is
    # missing must still have it (vgg16_bn's 8/8 cosine was flagged "cos!" for want of one).
    try:
        cos, dependence = reference_88(model, arch.size)
        row.cos_ref88, row.input_dependence = round(cos, 6), round(dependence, 3)
    except Exception as exc:
        print(f"{arch.name}: reference failed: {_first_line(exc)}", file=sys.stderr)
    src = work / f"{arch.name}.{how.tag}.onnx"
    start = time.perf_counter()
    try:
        _alarm(EXPORT_TIMEOUT_S)
        export_model(model, x, src, how)
        signal.alarm(0)
        row.export_ok = "ok"
    except Timeout as exc:
        row.export_ok, row.export_error = "timeout", f"export {exc}"
    except Exception as exc:
        row.export_ok, row.export_error = "failed", _first_line(exc)
    finally:
        signal.alarm(0)
        row.export_s = round(time.perf_counter() - start, 1)
    del model
    if row.export_ok != "ok":
        return row
    row.onnx_mb = round(sum(p.stat().st_size for p in work.iterdir()) / 2**20, 1)
    ops = Counter(n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node)
    row.conv, row.gemm, row.matmul = ops["Conv"], ops["Gemm"], ops["MatMul"]
    if how.bn == "kept" and not ops["BatchNormalization"]:
        row.export_error = "no BatchNormalization left in the export"
    try:
        fill_coverage(row, src)
    except Exception as exc:
        row.unpaired_reasons = f"pair coverage failed: {_first_line(exc)}"

    dst = work / "q.onnx"
    start = time.perf_counter()
    row.convert_exit, row.convert_error, report = _convert(src, dst, ConvertOptions())
    row.convert_s = round(time.perf_counter() - start, 1)
    if report is not None:
        row.unmeasured = _unmeasured("default", report)
        row.opset_out = report.opset_out
        row.layers = len(report.layers)
        floats = [e for e in report.layers if e.role == "float"]
        row.layers_float = len(floats)
        reasons = Counter(_reason_key(e.reason) for e in floats)
        row.float_reasons = "; ".join(f"{n}x {r}" for r, n in reasons.most_common())
        try:
            row.cos_default = round(_compare(src, dst)[0], 5)
        except Exception as exc:
            row.convert_error = f"cosine: {_first_line(exc)}"
        dst.unlink(missing_ok=True)

    start = time.perf_counter()
    row.exit_88, row.error_88, report = _convert(src, dst, ConvertOptions(low_bits=8, high_bits=8))
    row.convert88_s = round(time.perf_counter() - start, 1)
    if report is not None:
        row.unmeasured = "; ".join(filter(None, [row.unmeasured, _unmeasured("8/8", report)]))
        # Pairs as the pair plan (--method pairs) finds them; the default measured plan has none.
        row.pairs = len(report.pairs)
        row.params_in_pairs = sum(e.params for e in report.layers if e.role in ("A", "B"))
        row.params_linear = sum(e.params for e in report.layers)
        row.pct_in_pairs = round(100 * row.params_in_pairs / max(row.params_linear, 1), 1)
        try:
            cos, sqnr, row.error_88 = _compare(src, dst)
            row.cos_88, row.sqnr_88 = round(cos, 6), round(sqnr, 1)
        except Exception as exc:
            row.error_88 = f"cosine: {_first_line(exc)}"
    return row


def _child(arch: Arch, how: Export, conn: object) -> None:
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        try:
            row = run_one(arch, how, Path(tmp))
        except BaseException as exc:  # report it as a row: the parent must not lose the job
            row = Row(arch.name, arch.source, "", 0.0, how.tag, how.exporter, how.opset, how.bn,
                      export_ok="crashed", export_error=_first_line(exc))
            traceback.print_exc()
        conn.send(row)  # type: ignore[attr-defined]


def run_job(arch: Arch, how: Export) -> Row:
    """Run one job in a forked child with a hard time limit (a hang inside C++ ignores SIGALRM)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(arch, how, child))
    proc.start()
    child.close()
    row = None
    if parent.poll(JOB_TIMEOUT_S):
        try:
            row = parent.recv()
        except EOFError:
            row = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if row is None:
        why = f"killed after {JOB_TIMEOUT_S} s" if proc.exitcode in (None, -9) else (
            f"child died (exit {proc.exitcode})")
        row = Row(arch.name, arch.source, "", 0.0, how.tag, how.exporter, how.opset, how.bn,
                  export_ok="crashed", export_error=why)
    return row


# --------------------------------------------------------------------------------------------
# CSV and table
# --------------------------------------------------------------------------------------------


def read_rows() -> list[dict[str, str]]:
    if not RESULTS.exists():
        return []
    with RESULTS.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen: set[tuple[str, str]] = set()  # two runs filling the same column: the first row counts
    unique = []
    for r in rows:
        if (r["arch"], r["export"]) not in seen:
            seen.add((r["arch"], r["export"]))
            unique.append(r)
    return unique


@contextlib.contextmanager
def _csv_lock():
    """One writer of the CSV at a time: a phase appending while a refill rewrites would lose rows."""
    with open(Path(tempfile.gettempdir()) / "dfmpc_zoo_results.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_row(row: Row) -> None:
    with _csv_lock():
        _append_row(row)


def _append_row(row: Row) -> None:
    """Append one row; a CSV written before a column was added is rewritten with the new header."""
    old = read_rows()
    if old and list(old[0]) != COLUMNS:
        with RESULTS.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, COLUMNS, restval="")
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in old)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: getattr(row, k) for k in COLUMNS})


def _machine() -> str:
    from .run import machine  # one description of the machine for every benchmark

    return f"{machine()}, {os.cpu_count()} cores"


def _versions() -> str:
    import onnx
    import onnxruntime

    parts = [f"onnx {onnx.__version__}", f"onnxruntime {onnxruntime.__version__}"]
    for mod in ("torch", "torchvision", "timm", "onnxscript"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def _f(value: str, spec: str) -> str:
    try:
        v = float(value)
    except ValueError:
        return value
    return "" if math.isnan(v) else format(v, spec)


def _matches_reference(cos: float, ref: float) -> bool:
    """The converter's 8/8 cosine is as good as plain per-channel 8-bit rounding in torch (within
    5% of the reference's own distance from 1, plus float noise)."""
    return not math.isnan(ref) and 1 - cos <= 1.05 * (1 - ref) + 1e-6


def _status(r: dict[str, str], ref: dict[str, float]) -> str:
    """ok; "8/8 = torch rounding" when the cosine is below 0.999 exactly as far as plain rounding
    puts it (the network's sensitivity, not the converter); otherwise what failed."""
    if r["export_ok"] != "ok":
        return f"export {r['export_ok']}"
    if r["convert_exit"] != "0":
        return f"exit {r['convert_exit']}"
    if r["exit_88"] != "0":
        return f"8/8 exit {r['exit_88']}"
    cos = _num(r["cos_88"])
    if math.isnan(cos):  # the comparison itself failed (error_88 says why): no cosine to judge
        return "8/8 cosine not measured"
    if cos >= COSINE_MIN:
        return "ok"
    if _matches_reference(cos, ref.get(r["arch"], math.nan)):
        return "8/8 = torch rounding"
    return "8/8 cosine low"


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _reference_note(r: dict[str, str], ref: dict[str, float]) -> str:
    """For a low 8/8 cosine: the torch reference's cosine, which says whether rounding alone
    explains it."""
    want = ref.get(r["arch"], math.nan)
    return "" if math.isnan(want) else f" (torch 8-bit rounding: {want:.6f})"


OLD_CONVERT_TIMEOUT_S = 300  # the box before Timeout was a BaseException


def _cut_mark(r: dict[str, str]) -> str:
    """'*' where a conversion's measurement did not run (fixed rules), or may not have: a row
    from before ``convert88_s`` whose default conversion ran past the old 300 s box, whose
    alarm the converter's best-effort measurement swallowed."""
    if r.get("unmeasured"):
        return " *"
    if not r.get("convert88_s") and _num(r.get("convert_s", "")) >= OLD_CONVERT_TIMEOUT_S:
        return " *"
    return ""


def _pairs_cell(r: dict[str, str], spec: str) -> str:
    """Pairs / weights in pairs, one-reader rule -> default rule (find-pairs alone); where the
    8/8 conversion's report counts other pairs than find-pairs alone, it says so."""
    if not r.get("pairs_through"):  # a row from before these columns: the 8/8 report's figures
        return f"{r['pairs']} / {_f(r['pct_in_pairs'], spec)}%"
    text = (f"{r['pairs_one']} / {_f(r['pct_one'], spec)}% -> "
            f"{r['pairs_through']} / {_f(r['pct_through'], spec)}%")
    if r.get("exit_88") == "0" and r["pairs"] != r["pairs_through"]:
        text += f" (8/8 report: {r['pairs']})"
    return text


def _notes(cell: dict[tuple[str, str], dict[str, str]], ref: dict[str, float]) -> list[str]:
    """What earlier versions of this table showed that was the measurement's doing, not the
    converter's: each with the figures the CSV holds now and the command that shows it."""
    lines = ["", "## Notes: rows an earlier table got wrong", ""]
    r18 = cell.get(("resnet18", "ts17-folded"))
    if r18 and r18.get("pairs_through"):
        lines.append(
            "- resnet18 ts17-folded read \"0 pairs, 0.0%; unpaired: 16x no reason given; 3x output "
            "(no activation) feeds Add; 2x first/last layer\" beside 8 pairs at ts11-folded. That row "
            "was written on 2026-11-24 by the script and converter of then (reproduced exactly with "
            "the tree of commit c517871 on today's export): pairs were counted in the report of the "
            "default conversion, the measured plan, which drops the pairs it used only as a "
            "candidate, and unpaired reasons came from that plan's inspect, where the 16 layers "
            "find-pairs had paired were left single with no reason; rerunning appends only missing "
            "rows, so it stayed while later rows (ts11-folded) counted the 8/8 pair plan. find-pairs "
            "pairs this export as it does at opset 11 (now: "
            f"{r18['pairs_through']} pairs, {r18['pct_through']}% of the weights). The pair columns now "
            "come from find-pairs alone, whose reasons these are, and find-pairs gives every layer in "
            "no pair a reason: the protected first and last layer were the two it left without one. "
            "`python -m benchmarks.zoo --only resnet18 --save ts17-folded --out DIR`, then "
            "`dfmpc-onnx inspect DIR/resnet18.ts17-folded.onnx --low-bits 8 --high-bits 8`.")
    vgg = cell.get(("vgg16_bn", "ts20-kept"))
    if vgg and "vgg16_bn" in ref:
        lines.append(
            f"- vgg16_bn ts20-kept was flagged `(cos!)` at 8/8 cosine {_f(vgg['cos_88'], '.6f')}: it "
            "had no torch reference, which was computed on phase-1 (ts17-folded) rows only, and "
            "vgg16_bn had none; a missing reference counted as \"below\". Its reference is "
            f"{ref['vgg16_bn']:.6f}, so 8-bit rounding alone explains the cosine. Every row now "
            "computes it; `python -m benchmarks.zoo --refill-coverage ts20-kept --only vgg16_bn` "
            "prints it.")
    coat = cell.get(("coatnet_0", "dynamo18-folded"))
    if coat:
        how = (f"now compared at batch 1: 8/8 cosine {_f(coat['cos_88'], '.6f')}"
               if coat.get("error_88", "").startswith("note:") else
               "this row is from before the batch-1 fallback, so its cosine is still not measured")
        lines.append(
            "- coatnet_0 dynamo18-folded was flagged `(cos!)` with no cosine at all: the comparison "
            "failed because the float export itself fails in ONNX Runtime at batch 2 (\"Add node_Add_337"
            " ... Attempting to broadcast an axis by a dimension other than 1. 16 by 32\") although "
            "its batch axis is declared dynamic: the dynamo export writes the attention's Reshape "
            "targets with the example input's batch (constants [1, 12, 96, -1] and [1, 12, 32, 16] "
            "in stages.2). Not the converter's doing. A failed comparison is now \"not measured\", "
            "never \"cosine low\", and a float model that fails at batch 2 is compared at batch 1 "
            f"({how}). `python -m benchmarks.zoo --only coatnet_0 --save dynamo18-folded --out DIR`, "
            "then run DIR/coatnet_0.dynamo18-folded.onnx in ONNX Runtime on a batch of 2.")
    stale = [r for r in cell.values() if r.get("pairs_through") and r.get("exit_88") == "0"
             and r["pairs"] != r["pairs_through"]]
    for r in stale:
        lines.append(
            f"- {r['arch']} {r['export']}: `(8/8 report: {r['pairs']})` because that row's conversions "
            "ran before find-pairs followed a Slice of the channel axis (GhostNet's "
            "`cat([x1, x2], 1)[:, :oup]`); its pair columns are find-pairs' now "
            f"({r['pairs_through']} pairs), its cosines are from the older conversion.")
    return lines if len(lines) > 3 else []


def _keras_rows() -> list[str]:
    """The NHWC section: Keras applications through tf2onnx (``benchmarks/zoo_tf.py``)."""
    path = ROOT / "benchmarks" / "zoo_tf_results.json"
    if not path.is_file():
        return []
    import json

    lines = ["", "## NHWC: Keras applications through tf2onnx", "",
             "From `benchmarks/zoo_tf.py` (its docstring has the commands; TensorFlow 2.21, tf2onnx "
             "1.17, seeded random weights, logits): NHWC input, the transposes tf2onnx writes, "
             "default options and 8/8, cosine vs float on two seeded normal inputs.", "",
             "| arch | input | opset | Transpose nodes | Conv/Gemm/MatMul | default: exit, bits, cosine "
             "| 8/8: exit, pairs, cosine |", "|---|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text()):
        lines.append(f"| {r['arch']} | {r['input']} | {r['opset']} | {r['transposes']} | {r['layers']} | "
                     f"{r['exit default']}, {r.get('bits default', '')}, {r.get('cos default', '')} | "
                     f"{r['exit 8/8']}, {r.get('pairs 8/8', '')}, {r.get('cos 8/8', '')} |")
    return lines


def write_table(command: str) -> None:
    """ZOO.md from the CSV: a summary per export, one overview line per architecture (at the
    first export of phase 1), pairs across exports, then every failure with its first line."""
    rows = read_rows()
    order = [e.tag for p in sorted(PHASES) for e in PHASES[p]]  # phase 7 reuses these tags
    tags = [t for t in order if any(r["export"] == t for r in rows)]
    tags += sorted({r["export"] for r in rows} - set(tags))
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    cell = {(r["arch"], r["export"]): r for r in rows}
    ref: dict[str, float] = {}  # the torch reference does not depend on the export
    for r in rows:
        if not math.isnan(_num(r.get("cos_ref88", ""))):
            ref.setdefault(r["arch"], _num(r["cos_ref88"]))
    lines = [
        "# Zoo: real architectures through dfmpc-onnx",
        "",
        "Generated by `benchmarks/zoo.py --table` from `benchmarks/zoo_results.csv` (issue 10 section "
        "2); every figure below is in that CSV, written by the command below. Rerunning appends only "
        "the rows missing from the CSV; delete it to start over.",
        "",
        f"- Command: {command}",
        f"- Table written: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_machine()}, shared with other jobs; times are wall seconds under `nice -n 19` "
        "with OMP_NUM_THREADS=1 and only indicate cost.",
        f"- Versions: {_versions()}",
        "- Models: torchvision and timm definitions (detector and U-Net: modules in the script built "
        "from torchvision parts), seeded random weights (torch.manual_seed(0)), BatchNorm statistics "
        f"set by one train-mode pass over {CALIBRATION_BATCH} seeded random inputs, eval mode, "
        "dynamic batch axis; segmenters export their `out` tensor. Random networks with normalized "
        "layers amplify small weight errors far more than trained ones, so the cosines below measure "
        "that sensitivity as much as the converter: the torch reference column separates the two. "
        "Exports: `ts` = TorchScript exporter "
        "(`dynamo=False`), `dynamo` = `dynamo=True`; `folded` = default eval export (BN folded into "
        "the Conv), `kept` = `training=TrainingMode.PRESERVE` (BatchNormalization kept).",
        f"- Conversion: `dfmpc_onnx.convert_file` at default options (the measured plan), which "
        f"includes the full onnx.checker and an ONNX Runtime load of the output; then again with the "
        f"8/8 pair plan (`--low-bits 8 --high-bits 8`), whose report gives the pairs (the measured "
        f"plan forms none). Cosine and SQNR: "
        f"smallest over the outputs, float vs converted model in ONNX Runtime (CPU) on seeded standard "
        f"normal inputs, batch {COSINE_BATCH}; 8/8 should reach {COSINE_MIN}. `torch ref` = the cosine "
        "that plain symmetric per-channel 8-bit rounding of every Conv2d/Linear weight gives in torch "
        "itself on the same inputs: where 8/8 is low and the reference is just as low, rounding alone "
        "explains it.",
        f"- Time boxes: export {EXPORT_TIMEOUT_S} s, each conversion {CONVERT_TIMEOUT_S} s, a whole "
        f"job {JOB_TIMEOUT_S} s.",
        "- Reproduce one model: `python -m benchmarks.zoo --only ARCH --save TAG --out DIR` writes "
        "the export, then `dfmpc-onnx convert DIR/ARCH.TAG.onnx -o out.onnx`.",
        "",
        "## Summary per export",
        "",
        "| export | archs | exported | converted (exit 0) | 8/8 cosine >= 0.999 | 8/8 below, = torch "
        "rounding | not ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for tag in tags:
        group = [r for r in rows if r["export"] == tag]
        exported = sum(r["export_ok"] == "ok" for r in group)
        converted = sum(r["export_ok"] == "ok" and r["convert_exit"] == "0" for r in group)
        good = sum(_status(r, ref) == "ok" for r in group)
        as_ref = sum(_status(r, ref) == "8/8 = torch rounding" for r in group)
        bad = Counter(_status(r, ref) for r in group
                      if _status(r, ref) not in ("ok", "8/8 = torch rounding"))
        lines.append(f"| {tag} | {len(group)} | {exported} | {converted} | {good} | {as_ref} | "
                     f"{', '.join(f'{n}x {s}' for s, n in bad.most_common())} |")

    first = order[0]
    lines += ["", f"## Architectures ({first})", "",
              "Layers: Conv/Gemm/MatMul nodes in the export. Float layers: how many of the report's "
              "layers stay float, and why (grouped by the reason's first words). Pairs and weights in "
              "pairs (weights of the layers in a pair / weights of every Conv/ConvTranspose/Gemm/"
              "MatMul), before -> after: the paper's one-reader rule (`--no-pair-through`: B is the "
              "one reader of A's whole output) -> the default rule, which also pairs through Concat, "
              "Split, branches, a kept BN, a gate or attention (`benchmarks/pair_coverage.py`: "
              "find-pairs alone on the export, first and last layer protected as in a conversion). "
              "Unpaired layers: find-pairs' reasons under the default rule (layers left in float "
              "count too). The default rule can cover fewer weights than the one-reader rule "
              "(ssdlite_mobilenet_v3, mobilevit_s): find-pairs takes layers in graph order, and a "
              "layer whose output several branches read pairs with all of them, so each branch's "
              "first conv becomes a B and is no longer the low-bit layer of its own pair (SSDLite: "
              "stage2.16.0 pairs with box.1.0, cls.1.0 and extra.0.0; box.1.0 -> box.1.3 is lost).",
              "",
              "| arch | source | params M | input | layers | convert | s | pairs / weights in pairs: "
              "one reader -> default | float layers (why) | unpaired layers (why) | cos default | "
              "cos 8/8 | SQNR 8/8 dB | torch ref 8/8 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arch in archs:
        r = cell.get((arch, first))
        if r is None:
            continue
        if r["export_ok"] != "ok":
            lines.append(f"| {arch} | {r['source']} | {r['params_m']} | {r['input']} | | export "
                         f"{r['export_ok']}: {r['export_error'][:100]} | | | | | | | | |")
            continue
        head = (f"| {arch} | {r['source']} | {r['params_m']} | {r['input']} | "
                f"{r['conv']}/{r['gemm']}/{r['matmul']} | ")
        if r["convert_exit"] != "0":
            lines.append(head + f"exit {r['convert_exit']}: {r['convert_error'][:100]} | "
                         f"{r['convert_s']} | | | | | | | {_f(r.get('cos_ref88', ''), '.6f')} |")
            continue
        why = f"{r['layers_float']}/{r['layers']}" + (f": {r['float_reasons'][:150]}"
                                                     if r["float_reasons"] else "")
        cos88 = _f(r["cos_88"], ".6f") if r["exit_88"] == "0" else f"exit {r['exit_88']}"
        lines.append(head + f"ok | {r['convert_s']}{_cut_mark(r)} | {_pairs_cell(r, '.1f')} "
                     f"of {int(r['params_linear']) / 1e6:.2f} M | {why} | "
                     f"{r.get('unpaired_reasons', '')[:200]} | {_f(r['cos_default'], '.4f')} | "
                     f"{cos88} | {_f(r.get('sqnr_88', ''), '.1f')} | {_f(r.get('cos_ref88', ''), '.6f')} |")

    if any(_cut_mark(r) for r in rows if r["export"] == first):
        lines += ["", f"`*` after the seconds: that conversion's measurement did not run, or may not "
                  f"have, so its plan used fixed rules: the row says so in the CSV's `unmeasured`, or "
                  f"it was written under the old {OLD_CONVERT_TIMEOUT_S} s time box and its default "
                  "conversion ran past it (the box's alarm was an Exception, which the converter's "
                  "best-effort measurement caught and went on without measurements; now a "
                  f"BaseException and a {CONVERT_TIMEOUT_S} s box). Pair columns do not depend on it; "
                  "8/8 cosines barely do (no layer of a BN-folded export is bias-corrected either way)."]
    lines += ["", "## Pairs and weights in pairs across exports", "",
              "Each cell: pairs / % of weights in pairs under the one-reader rule -> under the "
              "default rule, or what went wrong (`exp` = export failed, "
              "`exit N` = convert exit code); `(ref)`: 8/8 cosine below 0.999 but as close as plain "
              "8-bit rounding in torch gets, `(cos!)`: 8/8 cosine below 0.999 and below that "
              "reference, `(no cos)`: the 8/8 comparison itself failed (Everything not ok says why), "
              "`(b1)`: compared at batch 1, the float export fails at batch 2 (the note is in the "
              "CSV's error_88).",
              "",
              "| arch | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
    for arch in archs:
        cells = []
        for tag in tags:
            r = cell.get((arch, tag))
            if r is None:
                cells.append("")
            elif r["export_ok"] != "ok":
                cells.append("exp " + r["export_ok"])
            elif r["convert_exit"] != "0":
                cells.append(f"exit {r['convert_exit']}")
            else:
                flag = {"ok": "", "8/8 = torch rounding": " (ref)",
                        "8/8 cosine not measured": " (no cos)"}.get(_status(r, ref), " (cos!)")
                if r.get("error_88", "").startswith("note:"):
                    flag += " (b1)"
                cells.append(_pairs_cell(r, ".0f") + flag)
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")

    lines += _notes(cell, ref)
    lines += _keras_rows()
    bad_rows = [r for r in rows if _status(r, ref) not in ("ok", "8/8 = torch rounding")]
    lines += ["", "## Everything not ok", "",
              "| arch | export | status | first line |", "|---|---|---|---|"]
    for r in bad_rows:
        status = _status(r, ref)
        if status.startswith("export"):
            text = r["export_error"]
        elif status.startswith("exit"):
            text = r["convert_error"]
        elif status.startswith("8/8 exit") or status == "8/8 cosine not measured":
            text = r["error_88"]
        else:
            text = f"cosine {_f(r['cos_88'], '.6f')}{_reference_note(r, ref)}"
        text = text.replace("|", "/").replace("\n", " ")[:220]
        lines.append(f"| {r['arch']} | {r['export']} | {status} | {text} |")
    TABLE.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def save_exports(names: list[str], tag: str, out: Path) -> int:
    """Write the export of ``tag`` for each named architecture, built exactly as a zoo row builds it."""
    import torch

    how = next((e for p in PHASES.values() for e in p if e.tag == tag), None)
    if how is None:
        print(f"unknown export {tag!r}; one of {[e.tag for p in PHASES.values() for e in p]}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for arch in (a for a in ARCHS if a.name in names):
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        model = arch.build().eval()
        calibrate_bn(model, arch.size)
        path = out / f"{arch.name}.{tag}.onnx"
        export_model(model, torch.randn(1, 3, arch.size, arch.size), path, how)
        print(path)
    return 0


def refill_coverage(tag: str, names: list[str] | None = None) -> int:
    """Recompute, for one export's rows, what needs no conversion: the pair columns and unpaired
    reasons (find-pairs alone, ``fill_coverage``) and a missing torch reference. Rows written by
    an older converter get the current pairs without hours of conversions; their cosines stay."""
    import torch

    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        for r in read_rows():
            if r["export"] != tag or r["export_ok"] != "ok" or (names and r["arch"] not in names):
                continue
            arch = next(a for a in ARCHS if a.name == r["arch"])
            save_exports([arch.name], tag, Path(tmp))
            src = Path(tmp) / f"{arch.name}.{tag}.onnx"
            new: dict[str, str] = {}
            fill_coverage(new, src)
            src.unlink()
            if math.isnan(_num(r.get("cos_ref88", ""))):
                torch.manual_seed(SEED)
                np.random.seed(SEED)
                model = arch.build().eval()
                calibrate_bn(model, arch.size)
                cos, dependence = reference_88(model, arch.size)
                new["cos_ref88"], new["input_dependence"] = str(round(cos, 6)), str(round(dependence, 3))
            print(f"[{tag}] {arch.name}: {new}", flush=True)
            with _csv_lock():
                rows = read_rows()  # reread: a running phase may have appended meanwhile
                for row in rows:
                    if (row["arch"], row["export"]) == (r["arch"], tag):
                        row.update(new)
                with RESULTS.open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, COLUMNS, restval="")
                    writer.writeheader()
                    writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", type=int, action="append", choices=sorted(PHASES) + [7],
                    help="export phases to run (repeatable); default: none")
    ap.add_argument("--only", action="append", help="architecture names to run (repeatable)")
    ap.add_argument("--table", action="store_true", help="rewrite ZOO.md from the CSV")
    ap.add_argument("--fixtures", type=Path, help="write the tiny CI exports to this folder and exit")
    ap.add_argument("--list", action="store_true", help="list the architectures and exit")
    ap.add_argument("--save", metavar="TAG", help="only export the --only architectures with this "
                    "export (e.g. ts17-folded) into --out, to reproduce a row by hand")
    ap.add_argument("--out", type=Path, default=Path("."), help="folder for --save")
    ap.add_argument("--refill-coverage", metavar="TAG", action="append",
                    help="recompute the pair columns, unpaired reasons and a missing torch reference "
                    "of this export's rows (re-export and analyse, no conversion; repeatable)")
    args = ap.parse_args(argv)
    if args.list:
        for a in ARCHS:
            print(f"{a.name:28} {a.source:34} {a.size}")
        return 0
    if args.fixtures:
        write_fixtures(args.fixtures)
        return 0
    if args.save:
        return save_exports(args.only or [], args.save, args.out)
    for tag in args.refill_coverage or []:
        refill_coverage(tag, args.only)
    import timm  # noqa: F401  imported once here, before forking, so children start fast
    import torch
    import torchvision  # noqa: F401

    torch.set_num_threads(1)
    done = {(r["arch"], r["export"]) for r in read_rows()}
    archs = [a for a in ARCHS if not args.only or a.name in args.only]
    jobs = []
    for phase in args.phase or []:
        if phase == 7:
            jobs += [(ROTATION[i % len(ROTATION)], arch) for i, arch in enumerate(archs)]
        else:
            jobs += [(how, arch) for how in PHASES[phase] for arch in archs]
    if jobs:
        for how, arch in jobs:
            if (arch.name, how.tag) in done:
                continue
            start = time.perf_counter()
            row = run_job(arch, how)
            append_row(row)
            done.add((arch.name, how.tag))
            print(f"[{how.tag}] {arch.name}: export {row.export_ok} {row.export_s}s "
                  f"convert {row.convert_exit or '-'} pairs {row.pairs} in-pairs {row.pct_in_pairs}% "
                  f"cos88 {row.cos_88} ({time.perf_counter() - start:.0f}s) "
                  f"{row.export_error or row.convert_error or row.error_88}", flush=True)
    if args.table:
        write_table(COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
