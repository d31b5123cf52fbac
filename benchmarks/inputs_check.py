"""Third-party models with dynamic input dimensions, converted with no --input-shape (issue 19):
which shape the converter measures at, and whether dead-leaves inputs rank layers and choose
plans better than the default smooth noise.

Models: PaddleOCR's text-direction classifier (``x[N,3,?,?]``) and PP-OCRv4 recogniser
(``x[N,3,?,W]``, CTC over 6625 symbols) from the ``rapidocr-onnxruntime`` wheel, and ddddocr's
captcha recogniser (``input1[1,1,64,image_width]``, per-step symbol indices) from its wheel. Real data: text
lines rendered with Pillow in the DejaVu fonts (``benchmarks.third_party.text_lines``), at 48x192
for the classifier (its label: turned 180 degrees or not) and 48x320 for the recogniser (PaddleOCR's
shapes), grey 64x256 for ddddocr, normalised to [-1, 1] as PaddleOCR and ddddocr do.

Printed per model:
- the shape the converter resolves (``dfmpc_onnx.measure.input_spec``), checked in ONNX Runtime;
- ranking: each layer alone rounded max-abs per channel at 2 and 4 bits, the whole-network
  divergence (the converter's probe) on 16 real lines against that on 16 synthetic inputs of each
  kind: Spearman over layers, per width, and the mean; ``real-half`` (16 other real lines) is
  the ceiling;
- plans: ``convert --target-bits 4`` with each kind, and the all-8-bit plan (what a model whose
  shape could not be resolved used to get), scored on 200 real lines: the classifier's top-1
  (float: its own), the recognisers' greedy CTC decode equal to the float model's (line rate).

    pip install pillow; apt-get install fonts-dejavu-core
    pip download --no-deps -d /work/cache/wheels rapidocr-onnxruntime==1.4.4
    pip download --no-deps -d /work/cache/wheels ddddocr==1.6.1
    nice -n 10 python -m benchmarks.inputs_check [--wheels DIR] [--models cls rec captcha]
        [--no-ranking] [--plans smooth leaves 8bit]
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.fidelity_speed import layer_weights, spearman
from benchmarks.third_party import WORDS, text_lines
from dfmpc_onnx import convert_file
from dfmpc_onnx.measure.fidelity import FidelityProbe
from dfmpc_onnx.measure.input_spec import ort_check, resolve_shapes
from dfmpc_onnx.measure.synthetic import synthetic_inputs
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.passes import Context
from dfmpc_onnx.passes.normalise import ConstantsToInitializers
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "inputs_check"
MODELS = {"cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "captcha": "ddddocr/common.onnx"}
WHEELS = {"cls": "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
          "rec": "rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "captcha": "ddddocr-1.6.1-py3-none-any.whl"}
KINDS = ("smooth", "leaves", "gaussian")
BITS = (2, 4)


def extract(wheel: Path, member: str) -> Path:
    path = OUT / member
    if not path.is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extract(member, OUT)
    return path


def rec_lines(n: int, seed: int, height: int = 48, width: int = 320, grey: bool = False) -> np.ndarray:
    """Text lines at ``height``, their aspect kept, padded to ``width``, in [-1, 1] (``grey``:
    one channel, as ddddocr feeds its recogniser)."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"))
    rng = random.Random(seed)
    xs = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        font = ImageFont.truetype(rng.choice(fonts), rng.randint(20, 32))
        img = Image.new("RGB", (max(int(font.getlength(text)) + 16, 48), 48),
                        (rng.randint(200, 255),) * 3)
        ImageDraw.Draw(img).text((8, 6), text, font=font, fill=(rng.randint(0, 60),) * 3)
        if grey:
            img = img.convert("L")
        w = min(width, int(img.width * height / img.height))
        a = (np.asarray(img.resize((w, height)), np.float32) / 255 - 0.5) / 0.5
        a = a[:, :, None] if grey else a
        padded = np.zeros((height, width, a.shape[2]), np.float32)
        padded[:, :w] = a
        xs.append(padded.transpose(2, 0, 1))
    return np.stack(xs)


def sensitivity(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> np.ndarray:
    layers = layer_weights(model)
    probe = FidelityProbe(model, [n for n, _ in layers], inputs)
    out = np.zeros((len(layers), len(BITS)))
    q = get_quantizer("maxabs")
    for i, (name, axis) in enumerate(layers):
        w = probe.weight(name)
        for j, b in enumerate(BITS):
            layout = WeightLayout(axis, 1 - axis if w.ndim == 2 else 1)
            out[i, j] = probe.measure({name: q.quantize(w, b, layout).dequantize()}).score
    return out


def run(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    arg = s.get_inputs()[0]
    step = arg.shape[0] if isinstance(arg.shape[0], int) and arg.shape[0] > 0 else 8
    outs = [s.run(None, {arg.name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    if outs[0].ndim == 3 and outs[0].shape[1] == step and outs[0].shape[0] != step:
        outs = [o.transpose(1, 0, 2) for o in outs]  # ddddocr: [steps, batch, symbols]
    return np.concatenate(outs)


def ctc(probs: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decode (blank 0) of per-step probabilities, or of per-step indices (2-D)."""
    out = []
    for row in (probs.argmax(-1) if probs.ndim == 3 else np.rint(probs).astype(int)):
        seq = [int(c) for k, c in enumerate(row) if c != 0 and (k == 0 or c != row[k - 1])]
        out.append(tuple(seq))
    return out


def score(key: str, path: Path, src: Path, x: np.ndarray, y: np.ndarray | None) -> float:
    if key == "cls":
        return float(np.mean(run(path, x).argmax(1) == y))
    return float(np.mean([a == b for a, b in zip(ctc(run(path, x)), ctc(run(src, x)), strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=Path, default=Path("/work/cache/wheels"),
                    help="folder of the pip-downloaded wheels " + ", ".join(sorted(set(WHEELS.values()))))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--no-ranking", action="store_true", help="skip the layer ranking (the slow part)")
    ap.add_argument("--plans", nargs="+", default=["smooth", "leaves", "8bit"],
                    choices=["smooth", "leaves", "8bit"], help="which conversions to score")
    args = ap.parse_args()
    results = {}
    for key in args.models:
        src = extract(args.wheels / WHEELS[key], MODELS[key])
        model = onnx.load(src)
        ConstantsToInitializers().run(model, Context(ConvertOptions()))  # paddle2onnx's weights
        spec = resolve_shapes(model, check=ort_check(model))
        if key == "cls":
            x, y = text_lines(232, seed=0)
        elif key == "rec":
            x, y = rec_lines(232, seed=0), None
        else:  # ddddocr: grey, height 64
            x, y = rec_lines(232, seed=0, height=64, width=256, grey=True), None
        row: dict = {"resolved": spec.shapes, "rule": spec.rules}
        t = time.time()
        arg = next(iter(spec.shapes))
        if not args.no_ranking:
            truth = sensitivity(model, {arg: x[:16]})
            guesses = {"real-half": sensitivity(model, {arg: x[16:32]})}
            for kind in KINDS:
                guesses[kind] = sensitivity(model, synthetic_inputs(model, n=16, kind=kind,
                                                                    shapes=spec.shapes))
            row["spearman"] = {k: [spearman(truth[:, j], g[:, j]) for j in range(len(BITS))]
                               for k, g in guesses.items()}
            row["ranking_seconds"] = time.time() - t
        test_x, test_y = x[32:], (None if y is None else y[32:])
        row["float"] = score(key, src, src, test_x, test_y)
        work = OUT / key
        work.mkdir(parents=True, exist_ok=True)
        plans = {f"target 4, {k}": ConvertOptions(target_bits=4, synthetic=k) for k in KINDS[:2]
                 if k in args.plans}
        if "8bit" in args.plans:
            plans["8 bits everywhere"] = ConvertOptions(method="pairs", low_bits=8, high_bits=8)
        for name, options in plans.items():
            out = work / (name.replace(" ", "_").replace(",", "") + ".onnx")
            t = time.time()
            rep = convert_file(src, out, options)
            row[name] = {"score": score(key, out, src, test_x, test_y),
                         "stored_bits": rep.stored_bits, "seconds": time.time() - t,
                         "measured_on": rep.inputs.get(arg, {}).get("shape")}
        results[key] = row
        print(key, json.dumps(row, indent=1, default=str), flush=True)
    out = ROOT / "benchmarks" / "inputs_check_results.json"
    merged = json.loads(out.read_text()) if out.is_file() else {}
    for key, row in results.items():  # a partial run (--models, --no-ranking) updates its rows
        merged[key] = {**merged.get(key, {}), **row}
    out.write_text(json.dumps(merged, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
