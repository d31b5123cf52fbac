"""Int8 activations on pretrained third-party models (issue 23), public API only.

Per model of ``benchmarks/int8_data.py`` (labelled inputs rendered here): the float metric; ours
with ``--activations int8`` at the given options (each given its input shape); ONNX Runtime's
``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax) calibrated on 16
random standard-normal inputs; latency of each against float (batch 1, 2 threads, median of
interleaved runs); and which activations ours kept float (from the report).

    pip install pillow; apt-get install fonts-dejavu-core
    pip download --no-deps -d /work/cache/wheels rapidocr-onnxruntime==1.4.4 ddddocr
    python -m benchmarks.int8_check                  # every model
    python -m benchmarks.int8_check cls --no-ort     # one model, ours only
    python -m benchmarks.int8_check --examples glyphs_resnet   # example models vs their record

Conversions are time-boxed (``--timeout`` seconds each, in a child process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from benchmarks.activations import ort_static, session
from benchmarks.int8_data import OUT, SUITES, Suite


def metric(path: Path, s: Suite) -> float:
    sess = session(path)
    return s.score([sess.run(None, {s.input: s.x[i:i + 1]})[0] for i in range(len(s.x))])


def latency_ratio(path: Path, ref: Path, x: np.ndarray, name: str, runs: int = 30) -> float:
    a, b = session(path), session(ref)
    ta, tb = [], []
    for _ in range(runs):
        for sess, t in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            t.append(time.perf_counter() - t0)
    return statistics.median(ta) / statistics.median(tb)


def _convert(src: str, dst: str, kwargs: dict, queue) -> None:
    from dfmpc_onnx import convert_file
    from dfmpc_onnx.options import ConvertOptions

    try:
        report = convert_file(src, dst, ConvertOptions(**kwargs))
        queue.put({"activations": report.activations, "notes": report.notes})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def convert_timed(src: Path, dst: Path, kwargs: dict, timeout: float) -> dict:
    queue = multiprocessing.get_context("fork").Queue()
    p = multiprocessing.get_context("fork").Process(target=_convert,
                                                    args=(str(src), str(dst), kwargs, queue))
    t0 = time.time()
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        return {"error": f"timed out after {timeout:.0f} s"}
    out = queue.get() if not queue.empty() else {"error": f"exit {p.exitcode}"}
    out["seconds"] = round(time.time() - t0, 1)
    return out


def examples(extra: dict, tag: str, names: list[str]) -> None:
    """The example models at ``extra``: top-1 beside the figure benchmarks/activations_results.json
    records for the default (``python -m benchmarks.activations``), and latency against float."""
    from benchmarks.activations import DATA, MODELS, interleaved_ms, top1
    from dfmpc_onnx import convert_file
    from dfmpc_onnx.options import ConvertOptions

    recorded = {r["model"]: r for r in json.loads(
        (Path(__file__).parent / "activations_results.json").read_text())["accuracy"]}
    work = OUT / "examples"
    work.mkdir(parents=True, exist_ok=True)
    for model in sorted(MODELS.glob("*.onnx")):
        if names and not any(n in model.stem for n in names):
            continue
        data = np.load(DATA[model.name.split("_")[0]])
        x, labels = data["input"].astype(np.float32), data["label"]
        out = work / f"{model.stem}.{tag}.onnx"
        report = convert_file(model, out, ConvertOptions(activations="int8", **extra))
        f, q = interleaved_ms([model, out], x[:1], 100)
        was = recorded.get(model.stem, {})
        print(f"{model.stem:30s} FP32 {100 * top1(model, x, labels):.2f}  {tag} "
              f"{100 * top1(out, x, labels):.2f}  recorded default "
              f"{100 * was.get('ours W7A8 (default)', float('nan')):.2f}  latency/float {q / f:.2f} "
              f"(recorded {was.get('latency b1', float('nan')):.2f})  kept float "
              f"{report.activations.get('kept_float')}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=list(SUITES))
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--tag", default="ours")
    ap.add_argument("--opt", action="append", default=[],
                    help="extra ConvertOptions field=value (JSON value), e.g. activation_headroom=1")
    ap.add_argument("--examples", action="store_true",
                    help="the example models instead (MODELS: substrings of their names)")
    args = ap.parse_args()
    extra = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.opt)}
    if args.examples:
        examples(extra, args.tag, args.models if args.models != list(SUITES) else [])
        return
    rows = {}
    for key in args.models:
        s = SUITES[key]()
        work = OUT / key
        work.mkdir(parents=True, exist_ok=True)
        row: dict = {"float": metric(s.model, s)}
        dst = work / f"{args.tag}.onnx"
        kw = {"activations": "int8", "input_shapes": {s.input: s.shape}, **extra}
        info = convert_timed(s.model, dst, kw, args.timeout)
        if "error" in info:
            row[args.tag] = info["error"]
        else:
            row[args.tag] = metric(dst, s)
            row[f"{args.tag} latency/float"] = latency_ratio(dst, s.model, s.x[:1], s.input)
            act = info["activations"] or {}
            row[f"{args.tag} kept float"] = act.get("kept_float", [])
            row[f"{args.tag} clip"] = act.get("clip")
            row[f"{args.tag} headroom"] = act.get("headroom")
            row[f"{args.tag} divergence by float grids"] = act.get("float_divergence")
            row[f"{args.tag} seconds"] = info["seconds"]
        if not args.no_ort:
            rng = np.random.default_rng(0)
            ort_dst = work / "ort_random.onnx"
            calib = [rng.standard_normal(s.shape).astype(np.float32) for _ in range(16)]
            src = s.model
            if onnx.load(str(src), load_external_data=False).opset_import[0].version < 13:
                # per-channel DequantizeLinear needs opset 13: ORT writes an invalid model below
                src = work / "opset13.onnx"
                onnx.save(version_converter.convert_version(onnx.load(str(s.model)), 13), src)
            for pre in (True, False):  # ORT's pre-processing fails on some exports
                if ort_dst.is_file():
                    break
                try:
                    ort_static(src, ort_dst, calib, pre_process=pre)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    row["ORT error"] = f"{type(exc).__name__}: {exc}"
            if ort_dst.is_file():
                row["ORT random"] = metric(ort_dst, s)
                row["ORT latency/float"] = latency_ratio(ort_dst, s.model, s.x[:1], s.input)
        rows[key] = row
        print(key, json.dumps(row), flush=True)
    path = OUT / f"results_{args.tag}.json"
    path.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
