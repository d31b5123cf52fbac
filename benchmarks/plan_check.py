"""Does the measured plan hold on real models? (issue 19 s3-4, issue 20 s1)

For one pretrained model, converts at the default and at ``--target-bits`` 4, 5 and 6 (public API
only), and prints per plan: conversion time, stored bits, the predicted fidelity the report gives,
and the real metric on real inputs; then the Spearman correlation between predicted and real over
the plans (float included: predicted 1).

Models, from the ``rapidocr-onnxruntime`` 1.4.4 wheel (PP-OCR, paddle2onnx exports):

- ``rec``: PP-OCRv4 text recogniser, (batch, time, 6625) CTC probabilities; real metric:
  character accuracy ``1 - sum(edit distance) / sum(length)`` of greedy CTC decoding (argmax per
  position, repeats collapsed, blank 0 dropped; characters from the model's metadata, space last)
  on text lines rendered with Pillow in the DejaVu fonts, height 48, padded to width 320.
- ``cls``: the text-direction classifier (``benchmarks/third_party.py``'s lines, half turned 180
  degrees): top-1 accuracy.

    pip download --no-deps -d /work/cache/wheels rapidocr-onnxruntime==1.4.4
    python -m benchmarks.plan_check rec --wheel /work/cache/wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl
    python -m benchmarks.plan_check cls --budgets default,5

Needs Pillow and the DejaVu fonts (``apt-get install fonts-dejavu-core``).
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

from benchmarks.activations import session
from benchmarks.pretrained_data import edit_distance
from dfmpc_onnx import ConvertOptions, convert_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "plan_check"
MODELS = {
    "rec": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),
    "cls": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),
}
WORDS = ("the quick brown fox jumps over lazy dog data free quantization model runtime convert "
         "2026 alpha beta gamma delta 12345 hello world").split()


def model_path(name: str, wheel: Path) -> Path:
    member = MODELS[name][0]
    path = OUT / member
    if not path.is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extract(member, OUT)
    return path


def render(n: int, width: int, seed: int, rotate: bool) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``n`` text lines as (n, 3, 48, width) in [-1, 1], their texts, and labels (1: turned)."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"))
    if not fonts:
        raise SystemExit("needs the DejaVu fonts: apt-get install fonts-dejavu-core")
    rng = random.Random(seed)
    xs, texts, labels = [], [], []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        font = ImageFont.truetype(rng.choice(fonts), rng.randint(20, 32))
        img = Image.new("RGB", (max(int(font.getlength(text)) + 16, 48), 48), (rng.randint(200, 255),) * 3)
        ImageDraw.Draw(img).text((8, 6), text, font=font, fill=(rng.randint(0, 60),) * 3)
        label = i % 2 if rotate else 0
        if label:
            img = img.rotate(180)
        w = min(width, int(img.width * 48 / img.height))
        a = (np.asarray(img.resize((w, 48)), np.float32) / 255 - 0.5) / 0.5
        padded = np.zeros((48, width, 3), np.float32)
        padded[:, :w] = a
        xs.append(padded.transpose(2, 0, 1))
        texts.append(text)
        labels.append(label)
    return np.stack(xs), texts, np.array(labels)


def ctc_decode(probs: np.ndarray, chars: list[str]) -> list[str]:
    """Greedy CTC: argmax per position, repeats collapsed, blank (index 0) dropped."""
    out = []
    for row in np.argmax(probs, axis=-1):
        keep = [k for i, k in enumerate(row) if k != 0 and (i == 0 or k != row[i - 1])]
        out.append("".join(chars[k] if k < len(chars) else "" for k in keep))
    return out


def characters(path: Path) -> list[str]:
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ["<blank>"] + meta["character"].splitlines() + [" "]


def metric(name: str, path: Path, data: dict) -> float:
    s = session(path)
    x = data["x"]
    out = np.concatenate([s.run(None, {"x": x[i:i + 16]})[0] for i in range(0, len(x), 16)])
    if name == "cls":
        return float(np.mean(np.argmax(out, axis=1) == data["labels"]))
    texts = ctc_decode(out, data["chars"])
    errors = sum(edit_distance(t, r) for t, r in zip(texts, data["texts"], strict=True))
    return max(0.0, 1.0 - errors / sum(len(r) for r in data["texts"]))


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v, np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--wheel", type=Path,
                    default=Path("/work/cache/wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl"))
    ap.add_argument("--budgets", default="default,4,5,6", help="comma-separated: default or bits")
    ap.add_argument("--n", type=int, default=200, help="real text lines")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--synthetic", help="the conversions' --synthetic (default: the converter's)")
    ap.add_argument("--verbose", action="store_true", help="the conversions' progress, timed")
    args = ap.parse_args(argv)
    src = model_path(args.model, args.wheel)
    shape = MODELS[args.model][1]
    x, texts, labels = render(args.n, shape[3], seed=0, rotate=args.model == "cls")
    data = {"x": x, "texts": texts, "labels": labels}
    if args.model == "rec":
        data["chars"] = characters(src)
    float_metric = metric(args.model, src, data)
    print(f"{args.model}: float metric {float_metric:.4f} on {args.n} lines")
    rows = [{"plan": "float", "seconds": 0.0, "stored_bits": 32.0, "predicted": 1.0,
             "real": float_metric}]
    (OUT / "converted").mkdir(parents=True, exist_ok=True)
    for budget in args.budgets.split(","):
        target = None if budget == "default" else float(budget)
        dst = OUT / "converted" / f"{args.model}_{budget}_{args.synthetic or 'default'}.onnx"
        start = time.perf_counter()
        t0 = time.perf_counter()
        progress = (lambda msg, t0=t0: print(f"  [{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)
                    ) if args.verbose else None
        report = convert_file(src, dst, ConvertOptions(
            target_bits=target, input_shapes={"x": shape},
            **({"synthetic": args.synthetic} if args.synthetic else {})),
                              progress=progress)
        seconds = time.perf_counter() - start
        f = report.fidelity
        predicted = f.get("top1_agreement")
        predicted = (1.0 - f.get("score", 1.0)) if predicted is None else predicted
        real = metric(args.model, dst, data)
        rows.append({"plan": budget, "seconds": round(seconds, 1),
                     "stored_bits": round(report.stored_bits, 3), "predicted": predicted,
                     "score": f.get("score"), "real": real, "relative": real / float_metric,
                     "pass_seconds": getattr(report, "pass_seconds", {}),
                     "notes": [n for n in report.notes if "fidelity" in n or "bits" in n
                               or "trial" in n or "whole" in n]})
        print(f"{budget:>8}: {seconds:6.1f} s  {report.stored_bits:5.2f} stored bits  predicted "
              f"{predicted:.3f} (divergence {f.get('score', float('nan')):.2e})  real {real:.4f} "
              f"({real / float_metric:.3f} of float)", flush=True)
    rho = spearman([r["predicted"] for r in rows], [r["real"] for r in rows])
    print(f"Spearman(predicted, real) over {len(rows)} plans (float included): {rho:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows, "spearman": rho}, indent=2))


if __name__ == "__main__":
    main()
