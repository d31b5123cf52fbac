"""Conversion time (issue 20 s1): ``dfmpc-onnx convert`` (default plan, ``--fast``, ``--target-bits 5``
with and without it, the fixed pair plan) beside ONNX
Runtime's ``quantize_static`` (16 random calibration samples), with the chosen stored bits and
predicted fidelity beside each time, and for the example models the output's top-1 accuracy on
their labelled test set (examples/data), so a change that saves time by choosing a worse plan shows.

    python -m benchmarks.convert_time [--python PY] [--label after] [--models resnet18,digits_resnet20_bnkept]
    python -m benchmarks.convert_time --label now --models suite --modes default

``--models`` takes resnet18, example stems and the pretrained suite's names (``suite``: all of
them; ``benchmarks.pretrained`` fetches their wheels, and ORT's time there is ``quantize_static``
calibrated on 16 random inputs of the suite's real shapes, its ``ort_rand`` column).

``--python``: the interpreter whose ``dfmpc_onnx`` converts (another install gives the "before"
figures: ``PYTHONPATH=/tmp/base_site``, a ``pip install --target`` of an older commit). The CLI
only is timed, as a user runs it, in a fresh process; the load average is recorded beside each
time (the machine is shared). Results go to benchmarks/convert_time_results.json (merged by label)
and a table into BENCHMARKS.md between the convert-time markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "convert_time_results.json"
MODES = {"default": [], "fast": ["--fast"], "tb5": ["--target-bits", "5"],
         "fast tb5": ["--fast", "--target-bits", "5"],
         "pairs 2/8": ["--method", "pairs", "--low-bits", "2", "--high-bits", "8"],
         "fast pairs 2/8": ["--fast", "--method", "pairs", "--low-bits", "2", "--high-bits", "8"]}


def accuracy(model: Path, example: Path | None) -> float | None:
    """Top-1 accuracy of ``model`` on the labelled test set of ``example`` (an example model's
    path; None for the others), with ONNX Runtime's default session options."""
    if example is None:
        return None
    from benchmarks.datasets import load_test_set
    from benchmarks.run import top1

    x, labels = load_test_set(example)
    return top1(model, x, labels, disable_quant_qdq=False)


def models(out: Path, wanted: list[str] | None) -> dict[str, Path]:
    from benchmarks.resnet18 import resnet18

    found = {}
    path = out / "resnet18.onnx"
    if wanted is None or "resnet18" in wanted:
        if not path.exists():
            onnx.save(resnet18(), str(path))
        found["resnet18"] = path
    for p in sorted((ROOT / "examples" / "models").glob("*.onnx")):
        if wanted is None or p.stem in wanted:
            found[p.stem] = p
    if wanted is not None:
        from benchmarks.pretrained import SPECS, extract

        for spec in SPECS:
            if "suite" in wanted or spec.name in wanted:
                found[spec.name] = extract(spec) / spec.member
    return found


def suite_spec(name: str):
    """The pretrained suite's entry of that name, or None (resnet18, an example)."""
    from benchmarks.pretrained import SPECS

    return next((s for s in SPECS if s.name == name), None)


def time_convert(python: str, src: Path, extra: list[str], env: dict, example: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rep = Path(tmp) / "r.json"
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        # cwd: a fresh folder, so that -c's sys.path[0] does not put this checkout first.
        done = subprocess.run([python, "-c", "import sys; from dfmpc_onnx.cli import main; sys.exit(main())",
                               "convert", str(src), "-o", str(Path(tmp) / "q.onnx"), "--report", str(rep),
                               *extra], env=env, capture_output=True, text=True, cwd=tmp)
        seconds = time.perf_counter() - t0
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1:], "seconds": seconds}
        r = json.loads(rep.read_text())
        real = accuracy(Path(tmp) / "q.onnx", example)
    fid = r.get("fidelity") or {}
    return {"seconds": round(seconds, 2), "load": round(load, 2), "stored_bits": r.get("stored_bits"),
            "accuracy": real,
            "agreement": fid.get("top1_agreement"), "score": fid.get("score"),
            "pass_seconds": r.get("pass_seconds"),
            "notes": [n for n in r.get("notes", []) if "measured" in n or "bisection" in n]}


def time_ort(src: Path, spec=None) -> dict:
    from benchmarks.activations import ort_static

    if spec is not None:  # a suite model: its real input shapes, random values (ort_rand)
        from benchmarks.pretrained import ort_quantize

        samples = spec.make(spec.quick, 0)
        with tempfile.TemporaryDirectory() as tmp:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            try:
                ort_quantize(src, Path(tmp) / "q.onnx", "ort_rand", samples)
            except Exception as exc:  # noqa: BLE001 - ORT's own failure is a figure too
                return {"error": f"{type(exc).__name__}: {str(exc)[:120]}",
                        "seconds": round(time.perf_counter() - t0, 2), "load": round(load, 2)}
            return {"seconds": round(time.perf_counter() - t0, 2), "load": round(load, 2)}
    m = onnx.load(str(src), load_external_data=False)
    dims = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    cal = [rng.standard_normal(dims).astype(np.float32) for _ in range(16)]
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        ort_static(src, Path(tmp) / "q.onnx", cal, pre_process=False)  # ORT's pre-process needs sympy
        return {"seconds": round(time.perf_counter() - t0, 2), "load": round(load, 2)}


def table(results: dict) -> str:
    """One table per group of labels: those run on the pretrained suite's models only, and the
    others (the ResNet-18 shape and the examples), so neither has a column of empty cells."""
    from benchmarks.pretrained import SPECS

    suite = {s.name for s in SPECS}
    on_suite = {lab for lab, rows in results.items() if rows and set(rows) <= suite}
    groups = [{k: v for k, v in results.items() if k not in on_suite},
              {k: v for k, v in results.items() if k in on_suite}]
    return "\n\n".join(_table(g) for g in groups if g)


def _table(results: dict) -> str:
    labels = sorted(results, key=lambda lab: ("before" not in lab, lab))
    names = list(dict.fromkeys(n for lab in labels for n in results[lab]))
    # The (label, mode) columns that were run, in MODES' order (older labels lack newer modes).
    columns = [(lab, m) for lab in labels for m in MODES
               if any(m in row for row in results[lab].values())]
    head = ["model", "ORT quantize_static s"]
    for lab, mode in columns:
        head.append(f"{lab} {mode}: s (load; choose-plan s) / bits / agreement / accuracy")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        ort = next((results[lab][n].get("ort") for lab in labels if results[lab].get(n, {}).get("ort")), None)
        cells = [n, "" if not ort else f"{ort['seconds']:.1f} ({ort['load']:.1f})"
                 + (" (fails)" if "error" in ort else "")]
        for lab, mode in columns:
            r = results[lab].get(n, {}).get(mode)
            if not r or "error" in r:
                cells.append("" if not r else "failed")
                continue
            agree = "" if r["agreement"] is None else f"{r['agreement']:.3f}"
            choose = (r.get("pass_seconds") or {}).get("choose-plan", 0.0)
            real = "" if r.get("accuracy") is None else f" / {100 * r['accuracy']:.1f}%"
            cells.append(f"{r['seconds']:.1f} ({r['load']:.1f}; {choose:.1f}) / "
                         f"{r['stored_bits']:.2f} / {agree}{real}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_markdown(results: dict) -> None:
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text()
    begin, end = "<!-- convert-time:begin -->", "<!-- convert-time:end -->"
    block = (f"{begin}\n_Generated by `python -m benchmarks.convert_time`; seconds of the whole CLI run "
             f"(load average at its start), stored bits per weight, predicted top-1 agreement on "
             f"held-out synthetic inputs._\n\n{table(results)}\n{end}")
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n## Conversion time\n\n" + block + "\n"
    md.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--label", default="after")
    ap.add_argument("--models", default=None,
                    help="comma-separated: resnet18, example stems, pretrained suite names, suite")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {','.join(MODES)}")
    ap.add_argument("--no-ort", action="store_true")
    args = ap.parse_args()
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    env = dict(os.environ)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    mine = results.setdefault(args.label, {})
    for name, path in models(out, args.models.split(",") if args.models else None).items():
        row = mine.setdefault(name, {})
        for mode in args.modes.split(","):
            example = path if path.parent == ROOT / "examples" / "models" else None
            row[mode] = time_convert(args.python, path, MODES[mode], env, example)
            print(name, mode, row[mode], flush=True)
        if not args.no_ort:
            row["ort"] = time_ort(path, suite_spec(name))
            print(name, "ort", row["ort"], flush=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results)


if __name__ == "__main__":
    main()
