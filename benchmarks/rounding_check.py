"""Balanced against nearest rounding (``--rounding``) on the example models, every plan kind.

Each example model converted with the default plan, ``--target-bits 4`` and ``5``, and the fixed
pair plans 2/8 and 4/8 (``--correction auto``, their default), once with ``--rounding nearest``
and once with ``balanced`` (the default), each scored by top-1 accuracy on its labelled test set
(examples/data) with the stored bits beside it. The pretrained suite's columns are in
``benchmarks/pretrained.py`` (rerun there with the new default).

    python -m benchmarks.rounding_check            # writes benchmarks/rounding_check_results.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.convert_time import accuracy
from dfmpc_onnx import ConvertOptions, convert_file

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"default": {}, "tb4": {"target_bits": 4}, "tb5": {"target_bits": 5},
           "pairs 2/8": {"method": "pairs", "low_bits": 2, "high_bits": 8},
           "pairs 4/8": {"method": "pairs", "low_bits": 4, "high_bits": 8}}
ROUNDINGS = ("nearest", "balanced")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="model stems under examples/models (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "rounding_check_results.md")
    args = ap.parse_args(argv)
    models = sorted((ROOT / "examples" / "models").glob("*.onnx"))
    if args.models:
        models = [m for m in models if m.stem in args.models]
    head = "| model | " + " | ".join(f"{c} {r}" for c in CONFIGS for r in ROUNDINGS) + " |"
    lines = ["Top-1 % / stored bits per weight; `python -m benchmarks.rounding_check`.", "",
             head, "|---|" + "---|" * (len(CONFIGS) * len(ROUNDINGS))]
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            cells = []
            for options in CONFIGS.values():
                for rounding in ROUNDINGS:
                    dst = Path(tmp) / f"{model.stem}.onnx"
                    rep = convert_file(model, dst, ConvertOptions(rounding=rounding, **options))
                    cells.append(f"{100 * accuracy(dst, model):.1f} / {rep.stored_bits:.2f}")
            lines.append(f"| {model.stem} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
