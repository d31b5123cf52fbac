"""Which judgement of a sequence output ranks plans as the real metric does? (issue 19)

On PaddleOCR's PP-OCRv4 recogniser (``benchmarks/plan_check.py``'s ``rec``), converts a spread of
fixed plans (every layer at 8 bits; a random share of the layers at 4 bits on max-abs or block-32
grids, the rest at 8; a few layers at 2 bits), each fast (no measurement), and gives per plan its
stored bits, the real character accuracy on rendered text lines, and several judgements of its
(batch, time, classes) output against the float model's on the converter's synthetic inputs
(the held-out draw: 64 smooth inputs of seed 1). Then the Spearman correlation of each judgement
with the real metric over the plans. The judgements:

- ``agree_off_mode``: top-1 agreement over positions where either side is not the float's most
  frequent class (``output_kinds`` before this benchmark);
- ``agree_all``: top-1 agreement over every position;
- ``agree_weighted``: top-1 agreement per position weighted by the float model's confidence there
  (its largest probability);
- ``kl``: minus the mean KL over every position;
- ``p_float_top``: the mean probability the candidate gives the float model's top class;
- ``decode``: 1 - edit distance / length of greedy decodes (argmax per position, repeats
  collapsed, the float's most frequent class dropped), candidate against float.

    python -m benchmarks.judge_check --n 100
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.plan_check import (
    MODELS,
    OUT,
    _edit_distance,
    _session,
    characters,
    metric,
    model_path,
    render,
    spearman,
)
from dfmpc_onnx import ConvertOptions, convert_file
from dfmpc_onnx.measure.inputs import measurement_inputs
from dfmpc_onnx.measure.output_kinds import judge


def plans(layers: list[str], seed: int) -> dict[str, dict[str, dict]]:
    """Named fixed plans over ``layers``: see the module docstring."""
    rng = random.Random(seed)
    eight = {n: {"bits": 8, "quantizer": "maxabs", "correction": "none"} for n in layers}
    out = {"all8": eight}
    for grid in ("maxabs", "block32"):
        for share in (0.2, 0.4, 0.6, 0.8, 1.0):
            low = set(rng.sample(layers, round(share * len(layers))))
            out[f"4bit-{grid}-{share:g}"] = {
                n: ({"bits": 4, "quantizer": grid, "correction": "none"} if n in low else eight[n])
                for n in layers}
    for k in (2, 6):
        low = set(rng.sample(layers, k))
        out[f"2bit-x{k}"] = {n: ({"bits": 2, "quantizer": "maxabs", "correction": "none"}
                                 if n in low else eight[n]) for n in layers}
    return out


def _decode(arg: np.ndarray, blank: int) -> list[list[int]]:
    out = []
    for row in arg:
        out.append([int(k) for i, k in enumerate(row) if k != blank and (i == 0 or k != row[i - 1])])
    return out


def judgements(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Each judgement of candidate probabilities ``b`` against float ``a``, (batch, time, classes)."""
    j = judge("sequence", [a], [b])
    fa, fb = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    arg_a, arg_b = fa.argmax(1), fb.argmax(1)
    conf = fa.max(1)
    values, counts = np.unique(arg_a, return_counts=True)
    blank = int(values[np.argmax(counts)])
    da, db = _decode(a.argmax(-1), blank), _decode(b.argmax(-1), blank)
    errors = sum(_edit_distance(x, y) for x, y in zip(da, db, strict=True))
    length = sum(max(len(x), 1) for x in da)
    return {"agree_off_mode": j.agreement, "agree_all": float(np.mean(arg_a == arg_b)),
            "agree_weighted": float(np.sum(conf * (arg_a == arg_b)) / np.sum(conf)),
            "kl": -j.divergence, "p_float_top": float(np.mean(fb[np.arange(len(fb)), arg_a])),
            "decode": 1.0 - errors / length}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path,
                    default=Path("/work/cache/wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl"))
    ap.add_argument("--n", type=int, default=100, help="real text lines")
    ap.add_argument("--samples", type=int, default=64, help="synthetic inputs")
    ap.add_argument("--seed", type=int, default=0, help="which layers each plan moves")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    src = model_path("rec", args.wheel)
    shape = MODELS["rec"][1]
    x, texts, labels = render(args.n, shape[3], seed=0, rotate=False)
    data = {"x": x, "texts": texts, "labels": labels, "chars": characters(src)}
    opts = ConvertOptions(input_shapes={"x": shape})
    syn = measurement_inputs(onnx.load(str(src)), opts, n=args.samples, seed=1)["x"]

    def synthetic_out(path: Path) -> np.ndarray:
        s = _session(path)
        return np.concatenate([s.run(None, {"x": syn[i:i + 16]})[0] for i in range(0, len(syn), 16)])

    ref = synthetic_out(src)
    float_metric = metric("rec", src, data)
    dst_dir = OUT / "judge_check"
    dst_dir.mkdir(parents=True, exist_ok=True)
    base = convert_file(src, dst_dir / "probe.onnx", ConvertOptions(
        method="pairs", high_bits=8, low_bits=8, correction="none", fidelity_samples=0,
        input_shapes={"x": shape}))
    layers = [lr.name for lr in base.layers if lr.bits is not None]
    rows = [{"plan": "float", "stored_bits": 32.0, "real": 1.0,
             **judgements(ref, ref)}]
    for name, plan in plans(layers, args.seed).items():
        t0 = time.perf_counter()
        dst = dst_dir / f"{name}.onnx"
        rep = convert_file(src, dst, ConvertOptions(
            method="pairs", high_bits=8, low_bits=8, correction="none", fidelity_samples=0,
            input_shapes={"x": shape}, plan=plan))
        row = {"plan": name, "stored_bits": round(rep.stored_bits, 3),
               "real": metric("rec", dst, data) / float_metric,
               **judgements(ref, synthetic_out(dst))}
        rows.append(row)
        print(f"{name:>20} {row['stored_bits']:5.2f} bits  real {row['real']:.3f}  " + "  ".join(
            f"{k} {row[k]:.3f}" for k in row if k not in ("plan", "stored_bits", "real"))
            + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    keys = [k for k in rows[0] if k not in ("plan", "stored_bits", "real")]
    rho = {k: spearman([r[k] for r in rows], [r["real"] for r in rows]) for k in keys}
    print(f"float character accuracy {float_metric:.4f} on {args.n} lines; Spearman with the real "
          f"metric over {len(rows)} plans (float included):")
    for k in keys:
        print(f"  {k:>15}: {rho[k]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "spearman": rho}, indent=1))


if __name__ == "__main__":
    main()
