"""Latency of weight-only 4-bit MatMul models against float, with ONNX Runtime's default session
options, at batch 1 and 16: a BERT-shaped encoder (BERT-base widths) and an MLP stack.

    python -m benchmarks.matmul_speed                       # BERT-base widths, 4 layers, seq 128
    python -m benchmarks.matmul_speed --layers 12           # all 12 layers (conversion ~8 min)
    python -m benchmarks.matmul_speed --model mlp --layers 6   # 6 x (768 -> 3072 -> 768)

Each model is built with seeded weights (benchmarks/transformer_models.py), converted with
``--target-bits`` (default 4; the measured plan chooses bits and grids per layer), and both are run
on CPU with the session options left at ORT's defaults (no ``session.disable_quant_qdq``): the
quantized MatMuls then run on MatMulNBits (counted from ORT's optimised graph). Latency is the
median of ``--repeats`` runs, float and quantized interleaved so that load from other processes
on a shared machine falls on both; the quartiles and the minimum (the run least disturbed) are
printed too. Output error: the
largest absolute difference from the float output, over the largest float output.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.validate.fusion import fused_nodes

from .transformer_models import bert_encoder, mlp_stack


def session(path: Path, threads: int) -> ort.InferenceSession:
    """ORT's default session options except the thread count (fixed so runs compare)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_ms(sessions: list[ort.InferenceSession], feeds: dict, repeats: int,
                   warmup: int = 3) -> list[np.ndarray]:
    """Per session, ``repeats`` wall-clock times in ms, the sessions taking turns each round."""
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for s, t in zip(sessions, times, strict=True):
            start = time.perf_counter()
            s.run(None, feeds)
            t.append((time.perf_counter() - start) * 1e3)
    return [np.asarray(t) for t in times]


def build(kind: str, layers: int, seq: int) -> onnx.ModelProto:
    if kind == "bert":
        return bert_encoder(layers=layers, seq=seq)
    return mlp_stack(blocks=layers)


def measure(kind: str, layers: int, seq: int, target_bits: float, batches: list[int],
            repeats: int, threads: int, folder: Path) -> dict:
    """Convert, then time float and quantized at each batch size; every figure of the table."""
    model = build(kind, layers, seq)
    float_path, quant_path = folder / "float.onnx", folder / "quant.onnx"
    onnx.save(model, float_path)
    start = time.perf_counter()
    quant, report = convert(model, ConvertOptions(target_bits=target_bits))
    convert_s = time.perf_counter() - start
    onnx.save(quant, quant_path)
    fused = fused_nodes(quant_path)
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) == 2)
    fs, qs = session(float_path, threads), session(quant_path, threads)
    rows = []
    for batch in batches:
        shape = (batch, seq, 768) if kind == "bert" else (batch, 768)
        x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
        feeds = {"x": x}
        ref, got = fs.run(None, feeds)[0], qs.run(None, feeds)[0]
        tf, tq = interleaved_ms([fs, qs], feeds, repeats)
        rows.append({"batch": batch, "float_ms": float(np.median(tf)), "quant_ms": float(np.median(tq)),
                     "float_iqr": [float(v) for v in np.percentile(tf, [25, 75])],
                     "quant_iqr": [float(v) for v in np.percentile(tq, [25, 75])],
                     "float_min": float(tf.min()), "quant_min": float(tq.min()),
                     "speedup": float(np.median(tf) / np.median(tq)),
                     "speedup_min": float(tf.min() / tq.min()),
                     "rel_err": float(np.abs(got - ref).max() / np.abs(ref).max())})
    return {"model": kind, "layers": layers, "seq": seq if kind == "bert" else None,
            "matrix_weights": weights, "target_bits": target_bits,
            "average_bits": report.average_bits, "stored_bits": report.stored_bits,
            "float_bytes": float_path.stat().st_size, "quant_bytes": quant_path.stat().st_size,
            "convert_s": convert_s, "fused": fused["fused"],
            "weight_dequantize_left": len(fused["weight_dequantize"]), "threads": threads,
            "repeats": repeats, "rows": rows,
            "platform": f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}"}


def table(r: dict) -> str:
    name = (f"BERT-shaped encoder, {r['layers']} layers, hidden 768, FFN 3072, seq {r['seq']}"
            if r["model"] == "bert" else f"MLP, {r['layers']} x (768 -> 3072 -> 768)")
    mib = 2 ** 20
    lines = [f"{name}: {r['matrix_weights'] / 1e6:.1f} M matrix weights; --target-bits "
             f"{r['target_bits']:g} (plan: {r['average_bits']:.2f} bits, {r['stored_bits']:.2f} stored), "
             f"converted in {r['convert_s']:.0f} s; file {r['float_bytes'] / mib:.1f}"
             f" MiB -> {r['quant_bytes'] / mib:.1f} MiB; ORT ran {r['fused'] or 'nothing fused'}, "
             f"{r['weight_dequantize_left']} weight DequantizeLinear left; {r['threads']} threads, "
             f"median of {r['repeats']} interleaved runs ({r['platform']})", "",
             "| batch | float ms: median (IQR), min | quantized ms: median (IQR), min | speed-up: "
             "medians, minima | max output error / max output |",
             "|---|---|---|---|---|"]
    for row in r["rows"]:
        fq, qq = row["float_iqr"], row["quant_iqr"]
        lines.append(f"| {row['batch']} | {row['float_ms']:.2f} ({fq[0]:.2f}-{fq[1]:.2f}), "
                     f"{row['float_min']:.2f} | {row['quant_ms']:.2f} ({qq[0]:.2f}-{qq[1]:.2f}), "
                     f"{row['quant_min']:.2f} | {row['speedup']:.2f}x, {row['speedup_min']:.2f}x | "
                     f"{row['rel_err']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["bert", "mlp"], default="bert")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--target-bits", type=float, default=4.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.model, args.layers, args.seq, args.target_bits, args.batches,
                    args.repeats, args.threads, Path(tmp))
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
