"""How much of each model the pairs cover: the paper's rule against pairing through Concat, Split,
branches and a kept BatchNormalization (find-pairs with --pair-through, the default).

    python -m benchmarks.pair_coverage [MODEL.onnx ...] [--light] [--pair-through|--no-pair-through]

Without models: examples/models/*.onnx and tests/data/zoo/*.onnx (--light adds the architectures
of onnx's backend/test/data/light). Per model: quantizable layers; for each rule the low-bit
layers (A), the pairs (A, B) and the share of the layers' weights in a pair (A or B). Only the
analysis passes up to find-pairs run (seconds; nothing is quantized). With --pair-through or
--no-pair-through, only that rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from dfmpc_onnx.api import pair_coverage as coverage

ROOT = Path(__file__).resolve().parent.parent
RULES = {False: "one reader", True: "through"}


def default_models(light: bool) -> list[Path]:
    models = sorted((ROOT / "examples" / "models").glob("*.onnx"))
    models += sorted((ROOT / "tests" / "data" / "zoo").glob("*.onnx"))
    if light:
        models += sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light")
                         .glob("light_*.onnx"))
    return models


def table(models: list[Path], rules: list[bool]) -> str:
    head = "| model | layers |" + "".join(f" A / pairs / weights ({RULES[r]}) |" for r in rules)
    lines = [head, "|---|---:|" + "---:|" * len(rules)]
    for path in models:
        cells = []
        for rule in rules:
            c = coverage(path, rule)
            cells.append(f" {c.low_bit} / {c.pairs} / {100 * c.weight_share:.0f}% |")
        lines.append(f"| {path.stem} | {c.layers} |" + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--light", action="store_true", help="add onnx's light model architectures")
    ap.add_argument("--pair-through", action=argparse.BooleanOptionalAction, default=None,
                    help="only this rule (default: both, side by side)")
    args = ap.parse_args()
    rules = [False, True] if args.pair_through is None else [args.pair_through]
    print(table(args.models or default_models(args.light), rules))


if __name__ == "__main__":
    main()
