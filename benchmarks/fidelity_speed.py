"""How long the fidelity probe takes to measure every Conv/Gemm layer of a ResNet-18 at 2/3/4/8 bits.

Issue 9 asks for under 60 s on 2 cores. Each layer alone is replaced by its max-abs per-channel
quantized weight (``dfmpc_onnx.quant``), the rest float, one layer at a time: 21 layers x 4 widths
= 84 trials. Prints the probe build time (float run + activation cache), the trial time, and with
``--seeds 2`` the Spearman correlation of the per-layer sensitivity ranking between two input seeds
(is ``--n`` samples enough?). ``--mode inputs`` measures the alternative design, one session with
every weight a graph input, for comparison.

    nice -n 10 python -m benchmarks.fidelity_speed --n 16 --seeds 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from benchmarks.resnet18 import resnet18
from dfmpc_onnx.measure.fidelity import FidelityProbe, compare
from dfmpc_onnx.measure.synthetic import synthetic_inputs
from dfmpc_onnx.model.graph import attr
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer


def quantize(w, bits, axis):
    """Per-channel max-abs rounding along ``axis`` (the converter's default grid)."""
    return get_quantizer("maxabs").quantize(w, bits, WeightLayout(axis, 1 - axis if w.ndim == 2 else 1))

BITS = (2, 3, 4, 8)


def layer_weights(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(weight name, output-channel axis of the stored weight) of every Conv/Gemm/MatMul."""
    inits = {t.name for t in model.graph.initializer}
    found: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            found.setdefault(node.input[1], 0)
        elif node.op_type == "Gemm" and node.input[1] in inits:
            found.setdefault(node.input[1], 0 if attr(node, "transB", 0) else 1)
        elif node.op_type == "MatMul" and node.input[1] in inits:
            found.setdefault(node.input[1], 1)
    return list(found.items())


def candidates(w: np.ndarray, axis: int) -> dict[int, np.ndarray]:
    return {b: quantize(w, b, axis).dequantize().astype(w.dtype) for b in BITS}


def sweep(probe: FidelityProbe, layers: list[tuple[str, int]]) -> dict[str, dict[int, float]]:
    """Score of each layer alone at each width: the per-layer sensitivity curves."""
    out: dict[str, dict[int, float]] = {}
    for name, axis in layers:
        out[name] = {b: probe.measure({name: q}).score
                     for b, q in candidates(probe.weight(name), axis).items()}
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), NumPy only."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share the mean rank
        tie = x == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def noise_floor(probe: FidelityProbe, layers: list[tuple[str, int]]) -> float:
    """Score of the float weights run through the segment sessions (``measure`` answers that
    trial from the reference without running): what the sessions' own rounding adds."""
    picks = [layers[0], layers[len(layers) // 2], layers[-1]]
    return max(compare(probe._cache, probe._trial({n: probe.weight(n).copy()}), probe._outputs).score
               for n, _ in picks)


class Clock:
    """Wall and process CPU seconds since creation. The machine is shared: CPU seconds (all
    threads) divided by the 2 threads bound the wall time on 2 free cores; wall time under load
    does not."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> str:
        return f"{time.perf_counter() - self.wall:.1f} s wall / {time.process_time() - self.cpu:.1f} s CPU"


def all_inputs_sweep(model: onnx.ModelProto, layers: list[tuple[str, int]], inputs: dict,
                     threads: int) -> tuple[float, float]:
    """The rejected design, timed: one session, every probed weight a graph input."""
    names = {n for n, _ in layers}
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [t for t in m.graph.initializer if t.name not in names]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    m.graph.input.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape)
                         for n, a in arrays.items())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t0 = time.perf_counter()
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    build = time.perf_counter() - t0
    ref = [{"out": sess.run(None, {**inputs, **arrays})[0]}]
    clock = Clock()
    for name, axis in layers:
        for q in candidates(arrays[name], axis).values():
            compare(ref, [{"out": sess.run(None, {**inputs, **arrays, name: q})[0]}], ["out"])
    return build, clock.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="synthetic samples per trial")
    ap.add_argument("--kind", default="gaussian")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="2: also report rank stability across seeds")
    ap.add_argument("--mode", choices=("suffix", "inputs"), default="suffix")
    args = ap.parse_args()
    model = resnet18()
    layers = layer_weights(model)
    print(f"resnet18: {len(layers)} Conv/Gemm layers x bits {BITS} = {len(layers) * len(BITS)} trials, "
          f"n={args.n} {args.kind} inputs, {args.threads} threads, ORT {ort.__version__}")
    curves = []
    for seed in range(args.seeds):
        inputs = synthetic_inputs(model, n=args.n, kind=args.kind, seed=seed)
        if args.mode == "inputs":
            build, trials = all_inputs_sweep(model, layers, inputs, args.threads)
            print(f"seed {seed}: all-weights-as-inputs session build {build:.2f} s, trials {trials}")
            continue
        total = Clock()
        probe = FidelityProbe(model, [n for n, _ in layers], inputs, threads=args.threads)
        build = total.read()
        clock = Clock()
        curve = sweep(probe, layers)
        trials = clock.read()
        cache_mb = sum(v.nbytes for run in probe._cache for v in run.values()) / 2**20
        print(f"seed {seed}: probe build {build} (float run, {cache_mb:.0f} MiB cached activations, "
              f"{len(probe._segments)} segments); trials {trials} (sessions built on first use); "
              f"total {total.read()}; load average {os.getloadavg()[0]:.1f}")
        curves.append(curve)
        if seed == 0:
            floor = noise_floor(probe, layers)
            low = min(curve[n][8] for n, _ in layers)
            print(f"float weights forced through the trial path (first, middle, last layer): max score "
                  f"{floor:.3g}; smallest 8-bit score {low:.3g}")
    if len(curves) == 2:
        for b in BITS:
            s = spearman(np.array([curves[0][n][b] for n, _ in layers]),
                         np.array([curves[1][n][b] for n, _ in layers]))
            print(f"rank stability seed 0 vs 1 at {b} bits: Spearman {s:.3f}")
        a = np.array([curves[0][n][b] for n, _ in layers for b in BITS])
        c = np.array([curves[1][n][b] for n, _ in layers for b in BITS])
        print(f"rank stability over all (layer, bits) trials: Spearman {spearman(a, c):.3f}")


if __name__ == "__main__":
    main()
