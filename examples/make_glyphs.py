"""Build the ``glyphs_*`` reference models: 62-class glyph recognition (0-9, A-Z, a-z).

Why this task: ``load_digits`` is too easy (float models sit at ~99 %), so quantization damage is
hard to rank.  Rendering characters from Debian TrueType fonts with Pillow gives a harder task
with no download: several classes are genuinely ambiguous at 24x24 (``0/O/o``, ``1/l/I``,
``c/C``, ``s/S``, ``v/V``, ``w/W``, ``x/X``, ``z/Z``...), so float accuracy lands well below
100 % and a quantized model's loss is visible.

Data
    Each class is rendered white on dark, supersampled 4x then area-downsampled to 24x24 uint8.
    Augmentation per sample: rotation +-10 deg, scale 0.85-1.15, translation +-2 px, stroke
    erode/dilate, Gaussian blur, contrast, pixel noise.  Training uses the 37 DejaVu and
    Liberation fonts in ``TRAIN_FONTS`` (``TRAIN_RENDERS_PER_FONT`` renderings per font and
    class); the held-out test set uses only the 12 GNU FreeFont fonts in ``TEST_FONTS``
    (``TEST_RENDERS_PER_FONT`` each) and a disjoint random stream (``SeedSequence`` keyed by
    split): no test font and no test image is ever seen in training.
    ``examples/data/glyphs_test.npz``: ``input`` float32 (N, 1, 24, 24), already normalised,
    ``label`` int64 (N,), ``mean`` / ``std`` float32 scalars, ``classes`` (the 62 characters,
    label order). ``input = (pixels.astype(float32) / 255 - mean) / std`` of the rendered uint8
    pixels: stored normalised so that ``dfmpc-onnx validate --inputs`` reads it as it is.

Models (``examples/models/``)
    glyphs_resnet_{bnfolded,bnkept}.onnx        ResNet-14 (2 basic blocks/stage, 16/32/64)
    glyphs_mobilenetv2_{bnfolded,bnkept}.onnx   inverted residuals, ReLU6 then Hardswish
    glyphs_silu_bnfolded.onnx                   CNN, SiLU written as x * sigmoid(x)
    glyphs_mlp.onnx                             Linear-GELU-Linear-ReLU-Linear, no BN

Run: ``python examples/make_glyphs.py [--only resnet,mlp]`` (needs the ``ref`` extra).
Fonts: ``apt-get install -y fonts-dejavu-core fonts-dejavu-extra fonts-liberation
fonts-freefont-ttf``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    DATA_DIR,
    MODELS_DIR,
    ResNet,
    count_params,
    export_and_verify,
    ort_accuracy,
    seed_everything,
    torch_accuracy,
    train_classifier,
)
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch import nn

CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIZE = 24
SUPERSAMPLE = 4
FONT_DIR = Path("/usr/share/fonts/truetype")
# Debian packages: fonts-dejavu-core / fonts-dejavu-extra (dejavu/), fonts-liberation
# (liberation/), fonts-freefont-ttf (freefont/).  DejaVuMathTeXGyre is left out (math font).
TRAIN_FONTS: tuple[str, ...] = (
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSans-Oblique.ttf",
    "dejavu/DejaVuSans-BoldOblique.ttf",
    "dejavu/DejaVuSans-ExtraLight.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    "dejavu/DejaVuSansCondensed-Bold.ttf",
    "dejavu/DejaVuSansCondensed-Oblique.ttf",
    "dejavu/DejaVuSansCondensed-BoldOblique.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "dejavu/DejaVuSansMono-Bold.ttf",
    "dejavu/DejaVuSansMono-Oblique.ttf",
    "dejavu/DejaVuSansMono-BoldOblique.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSerif-Bold.ttf",
    "dejavu/DejaVuSerif-Italic.ttf",
    "dejavu/DejaVuSerif-BoldItalic.ttf",
    "dejavu/DejaVuSerifCondensed.ttf",
    "dejavu/DejaVuSerifCondensed-Bold.ttf",
    "dejavu/DejaVuSerifCondensed-Italic.ttf",
    "dejavu/DejaVuSerifCondensed-BoldItalic.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationSans-Italic.ttf",
    "liberation/LiberationSans-BoldItalic.ttf",
    "liberation/LiberationSansNarrow-Regular.ttf",
    "liberation/LiberationSansNarrow-Bold.ttf",
    "liberation/LiberationSansNarrow-Italic.ttf",
    "liberation/LiberationSansNarrow-BoldItalic.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationSerif-Bold.ttf",
    "liberation/LiberationSerif-Italic.ttf",
    "liberation/LiberationSerif-BoldItalic.ttf",
    "liberation/LiberationMono-Regular.ttf",
    "liberation/LiberationMono-Bold.ttf",
    "liberation/LiberationMono-Italic.ttf",
    "liberation/LiberationMono-BoldItalic.ttf",
)
# Held-out fonts: only ever rendered for the test split.  GNU FreeFont covers the same
# sans / serif / mono x regular / bold / oblique grid as the training fonts, with different
# outlines (Helvetica-, Times- and Courier-like), so the test measures generalisation to unseen
# typefaces as well as to unseen augmentations.
TEST_FONTS: tuple[str, ...] = (
    "freefont/FreeSans.ttf",
    "freefont/FreeSansBold.ttf",
    "freefont/FreeSansOblique.ttf",
    "freefont/FreeSansBoldOblique.ttf",
    "freefont/FreeSerif.ttf",
    "freefont/FreeSerifBold.ttf",
    "freefont/FreeSerifItalic.ttf",
    "freefont/FreeSerifBoldItalic.ttf",
    "freefont/FreeMono.ttf",
    "freefont/FreeMonoBold.ttf",
    "freefont/FreeMonoOblique.ttf",
    "freefont/FreeMonoBoldOblique.ttf",
)
TRAIN_RENDERS_PER_FONT = 6
TEST_RENDERS_PER_FONT = 4
SPLIT_KEYS = {"train": 1, "test": 2}  # disjoint SeedSequence streams per split
# Mean / std of the training pixels / 255 (measured once with this script, printed on every
# run as a check).  input = (pixels / 255 - GLYPHS_MEAN) / GLYPHS_STD
GLYPHS_MEAN = 0.1342
GLYPHS_STD = 0.1741
SEED = 0


def _font_paths(fonts: tuple[str, ...]) -> list[Path]:
    """Resolve font names; fail early with the apt command if a package is missing."""
    paths = [FONT_DIR / f for f in fonts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(
            f"missing fonts {missing[:3]}...; install them with: apt-get install -y "
            "fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-freefont-ttf"
        )
    return paths


def render_glyph(font: ImageFont.FreeTypeFont, char: str, rng: np.random.Generator) -> np.ndarray:
    """Render one augmented glyph as a (SIZE, SIZE) uint8 array.

    The glyph is placed on a fixed baseline (anchor ``ms``) instead of being centred on its
    bounding box, so that letter height still separates e.g. ``c`` from ``C`` - the scale and
    translation jitter then make those pairs partly ambiguous, which is intended.
    """
    big = SIZE * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    ImageDraw.Draw(img).text((big / 2, 0.70 * big), char, fill=255, font=font, anchor="ms")

    # Random similarity transform about the centre.  Image.transform wants the inverse map
    # (output pixel -> input pixel).
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    scale = rng.uniform(0.85, 1.15)
    tx, ty = rng.uniform(-2.0, 2.0, size=2) * SUPERSAMPLE
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    c = big / 2
    inv = (cos, sin, c - cos * (c + tx) - sin * (c + ty),
           -sin, cos, c + sin * (c + tx) - cos * (c + ty))
    img = img.transform((big, big), Image.Transform.AFFINE, inv, resample=Image.Resampling.BILINEAR)

    # Stroke-width jitter at supersampled resolution: -1 erode, 0 keep, 1/2 dilate.  Erosion is
    # skipped when it would remove over 40 % of the ink (thin fonts such as FreeMono vanish).
    stroke = rng.integers(-1, 3)
    if stroke < 0:
        eroded = img.filter(ImageFilter.MinFilter(3))
        if np.asarray(eroded, dtype=np.float32).sum() >= 0.6 * np.asarray(img, np.float32).sum():
            img = eroded
    elif stroke > 0:
        img = img.filter(ImageFilter.MaxFilter(3 if stroke == 1 else 5))
    img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    radius = rng.uniform(0.0, 0.9)
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))

    x = np.asarray(img, dtype=np.float32) / 255.0
    lo, hi = rng.uniform(0.0, 0.15), rng.uniform(0.7, 1.0)
    x = lo + (hi - lo) * x + rng.normal(0.0, rng.uniform(0.0, 0.05), size=x.shape)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def render_split(
    split: str, fonts: tuple[str, ...], renders_per_font: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``renders_per_font`` augmented copies of every class in every font of ``fonts``.

    Each (font, render) pair gets its own ``SeedSequence`` child keyed by the split, so train and
    test never share an augmentation stream and a split is identical whatever else is rendered.
    """
    paths = _font_paths(fonts)
    n = len(paths) * renders_per_font * len(CLASSES)
    pixels = np.empty((n, 1, SIZE, SIZE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    i = 0
    for f_idx, path in enumerate(paths):
        font = ImageFont.truetype(str(path), size=int(0.62 * SIZE * SUPERSAMPLE))
        for r in range(renders_per_font):
            rng = np.random.default_rng(np.random.SeedSequence([SEED, SPLIT_KEYS[split], f_idx, r]))
            for label, char in enumerate(CLASSES):
                pixels[i, 0] = render_glyph(font, char, rng)
                labels[i] = label
                i += 1
    return pixels, labels


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> model input, exactly as documented for ``glyphs_test.npz``."""
    return (pixels.astype(np.float32) / np.float32(255.0) - np.float32(GLYPHS_MEAN)) / np.float32(
        GLYPHS_STD
    )


class ExplicitSiLU(nn.Module):
    """SiLU spelled ``x * sigmoid(x)`` so the ONNX graph has Sigmoid + Mul (not a fused op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand-BN-act, 3x3 depthwise-BN-act, 1x1 project-BN (linear).

    The residual Add is used when stride is 1 and channels match, as in the paper.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module]) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Small(nn.Module):
    """A MobileNetV2-style net for 24x24: ReLU6 in the early blocks, Hardswish in the later ones
    (as in MobileNetV3), so both activations appear in one graph."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        r6, hs = nn.ReLU6, nn.Hardswish
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), r6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 1, r6),
            InvertedResidual(16, 24, 2, 4, r6),  # 12x12
            InvertedResidual(24, 24, 1, 4, r6),
            InvertedResidual(24, 40, 2, 4, hs),  # 6x6
            InvertedResidual(40, 40, 1, 4, hs),
            InvertedResidual(40, 64, 1, 4, hs),
        )
        self.head = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256), hs())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SiLUCNN(nn.Module):
    """Plain VGG-ish CNN (Conv-BN-SiLU x2, MaxPool, x2, Conv, GAP, Linear) with explicit SiLU."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()

        def cbs(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), ExplicitSiLU()]

        self.features = nn.Sequential(
            *cbs(1, 32), *cbs(32, 32), nn.MaxPool2d(2),  # 12x12
            *cbs(32, 64), *cbs(64, 64), nn.MaxPool2d(2),  # 6x6
            *cbs(64, 128),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class GlyphMLP(nn.Module):
    """flatten -> Linear -> GELU -> Linear -> ReLU -> Linear (Gemm nodes in ONNX, no BN)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(SIZE * SIZE, 256)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(256, 128)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


# name -> (constructor, epochs, max lr, exports as list of keep_bn flags)
MODEL_SPECS: dict[str, tuple[type[nn.Module], int, float, tuple[bool | None, ...]]] = {
    "resnet": (ResNet, 5, 4e-3, (False, True)),
    "mobilenetv2": (MobileNetV2Small, 6, 6e-3, (False, True)),
    "silu": (SiLUCNN, 5, 4e-3, (False,)),
    "mlp": (GlyphMLP, 20, 2e-3, (None,)),
}


def _make_model(kind: str) -> nn.Module:
    if kind == "resnet":
        return ResNet(num_classes=len(CLASSES), blocks_per_stage=2, widths=(16, 32, 64))
    return MODEL_SPECS[kind][0](len(CLASSES))


def _file_name(kind: str, keep_bn: bool | None) -> str:
    suffix = {None: "", False: "_bnfolded", True: "_bnkept"}[keep_bn]
    return f"glyphs_{kind}{suffix}.onnx"


def build(only: list[str] | None = None, threads: int = 2) -> dict[str, float]:
    """Render data, write the test npz, then train/export/verify each requested model."""
    t0 = time.time()
    kinds = only or list(MODEL_SPECS)
    train_px, train_y = render_split("train", TRAIN_FONTS, TRAIN_RENDERS_PER_FONT)
    test_px, test_y = render_split("test", TEST_FONTS, TEST_RENDERS_PER_FONT)
    raw = train_px.astype(np.float64) / 255.0
    print(
        f"glyphs: {len(CLASSES)} classes; train {len(train_y)} ({len(TRAIN_FONTS)} fonts x "
        f"{TRAIN_RENDERS_PER_FONT})  test {len(test_y)} ({len(TEST_FONTS)} held-out fonts x "
        f"{TEST_RENDERS_PER_FONT})  train pixel mean {raw.mean():.4f} std {raw.std():.4f}  "
        f"(constants {GLYPHS_MEAN} / {GLYPHS_STD}); rendered in {time.time() - t0:.0f}s",
        flush=True,
    )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    test_path = DATA_DIR / "glyphs_test.npz"
    np.savez_compressed(
        test_path, input=normalise(test_px), label=test_y, mean=np.float32(GLYPHS_MEAN),
        std=np.float32(GLYPHS_STD), classes=np.array(CLASSES),
    )
    print(f"  wrote {test_path.name}  {test_path.stat().st_size / 1024:.0f} KiB")

    # Evaluate from the saved file, so the README numbers are what a consumer of glyphs_test.npz
    # (dfmpc-onnx validate --inputs, benchmarks/datasets.py) gets.
    data = np.load(test_path)
    x_eval = data["input"]
    y_eval = data["label"]
    x_train = torch.from_numpy(normalise(train_px))
    y_train = torch.from_numpy(train_y)
    x_test = torch.from_numpy(x_eval)

    results: dict[str, float] = {}
    for kind in kinds:
        _, epochs, lr, exports = MODEL_SPECS[kind]
        seed_everything(SEED + 100 + list(MODEL_SPECS).index(kind), threads)
        model = _make_model(kind)
        name = f"glyphs_{kind}"
        print(f"  {name}: {count_params(model)} parameters", flush=True)
        train_classifier(model, x_train, y_train, epochs=epochs, lr=lr, seed=SEED,
                         label_smoothing=0.1, name=name)
        print(f"  {name}: torch test accuracy {torch_accuracy(model, x_test, torch.from_numpy(y_eval)):.4f}")
        for keep_bn in exports:
            path = MODELS_DIR / _file_name(kind, keep_bn)
            export_and_verify(model, x_test[:64], path, keep_bn=keep_bn)
            acc = ort_accuracy(path, x_eval, y_eval)
            results[path.name] = acc
            print(f"  {path.name}: onnxruntime accuracy {acc:.4f} on {len(y_eval)} held-out",
                  flush=True)
    print(f"glyphs done in {time.time() - t0:.0f}s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma list of {','.join(MODEL_SPECS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    only = [k.strip() for k in args.only.split(",") if k.strip()] or None
    for k in only or []:
        if k not in MODEL_SPECS:
            parser.error(f"unknown model {k!r}")
    build(only, args.threads)


if __name__ == "__main__":
    main()
