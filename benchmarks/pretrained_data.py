"""Inputs made here, and the task metrics, for the pretrained third-party models of
``benchmarks/pretrained.py``: rendered text (Pillow, Debian's DejaVu fonts), drawn scenes,
generated source files and synthesized speech (espeak-ng). Every generator is seeded, so a rerun
makes the same inputs; every metric compares a model's outputs with labels known from how the input
was made, or, where no labels exist, with the float model's decisions.

Each model's data is a ``Samples``: the feeds (one dict of input arrays per sample, at the shapes
real use gives it), the labels, and a ``run`` that turns an ONNX Runtime session and a feed into
the outputs (a stateful model chains its state over a clip's chunks there)."""

from __future__ import annotations

import ast
import glob
import io
import json
import random
import shutil
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FONTS = "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"
WORDS = ("the quick brown fox jumps over lazy dog data free quantization model runtime convert "
         "2026 alpha beta gamma delta 12345 hello world python onnx paper table river stone").split()


@dataclass
class Samples:
    feeds: list[dict[str, np.ndarray]]
    labels: list
    run: Callable | None = None  # (session, feed) -> outputs; None: session.run(None, feed)
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)  # real, for ORT static


def outputs(session, s: Samples) -> list[list[np.ndarray]]:
    """The outputs of every sample."""
    if s.run is not None:
        return [s.run(session, f) for f in s.feeds]
    return [session.run(None, f) for f in s.feeds]


def _fonts(rng: random.Random):
    from PIL import ImageFont

    fonts = sorted(glob.glob(FONTS))
    if not fonts:
        raise SystemExit("needs the DejaVu fonts: apt-get install fonts-dejavu-core")
    return lambda size: ImageFont.truetype(rng.choice(fonts), size)


def _line(text: str, rng: random.Random, font_at, height: int = 48):
    from PIL import Image, ImageDraw

    font = font_at(rng.randint(22, 32))
    img = Image.new("RGB", (max(int(font.getlength(text)) + 16, height), height),
                    (rng.randint(200, 255),) * 3)
    ImageDraw.Draw(img).text((8, 6), text, font=font, fill=(rng.randint(0, 60),) * 3)
    return img


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(pred: list[str], truth: list[str]) -> float:
    """1 - total edit distance / total characters (may go below 0 for wild outputs: clipped)."""
    errors = sum(edit_distance(p, t) for p, t in zip(pred, truth, strict=True))
    return max(0.0, 1.0 - errors / max(1, sum(len(t) for t in truth)))


def ctc_decode(indices: np.ndarray, charset: list[str]) -> str:
    out, last = [], -1
    for i in np.asarray(indices).astype(np.int64).tolist():
        if i != last and i != 0 and i < len(charset):
            out.append(charset[i])
        last = i
    return "".join(out)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_recall(pred: list[list], truth: list[list], thr: float = 0.5) -> float:
    """Fraction of true boxes matched (greedily, one prediction each) at IoU >= ``thr``."""
    hit = total = 0
    for ps, ts in zip(pred, truth, strict=True):
        used: set[int] = set()
        for t in ts:
            total += 1
            best = max(((iou(p, t), k) for k, p in enumerate(ps) if k not in used), default=(0, -1))
            if best[0] >= thr:
                hit += 1
                used.add(best[1])
    return hit / max(1, total)


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float = 0.45) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i], boxes[j]) < thr]
    return keep


# ---------------------------------------------------------------- PaddleOCR (rapidocr wheel)

def ppocr_cls(n: int, seed: int = 0) -> Samples:
    """Text lines, half turned 180 degrees (label 1), 48x192 in [-1, 1], batch of one."""
    rng = random.Random(seed)
    font_at = _fonts(rng)
    feeds, labels = [], []
    for i in range(n):
        img = _line(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))), rng, font_at)
        if i % 2:
            img = img.rotate(180)
        width = min(192, int(img.width * 48 / img.height))
        a = (np.asarray(img.resize((width, 48)), np.float32) / 255 - 0.5) / 0.5
        x = np.zeros((48, 192, 3), np.float32)
        x[:, :width] = a
        feeds.append({"x": x.transpose(2, 0, 1)[None]})
        labels.append(i % 2)
    return Samples(feeds, labels)


def accuracy(outs: list[list[np.ndarray]], s: Samples, _float) -> float:
    return float(np.mean([int(np.argmax(o[0].reshape(-1))) == y
                          for o, y in zip(outs, s.labels, strict=True)]))


def ppocr_rec(n: int, seed: int = 0) -> Samples:
    """Text lines of 1-3 words, resized to height 48 and padded to 48x320 as rapidocr does."""
    rng = random.Random(seed + 1)
    font_at = _fonts(rng)
    feeds, labels = [], []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        img = _line(text, rng, font_at)
        width = min(320, int(np.ceil(img.width * 48 / img.height)))
        x = np.zeros((3, 48, 320), np.float32)
        x[:, :, :width] = (np.asarray(img.resize((width, 48)), np.float32).transpose(2, 0, 1)
                           / 255 - 0.5) / 0.5
        feeds.append({"x": x[None]})
        labels.append(text)
    return Samples(feeds, labels)


def ppocr_rec_metric(charset: list[str]):
    def metric(outs, s: Samples, _float) -> float:
        pred = [ctc_decode(np.argmax(o[0][0], axis=-1), charset).strip() for o in outs]
        return char_accuracy(pred, s.labels)
    return metric


def ppocr_det(n: int, seed: int = 0) -> Samples:
    """640x640 pages with 2-5 text lines at random places; labels: each line's ink box."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed + 2)
    font_at = _fonts(rng)
    feeds, labels = [], []
    for _ in range(n):
        img = Image.new("RGB", (640, 640), (rng.randint(210, 255),) * 3)
        draw = ImageDraw.Draw(img)
        boxes: list[list[float]] = []
        y = rng.randint(10, 60)
        for _ in range(rng.randint(2, 5)):
            font = font_at(rng.randint(24, 40))
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            x0 = rng.randint(10, 200)
            box = draw.textbbox((x0, y), text, font=font)
            if box[2] > 630 or box[3] > 630:
                break
            draw.text((x0, y), text, font=font, fill=(rng.randint(0, 70),) * 3)
            boxes.append([float(v) for v in box])
            y = box[3] + rng.randint(25, 90)
        a = (np.asarray(img, np.float32) / 255 - 0.5) / 0.5
        feeds.append({"x": a.transpose(2, 0, 1)[None]})
        labels.append(boxes)
    return Samples(feeds, labels)


def db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5,
             unclip: float = 1.6) -> list[list[float]]:
    """DB post-processing, axis-aligned: components of prob > thresh, kept where their mean
    probability is >= box_thresh, grown by DB's unclip distance (area * ratio / perimeter)."""
    from scipy import ndimage

    mask = ndimage.binary_dilation(prob > thresh, np.ones((2, 2), bool))
    lab, count = ndimage.label(mask)
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), 1):
        if sl is None:
            continue
        ys, xs = sl
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < 3 or prob[sl][lab[sl] == k].mean() < box_thresh:
            continue
        d = h * w * unclip / (2 * (h + w))
        out.append([xs.start - d, ys.start - d, xs.stop + d, ys.stop + d])
    return out


def ppocr_det_metric(outs, s: Samples, _float) -> float:
    return box_recall([db_boxes(o[0][0, 0]) for o in outs], s.labels)


# ---------------------------------------------------------------- ddddocr

def dddd_charset(source: Path, which: str = "_get_beta_charset") -> list[str]:
    """The charset list literal of ddddocr's charset_manager.py, read without importing ddddocr
    (which needs OpenCV)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == which:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return):
                    return ast.literal_eval(sub.value)
    raise ValueError(f"{which} not found in {source}")


CAPTCHA = "abcdefghijkmnpqrstuvwxyz23456789"


def dddd_rec(n: int, seed: int = 0) -> Samples:
    """Captcha-like images: 4-6 lower-case letters and digits, jittered, with noise lines and
    dots, 160x64 grey in [0, 1] (ddddocr's preprocessing)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed + 3)
    font_at = _fonts(rng)
    feeds, labels = [], []
    for _ in range(n):
        text = "".join(rng.choice(CAPTCHA) for _ in range(rng.randint(4, 6)))
        img = Image.new("RGB", (160, 64), tuple(rng.randint(180, 255) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        x = rng.randint(4, 14)
        for ch in text:
            font = font_at(rng.randint(30, 38))
            draw.text((x, rng.randint(4, 18)), ch, font=font,
                      fill=tuple(rng.randint(0, 120) for _ in range(3)))
            x += int(font.getlength(ch)) + rng.randint(-1, 4)
        for _ in range(rng.randint(1, 3)):
            draw.line([(rng.randint(0, 160), rng.randint(0, 64)) for _ in range(2)],
                      fill=tuple(rng.randint(60, 200) for _ in range(3)), width=1)
        for _ in range(60):
            draw.point((rng.randint(0, 159), rng.randint(0, 63)),
                       fill=tuple(rng.randint(0, 255) for _ in range(3)))
        a = np.asarray(img.convert("L"), np.float32) / 255
        feeds.append({"input1": a[None, None]})
        labels.append(text)
    return Samples(feeds, labels)


def dddd_rec_metric(charset: list[str]):
    def metric(outs, s: Samples, _float) -> float:  # logits [T, 1, classes] (not as declared)
        pred = [ctc_decode(np.argmax(o[0][:, 0], axis=-1), charset).lower() for o in outs]
        return char_accuracy(pred, s.labels)
    return metric


def dddd_det(n: int, seed: int = 0) -> Samples:
    """416x416 click-captcha-like scenes: 3-6 large characters on a textured background, raw
    0-255 BGR floats as ddddocr feeds them; labels: each character's ink box."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed + 4)
    font_at = _fonts(rng)
    nprng = np.random.default_rng(seed + 4)
    feeds, labels = [], []
    for _ in range(n):
        base = nprng.integers(0, 255, (13, 13, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((416, 416), Image.BICUBIC).filter(ImageFilter.BLUR)
        draw = ImageDraw.Draw(img)
        boxes: list[list[float]] = []
        for _ in range(rng.randint(3, 6)):
            font = font_at(rng.randint(36, 56))
            ch = rng.choice("ABCDEFGHKMNPRSTUVWXYZ23456789")
            for _ in range(20):
                x, y = rng.randint(5, 350), rng.randint(5, 350)
                box = draw.textbbox((x, y), ch, font=font)
                if all(iou(box, b) == 0 for b in boxes) and box[2] < 411 and box[3] < 411:
                    break
            else:
                continue
            draw.text((x, y), ch, font=font, fill=tuple(rng.randint(0, 255) for _ in range(3)),
                      stroke_width=2, stroke_fill=(0, 0, 0))
            boxes.append([float(v) for v in box])
        a = np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)
        feeds.append({"images": np.ascontiguousarray(a)[None]})
        labels.append(boxes)
    return Samples(feeds, labels)


def yolox_boxes(out: np.ndarray, size: int = 416, score_thr: float = 0.1) -> list[list[float]]:
    """ddddocr's YOLOX decoding: grid offsets and strides 8/16/32, score obj * cls, NMS 0.45."""
    grids, strides = [], []
    for stride in (8, 16, 32):
        g = size // stride
        xv, yv = np.meshgrid(np.arange(g), np.arange(g))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((g * g, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    p = out[0].astype(np.float64)
    xy, wh = (p[:, :2] + grid) * stride, np.exp(np.minimum(p[:, 2:4], 10)) * stride
    scores = p[:, 4] * p[:, 5:].max(axis=1)
    keep = scores > score_thr
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)[keep]
    return [boxes[i].tolist() for i in nms(boxes, scores[keep])]


def dddd_det_metric(outs, s: Samples, _float) -> float:
    return box_recall([yolox_boxes(o[0]) for o in outs], s.labels)


# ---------------------------------------------------------------- magika (bytes in, no image)

def _source(kind: str, rng: random.Random) -> bytes:
    w = lambda: rng.choice(WORDS).replace("2026", "v2026").replace("12345", "n12345")  # noqa: E731
    k = rng.randint(3, 12)
    if kind == "python":
        body = "\n".join(f"    {w()}_{i} = {w()}({i}, '{w()}')\n    if {w()}_{i} > {i}:\n"
                         f"        return {w()}_{i}" for i in range(k))
        return f"import os\nimport sys\n\n\ndef {w()}(x, y=None):\n{body}\n    return None\n".encode()
    if kind == "c":
        body = "\n".join(f"    int {w()}_{i} = {i} * x;\n    if ({w()}_{i} > {i}) return {i};"
                         for i in range(k))
        return (f"#include <stdio.h>\n#include <stdlib.h>\n\nint {w()}(int x)\n{{\n{body}\n"
                f"    return 0;\n}}\n\nint main(void)\n{{\n    printf(\"%d\\n\", {w()}(3));\n"
                f"    return 0;\n}}\n").encode()
    if kind == "html":
        items = "".join(f"<li><a href=\"/{w()}.html\">{w()} {w()}</a></li>\n" for _ in range(k))
        return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{w()}</title>\n</head>\n<body>\n<h1>{w()}</h1>\n<ul>\n{items}</ul>\n"
                f"</body>\n</html>\n").encode()
    if kind == "json":
        return json.dumps([{"id": i, "name": w(), "tags": [w(), w()], "score": rng.random()}
                           for i in range(k)], indent=2).encode()
    if kind == "javascript":
        body = "\n".join(f"  const {w()}{i} = await fetch('/{w()}/' + {i});" for i in range(k))
        return (f"'use strict';\n\nasync function {w()}(x) {{\n{body}\n  return x;\n}}\n\n"
                f"module.exports = {{ {w()} }};\nconsole.log('{w()}');\n").encode()
    if kind == "csv":
        rows = "\n".join(f"{i},{w()},{rng.randint(0, 999)},{rng.random():.4f}" for i in range(k * 3))
        return f"id,name,count,ratio\n{rows}\n".encode()
    if kind == "xml":
        items = "".join(f"  <item id=\"{i}\"><name>{w()}</name><value>{rng.randint(0, 99)}</value>"
                        f"</item>\n" for i in range(k))
        return f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<items>\n{items}</items>\n".encode()
    if kind == "markdown":
        items = "".join(f"- **{w()}**: {w()} {w()} {w()}\n" for _ in range(k))
        return (f"# {w().title()} {w()}\n\n{w()} {w()} {w()} {w()}.\n\n## {w().title()}\n\n"
                f"{items}\n```\npip install {w()}\n```\n").encode()
    if kind == "shell":
        body = "".join(f"if [ -f \"${w().upper()}\" ]; then\n  echo \"{w()}\"\nfi\n" for _ in range(k))
        return f"#!/bin/bash\nset -euo pipefail\n\n{body}exit 0\n".encode()
    if kind == "yaml":
        items = "".join(f"  {w()}_{i}:\n    image: {w()}:{i}\n    ports:\n      - \"{8000 + i}:80\"\n"
                        for i in range(k))
        return f"version: '3'\nservices:\n{items}".encode()
    raise ValueError(kind)


MAGIKA_KINDS = ("python", "c", "html", "json", "javascript", "csv", "xml", "markdown", "shell",
                "yaml")


def magika_features(content: bytes, beg: int = 1024, end: int = 1024, block: int = 4096,
                    pad: int = 256) -> np.ndarray:
    """Magika v3's features: the first ``beg`` bytes of the whitespace-stripped first block, then
    the last ``end`` bytes of the stripped last block, padded with ``pad``."""
    head = content[:block].lstrip()[:beg]
    tail = content[-block:].rstrip()[-end:]
    return np.array(list(head) + [pad] * (beg - len(head)) + [pad] * (end - len(tail)) + list(tail),
                    np.int32)


def magika(n: int, seed: int = 0) -> Samples:
    rng = random.Random(seed + 5)
    feeds, labels = [], []
    for i in range(n):
        kind = MAGIKA_KINDS[i % len(MAGIKA_KINDS)]
        feeds.append({"bytes": magika_features(_source(kind, rng))[None]})
        labels.append(kind)
    return Samples(feeds, labels)


def magika_metric(space: list[str]):
    def metric(outs, s: Samples, _float) -> float:
        return float(np.mean([space[int(np.argmax(o[0][0]))] == y
                              for o, y in zip(outs, s.labels, strict=True)]))
    return metric


# ---------------------------------------------------------------- NudeNet (YOLOv8n, no labels)

def scenes(n: int, seed: int = 0, size: int = 320) -> Samples:
    """Drawn scenes, RGB in [0, 1]: one to three drawn faces (skin-toned oval, hair, neck, eyes,
    brows, nose, mouth) and up to four rectangles on a flat background, slightly blurred; no
    labels: the metric is agreement with the float model's decisions. Faces, because NudeNet's
    detector decides on them (about three images in five get a detection, nearly all a face
    class); on the earlier scenes of plain skin ellipses it detected something in one image in
    six, so there was almost nothing to agree on."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed + 6)
    feeds = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(50, 140)
            _face(draw, rng, rng.randint(0, size - r), rng.randint(0, size - int(1.3 * r)), r)
        for _ in range(rng.randint(0, 4)):
            x, y, r = rng.randint(0, size - 40), rng.randint(0, size - 40), rng.randint(20, 80)
            draw.rectangle([x, y, x + r, y + r // 2], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        img = img.filter(ImageFilter.GaussianBlur(1))
        feeds.append({"images": (np.asarray(img, np.float32).transpose(2, 0, 1) / 255)[None]})
    return Samples(feeds, [None] * n)


def _face(draw, rng: random.Random, x: int, y: int, r: int) -> None:
    """A frontal face of width ``r`` whose top left is (x, y), drawn with PIL."""
    skin = (rng.randint(170, 255), rng.randint(120, 200), rng.randint(90, 170))
    hair = tuple(rng.randint(0, 90) for _ in range(3))
    h = int(r * 1.3)
    draw.ellipse([x - 0.1 * r, y - 0.15 * r, x + 1.1 * r, y + 0.7 * h], fill=hair)
    draw.rectangle([x + 0.3 * r, y + h * 0.9, x + 0.7 * r, y + h * 1.3], fill=skin)  # the neck
    draw.ellipse([x, y, x + r, y + h], fill=skin)
    for ex in (0.3, 0.7):
        cx, cy = x + ex * r, y + 0.42 * h
        draw.ellipse([cx - r * 0.1, cy - r * 0.05, cx + r * 0.1, cy + r * 0.05], fill=(255, 255, 255))
        draw.ellipse([cx - r * 0.04, cy - r * 0.04, cx + r * 0.04, cy + r * 0.04], fill=(40, 30, 20))
        draw.line([cx - r * 0.12, cy - r * 0.12, cx + r * 0.12, cy - r * 0.14], fill=hair,
                  width=max(1, r // 25))
    draw.line([x + 0.5 * r, y + 0.5 * h, x + 0.46 * r, y + 0.62 * h],
              fill=tuple(int(c * 0.8) for c in skin), width=max(1, r // 30))
    draw.ellipse([x + 0.35 * r, y + 0.72 * h, x + 0.65 * r, y + 0.8 * h],
                 fill=(rng.randint(150, 220), 50, 60))  # the mouth


def yolo_detections(out: np.ndarray, score: float = 0.2, nms_score: float = 0.25,
                    nms_iou: float = 0.45) -> list[tuple[int, np.ndarray]]:
    """NudeNet's own decisions from one YOLOv8 output [1, 4 + classes, A] (its ``_postprocess``:
    anchors whose best class scores at least 0.2, then non-maximum suppression at IoU 0.45 among
    those scoring at least 0.25, as ``cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)``), as (class,
    box x0 y0 x1 y1)."""
    o = out[0]
    cls = o[4:]
    best = cls.max(axis=0)
    keep = np.flatnonzero((best >= score) & (best >= nms_score))
    cx, cy, w, h = o[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    order = list(np.argsort(-best[keep], kind="stable"))
    chosen = []
    while order:
        i = order.pop(0)
        chosen.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j]) <= nms_iou]
    return [(int(cls[:, keep[i]].argmax()), boxes[i]) for i in chosen]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detection_agreement(iou: float = 0.5):
    """F1 of the quantized model's detections against the float model's, over all images: a
    detection matches one of the float model's of the same class at IoU >= 0.5, one to one,
    greedily by IoU. Detections are the wheel's own decisions (``yolo_detections``); on drawn
    scenes most images have none, and the classes of sub-threshold anchors are noise (the
    earlier metric, the class of the float model's 20 most confident anchors, counted those:
    BENCHMARKS.md, the sixth reading)."""
    def metric(outs, s: Samples, float_outs) -> float:
        matched = found = expected = 0
        for o, f in zip(outs, float_outs, strict=True):
            ref, got = yolo_detections(f[0]), yolo_detections(o[0])
            expected, found = expected + len(ref), found + len(got)
            pairs = sorted(((_iou(rb, gb), i, j) for i, (rc, rb) in enumerate(ref)
                            for j, (gc, gb) in enumerate(got) if rc == gc), reverse=True)
            used_r, used_g = set(), set()
            for v, i, j in pairs:
                if v >= iou and i not in used_r and j not in used_g:
                    used_r.add(i)
                    used_g.add(j)
            matched += len(used_r)
        return 1.0 if expected + found == 0 else 2.0 * matched / (expected + found)
    return metric


# ---------------------------------------------------------------- Silero VAD (speech)

SENTENCES = ("the weather is nice today", "please convert this model to four bits",
             "open the window and let the fresh air in", "seven quick brown foxes",
             "the meeting starts at nine o clock", "data free quantization needs no data")


def _speech(text: str, voice: str, speed: int) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("needs espeak-ng: apt-get install espeak-ng")
    wav = subprocess.run([exe, "--stdout", "-v", voice, "-s", str(speed), text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as f:
        rate, a = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), np.int16)
    a = a.astype(np.float32) / 32768
    t = np.arange(0, len(a) / rate, 1 / 16000)
    return np.interp(t, np.arange(len(a)) / rate, a).astype(np.float32)


CHUNK, CONTEXT = 512, 64


def speech_clips(n: int, seed: int = 0) -> Samples:
    """Clips of silence-with-noise, an espeak-ng sentence, silence-with-noise at 16 kHz; label
    of each 512-sample chunk: 1 inside the sentence's voiced span, 0 in the padding."""
    rng = random.Random(seed + 7)
    nprng = np.random.default_rng(seed + 7)
    feeds, labels = [], []
    for _ in range(n):
        s = _speech(rng.choice(SENTENCES), rng.choice(["en", "en-us", "en+f3", "en+m3"]),
                    rng.randint(130, 190))
        voiced = np.flatnonzero(np.abs(s) > 0.02)
        s = s[voiced[0]:voiced[-1] + 1] * rng.uniform(0.3, 1.0)
        pre, post = rng.randint(16, 40) * CHUNK, rng.randint(16, 40) * CHUNK
        clip = np.concatenate([np.zeros(pre, np.float32), s, np.zeros(post, np.float32)])
        clip += nprng.normal(0, rng.uniform(0.001, 0.01), clip.shape).astype(np.float32)
        chunks = len(clip) // CHUNK
        y = [int(pre <= (c + 0.5) * CHUNK < pre + len(s)) for c in range(chunks)]
        feeds.append({"audio": clip[:chunks * CHUNK]})
        labels.append(y)
    calib = [{"input": np.concatenate([np.zeros(CONTEXT, np.float32),
                                       feeds[0]["audio"][i * CHUNK:(i + 1) * CHUNK]])[None],
              "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
             for i in range(0, 48, 3)]
    return Samples(feeds, labels, run=_silero_run, calibration=calib)


def _silero_run(session, feed: dict) -> list[np.ndarray]:
    """silero-vad's own streaming loop: 512 new samples plus the last 64 as context, the LSTM
    state carried over; returns the speech probability of every chunk."""
    audio = feed["audio"]
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    probs = []
    for c in range(len(audio) // CHUNK):
        chunk = audio[c * CHUNK:(c + 1) * CHUNK]
        x = np.concatenate([context, chunk])[None]
        p, state = session.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        probs.append(float(np.asarray(p).reshape(-1)[0]))
        context = chunk[-CONTEXT:]
    return [np.array(probs)]


def frame_accuracy(outs, s: Samples, _float) -> float:
    return float(np.mean(np.concatenate([(o[0] > 0.5).astype(int) == np.array(y)
                                         for o, y in zip(outs, s.labels, strict=True)])))
