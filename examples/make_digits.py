"""Build ``digits_resnet20``: a ResNet-20 on scikit-learn's bundled 8x8 ``load_digits`` set.

Why this model: it is the smallest realistic Conv/BN/residual network that trains in about a minute
on 2 CPU cores from data that ships with scikit-learn (no download), so the converter's examples
and tests can always rebuild it.  Float accuracy is high (~98-99 %), which makes quantization
damage easy to see.

Outputs
    examples/models/digits_resnet20_bnfolded.onnx   BN folded into Conv by the exporter
    examples/models/digits_resnet20_bnkept.onnx     BatchNormalization nodes kept
    examples/data/digits_test.npz                   held-out split: ``input`` float32
                                                    (N, 1, 16, 16), already normalised; ``label``
                                                    int64 (N,)

Run: ``python examples/make_digits.py`` (needs the ``ref`` extra).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
IMAGE_SIZE = 16
# Mean / std of the bilinearly upsampled training split after scaling pixels to [0, 1] (digits
# pixels are 0..16).  Written as constants so that the saved test data and any consumer agree
# without recomputing them.  input = (upsample(pixels / 16) - DIGITS_MEAN) / DIGITS_STD
DIGITS_MEAN = 0.3056
DIGITS_STD = 0.3190
EPOCHS = 20
LR = 4e-3


def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return normalised (x_train, y_train, x_test, y_test); the split is fixed and stratified."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                           align_corners=False)
    x = (images - DIGITS_MEAN) / DIGITS_STD
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.3, random_state=0, stratify=digits.target
    )
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge-padded).

    The training split has only ~1250 images; +-1 pixel jitter is the cheapest regulariser that
    keeps ResNet-20 from memorising it.
    """
    n = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]
    return out


def build(threads: int = 2, seed: int = SEED, out: Path | None = None) -> dict[str, float]:
    """Train, export (BN folded + BN kept), verify and evaluate; returns ONNX accuracies.

    ``seed`` other than 0 and ``out`` make a sibling model that the converter was never tuned on
    (written under ``out``, not into examples/): a check of rules chosen on the examples."""
    t0 = time.time()
    models_dir, data_dir = (MODELS_DIR, DATA_DIR) if out is None else (out, out)
    seed_everything(seed, threads)
    x_train, y_train, x_test, y_test = load_split()
    print(
        f"digits: train {len(y_train)}  test {len(y_test)}  "
        f"train mean {x_train.mean():.4f} std {x_train.std():.4f} (after normalisation)"
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    test_path = data_dir / "digits_test.npz"
    np.savez_compressed(
        test_path, input=x_test.numpy().astype(np.float32), label=y_test.numpy().astype(np.int64)
    )
    print(f"  wrote {test_path.name}  {test_path.stat().st_size / 1024:.0f} KiB")

    model = ResNet(num_classes=10, blocks_per_stage=3, widths=(16, 32, 64))
    print(f"  digits_resnet20: {count_params(model)} parameters")
    train_classifier(model, x_train, y_train, epochs=EPOCHS, lr=LR, seed=seed,
                     augment=random_shift, name="digits_resnet20")
    print(f"  torch test accuracy {torch_accuracy(model, x_test, y_test):.4f}")

    data = np.load(test_path)
    results: dict[str, float] = {}
    for keep_bn, suffix in ((False, "bnfolded"), (True, "bnkept")):
        path = models_dir / f"digits_resnet20_{suffix}.onnx"
        export_and_verify(model, x_test[:64], path, keep_bn=keep_bn)
        acc = ort_accuracy(path, data["input"], data["label"])
        results[path.name] = acc
        print(f"  {path.name}: onnxruntime accuracy {acc:.4f} on {len(data['label'])} held-out")
    print(f"digits done in {time.time() - t0:.0f}s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=SEED, help="training seed (the examples: 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write models and held-out data here instead of examples/")
    args = parser.parse_args()
    build(args.threads, args.seed, args.out)


if __name__ == "__main__":
    main()
