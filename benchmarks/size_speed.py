"""Conversion time, packed size against the ideal, and latency against float, on ResNet-18.

    python -m benchmarks.size_speed [--low-bits 2] [--high-bits 8] [--repeats 30]
    python -m benchmarks.size_speed --target-bits 4     # the measured plan instead

The same figures as the ResNet-18 section of BENCHMARKS.md (benchmarks.run), alone, in ~15 s.
Ideal size = sum over quantized layers of parameters x bits / 8, plus their scales, plus every
tensor left in float. Latency: median over repeated runs, 2 threads, batch 1, the quantized
model with session.disable_quant_qdq=1 (and without, for contrast).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dfmpc_onnx import ConvertOptions

from .run import resnet18_size_speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--low-bits", type=int, default=2)
    ap.add_argument("--high-bits", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--target-bits", type=float, default=None,
                    help="convert with the measured plan at this budget instead of a pair plan")
    args = ap.parse_args()
    options = (ConvertOptions(target_bits=args.target_bits) if args.target_bits is not None
               else ConvertOptions(low_bits=args.low_bits, high_bits=args.high_bits))
    what = (f"measured plan, target {args.target_bits:g} bits" if args.target_bits is not None
            else f"{args.low_bits}/{args.high_bits}")
    with tempfile.TemporaryDirectory() as tmp:
        r = resnet18_size_speed(Path(tmp), args.repeats, options)
    mib = 2 ** 20
    print(f"model: ResNet-18 shape, {r['params'] / 1e6:.2f} M conv/fc weights, random, BN kept")
    print(f"convert {what}: {r['convert_s']:.2f} s wall, {r['pairs']} pairs, "
          f"average weight bits {r['avg_bits']:.2f}")
    print(f"size: float {r['float_bytes'] / mib:.2f} MiB -> packed {r['packed_bytes'] / mib:.2f} MiB; "
          f"ideal {r['ideal_bytes'] / mib:.2f} MiB (file/ideal {r['packed_bytes'] / r['ideal_bytes']:.3f})")
    print(f"latency (median, batch 1, 2 threads): float {r['fp32_ms']:.2f} ms, quantized "
          f"{r['q_ms']:.2f} ms (ratio {r['q_ms'] / r['fp32_ms']:.2f}) with session.disable_quant_qdq=1; "
          f"{r['q_slow_ms']:.2f} ms (ratio {r['q_slow_ms'] / r['fp32_ms']:.2f}) without")


if __name__ == "__main__":
    main()
