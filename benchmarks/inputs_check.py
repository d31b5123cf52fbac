"""Third-party models with dynamic input dimensions, converted with no --input-shape (issue 19):
which shape the converter measures at, and whether dead-leaves inputs rank layers and choose
plans better than the default smooth noise.

Models: PaddleOCR's text-direction classifier (``x[N,3,?,?]``) and PP-OCRv4 recogniser
(``x[N,3,?,W]``, CTC over 6625 symbols) from the ``rapidocr-onnxruntime`` wheel. Real data: text
lines rendered with Pillow in the DejaVu fonts (``benchmarks.third_party.text_lines``), at 48x192
for the classifier (its label: turned 180 degrees or not) and 48x320 for the recogniser (PaddleOCR's
shapes), normalised to [-1, 1] as PaddleOCR does.

Printed per model:
- the shape the converter resolves (``dfmpc_onnx.input_spec``), checked in ONNX Runtime;
- ranking: each layer alone rounded max-abs per channel at 2 and 4 bits, the whole-network
  divergence (the converter's probe) on 16 real lines against that on 16 synthetic inputs of each
  kind: Spearman over layers, per width, and the mean; ``real-half`` (16 other real lines) is
  the ceiling;
- plans: ``convert --target-bits 4`` with each kind, and the all-8-bit plan (what a model whose
  shape could not be resolved used to get), scored on 200 real lines: the classifier's top-1
  (float: its own), the recogniser's greedy CTC decode equal to the float model's (line rate).

    pip install pillow; apt-get install fonts-dejavu-core
    pip download --no-deps -d /work/cache/wheels rapidocr-onnxruntime==1.4.4
    nice -n 10 python -m benchmarks.inputs_check [--wheel PATH] [--models cls rec]
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
from dfmpc_onnx.fidelity import FidelityProbe
from dfmpc_onnx.input_spec import ort_check, resolve_shapes
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.quantizers import WeightLayout, get_quantizer
from dfmpc_onnx.synthetic import synthetic_inputs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "inputs_check"
MODELS = {"cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"}
KINDS = ("smooth", "leaves", "gaussian")
BITS = (2, 4)


def extract(wheel: Path, member: str) -> Path:
    path = OUT / member
    if not path.is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extract(member, OUT)
    return path


def rec_lines(n: int, seed: int) -> np.ndarray:
    """Text lines at height 48, their aspect kept, padded to 48x320, in [-1, 1]."""
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
        width = min(320, int(img.width * 48 / img.height))
        a = (np.asarray(img.resize((width, 48)), np.float32) / 255 - 0.5) / 0.5
        padded = np.zeros((48, 320, 3), np.float32)
        padded[:, :width] = a
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
    return np.concatenate([s.run(None, {"x": x[i:i + 8]})[0] for i in range(0, len(x), 8)])


def ctc(probs: np.ndarray) -> list[tuple[int, ...]]:
    out = []
    for row in probs.argmax(-1):
        seq = [int(c) for k, c in enumerate(row) if c != 0 and (k == 0 or c != row[k - 1])]
        out.append(tuple(seq))
    return out


def score(key: str, path: Path, src: Path, x: np.ndarray, y: np.ndarray | None) -> float:
    if key == "cls":
        return float(np.mean(run(path, x).argmax(1) == y))
    return float(np.mean([a == b for a, b in zip(ctc(run(path, x)), ctc(run(src, x)), strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", type=Path,
                    default=Path("/work/cache/wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()
    results = {}
    for key in args.models:
        src = extract(args.wheel, MODELS[key])
        model = onnx.load(src)
        spec = resolve_shapes(model, check=ort_check(model))
        if key == "cls":
            x, y = text_lines(232, seed=0)
        else:
            x, y = rec_lines(232, seed=0), None
        row: dict = {"resolved": spec.shapes, "rule": spec.rules}
        t = time.time()
        truth = sensitivity(model, {"x": x[:16]})
        guesses = {"real-half": sensitivity(model, {"x": x[16:32]})}
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
        plans = {f"target 4, {k}": ConvertOptions(target_bits=4, synthetic=k) for k in KINDS[:2]}
        plans["8 bits everywhere"] = ConvertOptions(method="pairs", low_bits=8, high_bits=8)
        for name, options in plans.items():
            out = work / (name.replace(" ", "_").replace(",", "") + ".onnx")
            t = time.time()
            rep = convert_file(src, out, options)
            row[name] = {"score": score(key, out, src, test_x, test_y),
                         "stored_bits": rep.stored_bits, "seconds": time.time() - t,
                         "measured_on": rep.inputs.get("x", {}).get("shape")}
        results[key] = row
        print(key, json.dumps(row, indent=1, default=str), flush=True)
    (ROOT / "benchmarks" / "inputs_check_results.json").write_text(
        json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
