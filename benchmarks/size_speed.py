"""Conversion time, packed size against the ideal, and latency against float, on ResNet-18.

    python -m benchmarks.size_speed [--low-bits 2] [--repeats 30]

Ideal size = sum over quantized layers of parameters x bits / 8, plus their scales, plus every
tensor left in float. Latency: median over repeated runs, 2 threads, batch 1, the quantized
model with session.disable_quant_qdq=1 (and without, for contrast).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from dfmpc_onnx import ConvertOptions, convert_file
from dfmpc_onnx.validate import make_session, measure_latency

from .resnet18 import resnet18


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--low-bits", type=int, default=2)
    ap.add_argument("--high-bits", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "resnet18.onnx", Path(tmp) / "resnet18.q.onnx"
        model = resnet18()
        onnx.save(model, src)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                     if t.name.endswith(".weight"))
        start = time.perf_counter()
        report = convert_file(src, dst, ConvertOptions(low_bits=args.low_bits,
                                                       high_bits=args.high_bits))
        wall = time.perf_counter() - start
        size = dst.stat().st_size
        print(f"model: ResNet-18 shape, {params / 1e6:.2f} M conv/fc weights, random, BN kept")
        print(f"convert {args.low_bits}/{args.high_bits}: {wall:.2f} s wall "
              f"(passes {report.seconds:.2f} s), {len(report.pairs)} pairs, "
              f"average weight bits {report.average_bits:.2f}")
        print(f"size: float {src.stat().st_size / 2**20:.2f} MiB -> packed {size / 2**20:.2f} MiB; "
              f"ideal {report.ideal_weight_bytes / 2**20:.2f} MiB "
              f"(file/ideal {size / report.ideal_weight_bytes:.3f})")
        feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224),
                                                                  dtype=np.float32)}
        sessions = [make_session(src), make_session(dst),
                    make_session(dst, disable_quant_qdq=False)]
        f, q, q_slow = measure_latency(sessions, [feeds] * 3, repeats=args.repeats)
        print(f"latency (median of {args.repeats}, batch 1, 2 threads): float {f:.2f} ms, "
              f"quantized {q:.2f} ms (ratio {q / f:.2f}) with session.disable_quant_qdq=1; "
              f"{q_slow:.2f} ms (ratio {q_slow / f:.2f}) without")


if __name__ == "__main__":
    main()
