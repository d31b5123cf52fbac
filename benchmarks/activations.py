"""Int8 activations with no data (issue 11): accuracy on every example model, and the speed of a
ResNet-18-shaped model on ONNX Runtime's integer kernels.

Accuracy, top-1 on each example's held-out file, for:
- FP32;
- ours at the default W7A8 (``--activations int8``: 7-bit weight grids, see the options' help),
  W8A8 (``--low-bits 8 --high-bits 8``), W4A8 (``--activations int8 --target-bits 4``: 4-bit
  grids in int8 containers) and the measured plan (``--activations int8 --method auto``);
- ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax
  calibration) calibrated on 16 random standard-normal inputs (the examples' inputs are
  normalised to about that), and, as the upper anchor that uses real data, calibrated on the
  first 256 held-out samples (then scored on all of them: it has seen part of the test set).

Clip rules on real data: each example at the default with each rule forced (``--activation-clip``), and
``bn`` (kept BatchNormalization statistics, mean +- k std) at k = 3, 4 and 6, beside the rule
``auto`` chose on synthetic inputs: does the synthetic measurement pick well?

Headroom: each example at the default with headroom 1, 2 and 3, and the ratio of real to synthetic
activation spans that motivates it (``benchmarks/third_party.py`` measures the same on a model we
did not make).

Latency: the ResNet-18 shape of ``benchmarks/resnet18.py`` (BN kept, random weights) at batch 1,
224x224, 2 intra-op threads, default session options, medians of interleaved runs in one process:
FP32, ours (default, W7A8), ORT's W8A8; and the operators ORT runs after its graph optimiser.

    python -m benchmarks.activations            # everything, about 6 minutes here
    python -m benchmarks.activations --latency  # only the ResNet-18 timing

It writes ``benchmarks/activations_results.json`` and ``benchmarks/ACTIVATIONS.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.run import machine
from dfmpc_onnx import convert_file
from dfmpc_onnx.options import ConvertOptions

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "models"
DATA = {"digits": ROOT / "examples" / "data" / "digits_test.npz",
        "glyphs": ROOT / "examples" / "data" / "glyphs_test.npz"}
OURS = {
    "ours W7A8 (default)": ConvertOptions(activations="int8"),
    "ours W8A8": ConvertOptions(activations="int8", low_bits=8, high_bits=8),
    "ours W4A8": ConvertOptions(activations="int8", target_bits=4),
    "ours auto+A8": ConvertOptions(activations="int8", method="auto"),
}
DEFAULT = "ours W7A8 (default)"


def session(path: Path | str, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def top1(path: Path | str, x: np.ndarray, labels: np.ndarray) -> float:
    s = session(path)
    logits = np.concatenate([s.run(None, {"input": x[i:i + 512]})[0] for i in range(0, len(x), 512)])
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def interleaved_ms(paths: list[Path], x: np.ndarray, runs: int) -> list[float]:
    """Median ms of each model on ``x``, runs interleaved (A, B, A, B, ...) in one process."""
    sessions = [session(p) for p in paths]
    for s in sessions:
        for _ in range(3):
            s.run(None, {"input": x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, {"input": x})
            times[i].append(time.perf_counter() - t)
    return [1e3 * statistics.median(t) for t in times]


def ort_static(src: Path, dst: Path, calibration: list[np.ndarray], pre_process: bool = True) -> None:
    """ONNX Runtime's own static QDQ quantization, its usual CPU settings (per-channel int8
    weights, uint8 activations, MinMax), calibrated on ``calibration`` (arrays for the first
    input). ``pre_process``: ORT's recommended shape inference and optimisation first."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: c} for c in calibration])

        def get_next(self):
            return next(self.it, None)

    if pre_process:
        pre = dst.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre))
        src = pre
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def accuracy_table(tmp: Path) -> list[dict]:
    rows = []
    for model in sorted(MODELS.glob("*.onnx")):
        data = np.load(DATA[model.name.split("_")[0]])
        x, labels = data["input"].astype(np.float32), data["label"]
        row = {"model": model.stem, "FP32": top1(model, x, labels)}
        for name, options in OURS.items():
            out = tmp / f"{model.stem}.{name.split()[1]}.onnx"  # W7A8, W8A8, W4A8, auto+A8
            start = time.perf_counter()
            report = convert_file(model, out, options)
            row[name] = top1(out, x, labels)
            row[f"{name} clip"] = report.activations.get("clip")
            row[f"{name} bits"] = round(report.average_bits, 2)
            row[f"{name} s"] = round(time.perf_counter() - start, 1)
            if name == DEFAULT:
                for batch, runs in ((1, 200), (64, 20)):
                    f, q = interleaved_ms([model, out], x[:batch], runs)
                    row[f"latency b{batch}"] = q / f
        rng = np.random.default_rng(0)
        random_calib = [rng.standard_normal((1,) + x.shape[1:]).astype(np.float32) for _ in range(16)]
        ort_static(model, tmp / f"{model.stem}.ort_random.onnx", random_calib)
        row["ORT random calib"] = top1(tmp / f"{model.stem}.ort_random.onnx", x, labels)
        real = [x[i:i + 1] for i in range(256)]
        ort_static(model, tmp / f"{model.stem}.ort_real.onnx", real)
        row["ORT real calib (anchor)"] = top1(tmp / f"{model.stem}.ort_real.onnx", x, labels)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


RULES = ("minmax", "percentile", "mse", "bn3", "bn4", "bn6")


def clip_rules(tmp: Path) -> list[dict]:
    """Real top-1 at the default (W7A8) with each clip rule forced."""
    import dfmpc_onnx.passes.quantize_activations as qa  # the module the pipeline runs

    rows = []
    for model in sorted(MODELS.glob("*.onnx")):
        data = np.load(DATA[model.name.split("_")[0]])
        x, labels = data["input"].astype(np.float32), data["label"]
        row = {"model": model.stem}
        for rule in RULES:
            clip = "bn" if rule.startswith("bn") else rule
            if clip == "bn":
                qa.BN_STDS = float(rule[2:])
            out = tmp / f"{model.stem}.{rule}.onnx"
            convert_file(model, out, ConvertOptions(activations="int8", activation_clip=clip))
            row[rule] = top1(out, x, labels)
        qa.BN_STDS = 6.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def headroom(tmp: Path) -> list[dict]:
    """Top-1 at the default (W7A8) with headroom 1, 2 and 3, and how far real activations exceed
    synthetic ones (span ratio per tensor, real held-out vs the default synthetic inputs, 16 samples each)."""
    from dfmpc_onnx.measure.calibrate import ActivationSamples
    from dfmpc_onnx.measure.synthetic import synthetic_inputs

    rows = []
    for model in sorted(MODELS.glob("*.onnx")):
        data = np.load(DATA[model.name.split("_")[0]])
        x, labels = data["input"].astype(np.float32), data["label"]
        row: dict = {"model": model.stem}
        for h in (1.0, 2.0, 3.0):
            out = tmp / f"{model.stem}.h{h:g}.onnx"
            convert_file(model, out, ConvertOptions(activations="int8", activation_headroom=h))
            row[f"H{h:g}"] = top1(out, x, labels)
        m = onnx.load(model)
        names = [n.output[0] for n in m.graph.node if n.op_type in ("Conv", "Gemm", "Relu", "Add", "Mul")]
        real = ActivationSamples(m, names, {"input": x[:16]})
        syn = ActivationSamples(m, names, synthetic_inputs(m, n=16, kind="smooth"))

        def span(s: ActivationSamples, n: str) -> float:
            return max(abs(s.samples[n].lo), abs(s.samples[n].hi)) + 1e-12

        ratio = np.array([span(real, n) / span(syn, n) for n in names])
        row["span median"], row["span p90"] = float(np.median(ratio)), float(np.percentile(ratio, 90))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def latency(tmp: Path, runs: int = 200) -> dict:
    from benchmarks.resnet18 import resnet18

    fp32 = tmp / "resnet18.onnx"
    onnx.save(resnet18(), fp32)
    ours = tmp / "resnet18.w7a8.onnx"
    convert_file(fp32, ours, ConvertOptions(activations="int8"))
    rng = np.random.default_rng(0)
    ort_q = tmp / "resnet18.ort.onnx"
    ort_static(fp32, ort_q, [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(8)])
    paths = {"FP32": fp32, "ours W7A8": ours, "ORT W8A8": ort_q}
    sessions = {k: session(p) for k, p in paths.items()}
    x = {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, x)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, x)
            times[k].append(time.perf_counter() - t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / "resnet18.w7a8.optimized.onnx")
    ort.InferenceSession(str(ours), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    result = {"ms": ms, "ratio_ours": ms["ours W7A8"] / ms["FP32"],
              "ratio_ort": ms["ORT W8A8"] / ms["FP32"], "optimized_ops": dict(ops.most_common()),
              "runs": runs}
    print(json.dumps(result), flush=True)
    return result


def markdown(rows: list[dict], rules: list[dict], room: list[dict], lat: dict | None) -> str:
    cols = ["FP32", *OURS, "ORT random calib", "ORT real calib (anchor)"]
    lines = ["| model | " + " | ".join(cols)
             + " | clip rule (default) | default/FP32 latency, batch 1 / 64 |",
             "|---|" + "---|" * (len(cols) + 2)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * r[c]:.1f}" for c in cols)
                     + f" | {r[DEFAULT + ' clip']} | {r['latency b1']:.2f}x / "
                     f"{r['latency b64']:.2f}x |")
    if rules:
        auto = {r["model"]: r[DEFAULT + " clip"] for r in rows}
        lines += ["", "Top-1 (%) at the default (W7A8) with each clip rule forced; `auto`'s pick "
                  "(on synthetic inputs) in bold. bnK: kept-BN statistics, mean +- K std "
                  "(min-max where a grid has none; on BN-folded models that is min-max everywhere).", "",
                  "| model | " + " | ".join(RULES) + " |", "|---|" + "---|" * len(RULES)]
        for r in rules:
            cells = [f"**{100 * r[k]:.1f}**" if auto.get(r["model"]) == k else f"{100 * r[k]:.1f}"
                     for k in RULES]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    if room:
        lines += ["", "Top-1 (%) at the default (W7A8) with activation headroom 1, 2 and 3 (the "
                  "default): every synthetic range widened by that factor; and the span of each "
                  "activation on 16 real held-out samples over its span on 16 synthetic inputs (median, 90th "
                  "percentile over the model's Conv/Gemm/Relu/Add/Mul outputs).", "",
                  "| model | H1 | H2 | H3 | real/synthetic span, median | 90th pct |",
                  "|---|---|---|---|---|---|"]
        for r in room:
            lines.append(f"| {r['model']} | {100 * r['H1']:.1f} | {100 * r['H2']:.1f} | "
                         f"{100 * r['H3']:.1f} | {r['span median']:.2f} | {r['span p90']:.2f} |")
    if lat:
        ms = lat["ms"]
        lines += ["", f"ResNet-18 shape, batch 1, 2 threads, median of {lat['runs']} interleaved runs: "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
                  + f"; ours/FP32 {lat['ratio_ours']:.2f}x, ORT/FP32 {lat['ratio_ort']:.2f}x. "
                  "Operators after ORT's optimiser (ours): "
                  + ", ".join(f"{k} {v}" for k, v in lat["optimized_ops"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", action="store_true", help="only the ResNet-18 timing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "activations_results.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [] if args.latency else accuracy_table(tmp)
        rules = [] if args.latency else clip_rules(tmp)
        room = [] if args.latency else headroom(tmp)
        lat = latency(tmp)
    Path(args.out).write_text(json.dumps({"accuracy": rows, "clip_rules": rules, "headroom": room,
                                          "latency": lat}, indent=1) + "\n")
    table = markdown(rows, rules, room, lat)
    print(table)
    if not args.latency:
        (ROOT / "benchmarks" / "ACTIVATIONS.md").write_text(
            "# Int8 activations (`--activations int8`)\n\n"
            f"Made by `python -m benchmarks.activations` on {machine()}, "
            f"{datetime.date.today()}. Top-1 (%) on each example's held-out set.\n\n"
            + table + "\n")


if __name__ == "__main__":
    main()
