"""The converter's defaults on a model it was not tuned on: a digits ResNet-20 of another seed.

    python examples/make_digits.py --seed 1 --out /tmp/seed1    # needs the ref extra (torch)
    python -m benchmarks.unseen_check /tmp/seed1

Prints top-1 on the held-out digits for the measured plan (default, targets 3 and 4) and the fixed
2/8 and 3/8 pair plans (rounding, measured and fixed bias correction), BN kept and folded.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from dfmpc_onnx import ConvertOptions, convert_file

from .run import top1

PLANS = {"default (auto)": {}, "target 3": dict(target_bits=3), "target 4": dict(target_bits=4),
         "2/8 round": dict(low_bits=2, correction="none"), "2/8 measured": dict(low_bits=2),
         "2/8 bc": dict(low_bits=2, correction="bias"),
         "3/8 round": dict(low_bits=3, correction="none"), "3/8 measured": dict(low_bits=3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="what make_digits.py --out wrote")
    folder = ap.parse_args().folder
    data = np.load(folder / "digits_test.npz")
    x, y = data["input"], data["label"]
    for stem in ("digits_resnet20_bnkept", "digits_resnet20_bnfolded"):
        src = folder / f"{stem}.onnx"
        print(f"{stem}: FP32 {100 * top1(src, x, y):.1f}% on {len(y)} held-out digits")
        with tempfile.TemporaryDirectory() as tmp:
            for name, kw in PLANS.items():
                out = Path(tmp) / "q.onnx"
                report = convert_file(src, out, ConvertOptions(**kw))
                agree = report.fidelity.get("top1_agreement")
                print(f"  {name:15s} stored bits {report.stored_bits:5.2f}  top-1 "
                      f"{100 * top1(out, x, y):5.1f}%  predicted agreement {agree}")


if __name__ == "__main__":
    main()
