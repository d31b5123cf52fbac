"""The plain recipe by hand on PP-OCRv4's recogniser (issue 19), by input kind and 4-bit grid.

Each layer's sensitivity: KL of the (batch, time, classes) output when that layer alone is on a
4-bit block-32 grid (NumPy fake quantization of its Constant weight, run in ONNX Runtime), on 16
synthetic inputs of the kind given (the converter's draw, seed 0). Layers are ranked by it per
weight; the least sensitive are moved to 4 bits on one grid until the stored bits (containers
and float32 scales, as the converter counts them) reach 5, the rest kept at 8; also the issue's
own recipe (the 20 least sensitive on block-32, whatever that stores). Real character accuracy
on 100 rendered lines, as ``benchmarks/plan_check.py`` measures it.

    python -m benchmarks.recipe_check smooth
    python -m benchmarks.recipe_check uniform
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from benchmarks.plan_check import MODELS, OUT, characters, metric, model_path, render
from dfmpc_onnx import ConvertOptions, convert_file
from dfmpc_onnx.measure.inputs import measurement_inputs
from dfmpc_onnx.measure.output_kinds import kl_divergence
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer

PLANS = [(5.0, "block64"), (5.0, "block128"), (5.0, "maxabs"), (None, "block32")]
ISSUE_LAYERS = 20  # the issue's recipe: this many layers on 4-bit block-32


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _stored_bits(w: np.ndarray, bits: int, grid: str) -> float:
    """Stored bits per weight of ``w`` (a Conv's (out, in, kh, kw) or a MatMul's (in, out)) on
    ``grid``, float32 scales: one per block, or per output channel."""
    fan = w.size // w.shape[0] if w.ndim == 4 else w.shape[0]
    blocked = grid.startswith("block") and (w.ndim == 2 or w.shape[1] > 1)
    return bits + 32 / (int(grid[5:]) if blocked else fan)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", help="synthetic input kind: smooth, gaussian, uniform")
    ap.add_argument("--n", type=int, default=100, help="real text lines")
    args = ap.parse_args(argv)
    src = model_path("rec", Path("/work/cache/wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl"))
    shape = MODELS["rec"][1]
    model = onnx.load(str(src))
    syn = measurement_inputs(model, ConvertOptions(input_shapes={"x": shape}, synthetic=args.kind),
                             n=16, seed=0)["x"]
    const = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    layers = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "MatMul") and n.input[1] in const:
            w = numpy_helper.to_array(const[n.input[1]].attribute[0].t)
            layout = WeightLayout(0, 1) if n.op_type == "Conv" else WeightLayout(1, 0)
            layers[n.name] = (n.input[1], w, layout)
    ref = _run(model, syn)
    t0 = time.perf_counter()
    sens = {}
    for name, (cname, w, layout) in layers.items():
        node = const[cname]
        old = onnx.TensorProto()
        old.CopyFrom(node.attribute[0].t)
        qt = get_quantizer("block32").quantize(w.astype(np.float64), 4, layout)
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(qt.dequantize().astype(np.float32), old.name))
        out = _run(model, syn)
        node.attribute[0].t.CopyFrom(old)
        sens[name] = kl_divergence(ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1]),
                                   probabilities=True)
    order = sorted(sens, key=lambda n: sens[n] / layers[n][1].size)
    print(f"{args.kind}: sensitivities of {len(layers)} layers in {time.perf_counter() - t0:.0f} s; "
          f"least per weight first: {', '.join(order[:8])}, ...")
    x, texts, labels = render(args.n, shape[3], seed=0, rotate=False)
    data = {"x": x, "texts": texts, "labels": labels, "chars": characters(src)}
    float_metric = metric("rec", src, data)
    total = sum(w.size for _, w, _ in layers.values())
    (OUT / "recipe").mkdir(exist_ok=True, parents=True)
    for budget, grid in PLANS:
        bits = {n: _stored_bits(w, 8, "maxabs") for n, (_, w, _) in layers.items()}
        plan = {n: {"bits": 8, "quantizer": "maxabs", "correction": "none"} for n in layers}
        moved = 0
        for n in order:
            fits = sum(bits[q] * layers[q][1].size for q in layers) / total <= budget if budget else False
            if fits or (budget is None and moved == ISSUE_LAYERS):
                break
            bits[n] = _stored_bits(layers[n][1], 4, grid)
            plan[n] = {"bits": 4, "quantizer": grid, "correction": "none"}
            moved += 1
        dst = OUT / "recipe" / f"{args.kind}_{grid}_{budget}.onnx"
        rep = convert_file(src, dst, ConvertOptions(method="pairs", high_bits=8, low_bits=8,
                                                    correction="none", fidelity_samples=0,
                                                    input_shapes={"x": shape}, plan=plan))
        real = metric("rec", dst, data) / float_metric
        print(f"  {args.kind} budget {budget} {grid}: {moved} layers at 4 bits, stored "
              f"{rep.stored_bits:.3f}, real {real:.3f} of float", flush=True)


if __name__ == "__main__":
    main()
