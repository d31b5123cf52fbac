"""Top-1 of the example models under every bit setting and solver, beside plain rounding.

    python -m benchmarks.accuracy_table [--models digits_resnet20_bnfolded ...] [--quick]

Prints a Markdown table: model, low/high bits, granularity, solver, top-1 on the held-out set,
average weight bits, file size. Every row is a real conversion through the public API.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert_file

from .datasets import EXAMPLES, load_test_set


def top1(path: str | Path, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    return float((np.concatenate(preds) == y).mean())


def rows(model: Path, lows, highs, grans, solvers, extra: dict | None = None):
    x, y = load_test_set(model)
    yield dict(model=model.stem, setting="fp32", solver="-", top1=top1(model, x, y),
               bits=32.0, size=model.stat().st_size, seconds=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for low, high, gran, solver in itertools.product(lows, highs, grans, solvers):
            out = Path(tmp) / "q.onnx"
            opts = ConvertOptions(low_bits=low, high_bits=high, granularity=gran, solver=solver,
                                  **(extra or {}))
            start = time.perf_counter()
            report = convert_file(model, out, opts)
            secs = time.perf_counter() - start
            yield dict(model=model.stem, setting=f"{low}/{high} {gran}", solver=solver,
                       top1=top1(out, x, y), bits=report.average_bits, size=out.stat().st_size,
                       seconds=secs, n=len(y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="model stems under examples/models")
    ap.add_argument("--low", nargs="*", type=int, default=[2, 3, 4])
    ap.add_argument("--high", nargs="*", type=int, default=[8])
    ap.add_argument("--granularity", nargs="*", default=["channel", "tensor"])
    ap.add_argument("--solvers", nargs="*", default=["none", "diag", "full"])
    ap.add_argument("--equalize", action="store_true")
    args = ap.parse_args()
    models = sorted((EXAMPLES / "models").glob("*.onnx"))
    if args.models:
        models = [m for m in models if m.stem in args.models]
    print("| model | bits low/high, scales | solver | top-1 | avg bits | size kB | convert s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for model in models:
        for r in rows(model, args.low, args.high, args.granularity, args.solvers,
                      {"equalize": True} if args.equalize else None):
            print(f"| {r['model']} | {r['setting']} | {r['solver']} | {100 * r['top1']:.1f}% | "
                  f"{r['bits']:.2f} | {r['size'] / 1024:.0f} | {r['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
