"""Labelled inputs and metrics for the pretrained suite of ``benchmarks/int8_check.py`` (issue 23):
text lines and captchas rendered here with Pillow in the DejaVu fonts, and each model's own metric.

- ``rec``: PP-OCRv4 CTC recogniser (rapidocr-onnxruntime 1.4.4), 48x320 lines of 1-4 words,
  character accuracy = 1 - edit distance / label length (floored at 0), greedy CTC decoding with
  the character list kept in the model's metadata;
- ``cls``: PP-OCR mobile v2.0 direction classifier, 48x192 lines, half turned 180 degrees, top-1;
- ``captcha``: ddddocr's beta recogniser (common.onnx; the default common_old.onnx ships
  already quantized), 4-6 letters and digits with noise
  lines and dots, grey, height 64 (its preprocessing), width 160; character accuracy as for rec.
"""

from __future__ import annotations

import glob
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from benchmarks.pretrained_data import edit_distance

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "int8_check"
WHEELS = Path("/work/cache/wheels")
WORDS = ("the quick brown fox jumps over lazy dog data free quantization model runtime convert "
         "2026 alpha beta gamma delta 12345 hello world Paris Tokyo invoice total amount").split()
CAPTCHA = "abcdefghijkmnpqrstuvwxyz23456789"


@dataclass
class Suite:
    name: str
    model: Path
    input: str
    shape: tuple[int, ...]
    x: np.ndarray
    score: Callable[[list[np.ndarray]], float]  # the first output, one array a sample -> metric


def _wheel_member(pattern: str, member: str) -> Path:
    dst = OUT / "models" / Path(member).name
    if not dst.is_file():
        wheels = sorted(WHEELS.glob(pattern)) + sorted((OUT / "wheels").glob(pattern))
        if not wheels:
            raise SystemExit(f"needs {pattern} (pip download --no-deps -d {WHEELS} "
                             "rapidocr-onnxruntime==1.4.4 ddddocr)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as z:
            dst.write_bytes(z.read(member))
    return dst


def _fonts() -> list[str]:
    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"))
    if not fonts:
        raise SystemExit("needs the DejaVu fonts: apt-get install fonts-dejavu-core")
    return fonts


def _line(rng: random.Random, text: str, fonts: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(rng.choice(fonts), rng.randint(22, 32))
    img = Image.new("RGB", (max(int(font.getlength(text)) + 16, 48), 48), (rng.randint(200, 255),) * 3)
    ImageDraw.Draw(img).text((8, 6), text, font=font, fill=(rng.randint(0, 60),) * 3)
    return img


def _paddle(img, width: int) -> np.ndarray:
    w = min(width, int(img.width * 48 / img.height))
    a = (np.asarray(img.resize((w, 48)), np.float32) / 255 - 0.5) / 0.5
    padded = np.zeros((48, width, 3), np.float32)
    padded[:, :w] = a
    return padded.transpose(2, 0, 1)


def char_accuracy(pred: list[str], truth: list[str]) -> float:
    return float(np.mean([max(0.0, 1 - edit_distance(p, t) / max(1, len(t)))
                          for p, t in zip(pred, truth, strict=True)]))


def _ctc(indices: np.ndarray, chars: list[str]) -> str:
    out, last = [], 0
    for i in indices.tolist():
        if i != last and i != 0 and i < len(chars):
            out.append(chars[i])
        last = i
    return "".join(out)


def rec(n: int = 200, seed: int = 0) -> Suite:
    path = _wheel_member("rapidocr_onnxruntime-1.4.4-*.whl",
                         "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    chars = [""] + meta["character"].splitlines() + [" "]
    rng, fonts = random.Random(seed), _fonts()
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    x = np.stack([_paddle(_line(rng, t, fonts), 320) for t in texts])

    def score(ys: list[np.ndarray]) -> float:
        return char_accuracy([_ctc(np.argmax(y[0], -1), chars).strip() for y in ys], texts)
    return Suite("rec (PP-OCRv4 CTC)", path, "x", (1, 3, 48, 320), x, score)


def cls(n: int = 200, seed: int = 1) -> Suite:
    path = _wheel_member("rapidocr_onnxruntime-1.4.4-*.whl",
                         "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    rng, fonts = random.Random(seed), _fonts()
    xs, ys = [], []
    for i in range(n):
        img = _line(rng, " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))), fonts)
        if i % 2:
            img = img.rotate(180)
        xs.append(_paddle(img, 192))
        ys.append(i % 2)
    labels = np.array(ys)
    return Suite("cls (PP-OCR direction)", path, "x", (1, 3, 48, 192), np.stack(xs),
                 lambda ys: float(np.mean(np.argmax(np.concatenate(ys), 1) == labels)))


def captcha(n: int = 200, seed: int = 2) -> Suite:
    from PIL import Image, ImageDraw, ImageFont

    path = _wheel_member("ddddocr-*.whl", "ddddocr/common.onnx")
    charset_py = _wheel_member("ddddocr-*.whl", "ddddocr/charsets.py")
    scope: dict = {}
    exec(charset_py.read_text(encoding="utf-8"), scope)  # noqa: S102 - a list literal
    chars = scope["CHARSET_BETA"]
    rng, fonts = random.Random(seed), _fonts()
    xs, texts = [], []
    for _ in range(n):
        text = "".join(rng.choice(CAPTCHA) for _ in range(rng.randint(4, 6)))
        img = Image.new("RGB", (150, 60), tuple(rng.randint(180, 255) for _ in range(3)))
        d = ImageDraw.Draw(img)
        x0 = rng.randint(4, 14)
        for ch in text:
            font = ImageFont.truetype(rng.choice(fonts), rng.randint(26, 34))
            d.text((x0, rng.randint(4, 16)), ch, font=font,
                   fill=tuple(rng.randint(0, 120) for _ in range(3)))
            x0 += int(font.getlength(ch)) + rng.randint(0, 4)
        for _ in range(3):
            d.line([(rng.randint(0, 150), rng.randint(0, 60)) for _ in range(2)],
                   fill=tuple(rng.randint(60, 200) for _ in range(3)), width=1)
        for _ in range(60):
            d.point((rng.randint(0, 149), rng.randint(0, 59)),
                    fill=tuple(rng.randint(0, 255) for _ in range(3)))
        g = img.resize((160, 64)).convert("L")
        xs.append(np.asarray(g, np.float32)[None] / 255)
        texts.append(text)

    def score(ys: list[np.ndarray]) -> float:  # each (time, 1, classes)
        return char_accuracy([_ctc(np.argmax(y[:, 0], -1), chars).lower() for y in ys], texts)
    return Suite("captcha (ddddocr)", path, "input1", (1, 1, 64, 160), np.stack(xs), score)


SUITES = {"rec": rec, "cls": cls, "captcha": captcha}
