"""Does the data-free fidelity signal rank layer sensitivity like real data does? (issue 9, part 1)

For each example model, every Conv/Gemm/MatMul layer alone is quantized (max-abs per channel) at
2, 3 and 4 bits, the rest float, and the fidelity probe measures the whole-network divergence
(``dfmpc_onnx.measure.fidelity``: KL of softmax on these classifiers). The truth is that divergence on the
held-out inputs (``benchmarks.datasets.load_test_set``); each kind of synthetic input gives its own
ranking. Printed per model and kind: Spearman rank correlation with the truth over the layers at
each width, their mean, and whether the most sensitive layer at 2 bits is the same. ``real-half``
is the ceiling: the ranking on one half of the held-out set against the other half. ``distilled``
(ZeroQ inputs, ``dfmpc_onnx.measure.distill``) runs when torch is installed (extra ``synth``), on models
that keep BatchNormalization; a BN-folded model uses the inputs distilled from its ``_bnkept``
sibling, which computes the same function.

    nice -n 10 python -m benchmarks.sensitivity_truth            # all examples
    nice -n 10 python -m benchmarks.sensitivity_truth --models digits_resnet20_bnkept
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.datasets import load_test_set
from benchmarks.fidelity_speed import layer_weights, spearman
from dfmpc_onnx.measure.fidelity import FidelityProbe
from dfmpc_onnx.measure.synthetic import synthetic_inputs
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer


def quantize(w, bits, axis):
    """Per-channel max-abs rounding along ``axis`` (the converter's default grid)."""
    return get_quantizer("maxabs").quantize(w, bits, WeightLayout(axis, 1 - axis if w.ndim == 2 else 1))


MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
BITS = (2, 3, 4)
KINDS = ("gaussian", "uniform", "smooth", "mixed")


def sensitivity(model: onnx.ModelProto, inputs: dict[str, np.ndarray], threads: int) -> np.ndarray:
    """(layers, bits) matrix of the probe's score, each layer alone at each width."""
    layers = layer_weights(model)
    probe = FidelityProbe(model, [n for n, _ in layers], inputs, threads=threads)
    out = np.zeros((len(layers), len(BITS)))
    for i, (name, axis) in enumerate(layers):
        w = probe.weight(name)
        for j, b in enumerate(BITS):
            out[i, j] = probe.measure({name: quantize(w, b, axis).dequantize()}).score
    return out


def agreement(truth: np.ndarray, guess: np.ndarray) -> tuple[list[float], bool]:
    """Spearman over layers at each width, and whether the top layer at the lowest width agrees."""
    rhos = [spearman(truth[:, j], guess[:, j]) for j in range(truth.shape[1])]
    return rhos, int(np.argmax(truth[:, 0])) == int(np.argmax(guess[:, 0]))


_DISTILLED: dict[Path, tuple[dict[str, np.ndarray], str]] = {}


def distilled_for(path: Path, n: int, seed: int, steps: int) -> tuple[dict[str, np.ndarray] | None, str]:
    """ZeroQ inputs of the model, or of its BN-kept sibling, and a note on the loss; None
    without torch or BN."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch not installed"
    from dfmpc_onnx.measure.distill import distill

    source = path.with_name(path.name.replace("bnfolded", "bnkept"))
    if not source.exists():
        return None, "no BN-kept model"
    if source not in _DISTILLED:
        model = onnx.load(str(source))
        if not any(nd.op_type == "BatchNormalization" for nd in model.graph.node):
            return None, "no BN"
        t0 = time.perf_counter()
        inputs, losses = distill(model, n=n, seed=seed, steps=steps)
        _DISTILLED[source] = inputs, (f"BN loss {losses[0]:.1f} -> {losses[-1]:.1f} in {steps} steps, "
                                      f"{time.perf_counter() - t0:.0f} s, from {source.stem}")
    return _DISTILLED[source]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="model file stems (default: every example)")
    ap.add_argument("--n", type=int, default=64, help="synthetic samples")
    ap.add_argument("--real", type=int, default=1000, help="held-out samples for the truth (at most)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200, help="distillation steps")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    paths = sorted(MODELS.glob("*.onnx"))
    if args.models:
        paths = [p for p in paths if p.stem in args.models]
    print(f"Spearman(real-data sensitivity, synthetic sensitivity) over layers, each alone at {BITS} "
          f"bits; truth: KL on up to {args.real} held-out samples; synthetic n={args.n}, seed {args.seed}")
    print(f"{'model':34s} {'kind':10s} " + " ".join(f"rho@{b}" for b in BITS) + "  mean  top@2")
    summary: dict[str, list[float]] = {}
    for path in paths:
        model = onnx.load(str(path))
        x, _ = load_test_set(path)
        name = model.graph.input[0].name
        truth = sensitivity(model, {name: x[: args.real]}, args.threads)
        half = min(len(x), args.real) // 2
        kinds: dict[str, dict[str, np.ndarray] | None] = {
            "real-half": {name: x[half:2 * half]}}  # ceiling: how stable is the truth itself?
        kinds.update({k: synthetic_inputs(model, n=args.n, kind=k, seed=args.seed) for k in KINDS})
        kinds["distilled"], note = distilled_for(path, args.n, args.seed, args.steps)
        for kind, inputs in kinds.items():
            if inputs is None:
                continue
            base = truth if kind != "real-half" else sensitivity(model, {name: x[:half]}, args.threads)
            rhos, top = agreement(base, sensitivity(model, inputs, args.threads))
            summary.setdefault(kind, []).append(float(np.mean(rhos)))
            extra = f"  ({note})" if kind == "distilled" else ""
            print(f"{path.stem:34s} {kind:10s} " + " ".join(f"{r:5.2f}" for r in rhos)
                  + f"  {np.mean(rhos):4.2f}  {'yes' if top else 'no'}{extra}")
    for kind, values in summary.items():
        print(f"mean over {len(values)} models, {kind:10s}: {np.mean(values):.2f}")


if __name__ == "__main__":
    main()
