"""Data-free statistics against the held-out data: where do the converter's assumptions break?

    python -m benchmarks.stats_check glyphs_mobilenetv2_bnkept [--samples 1000]
    python -m benchmarks.stats_check glyphs_mobilenetv2_bnkept --without-bc /blocks/blocks.0/

For every quantized layer, the per-channel mean and variance of its input as the converter
predicts them (kept-BN anchors, Gaussian propagation), beside the same figures measured by running
the float model on held-out data, and the correlation of predicted and real channel means. A layer
whose bias correction hurts usually shows here as a wrong mean level or a low correlation.
``--without-bc SUBSTRING`` is the ablation: top-1 of the default conversion beside the same
conversion with bias correction turned off on the layers whose name contains SUBSTRING.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert_file, inspect_model
from dfmpc_onnx.passes import Context, analysis_passes, run_passes
from dfmpc_onnx.stats.walk import layer_inputs

from .datasets import EXAMPLES, load_test_set


def predicted_input_stats(model_path: str, options: ConvertOptions) -> dict[str, tuple]:
    """layer -> (input tensor, mean_f, var_f, source) as the quantize pass sees them: the float
    stream of the one statistics walk (``layer_inputs``), after the same analyses ``convert``
    runs, for every layer the plan quantizes."""
    model = onnx.load(model_path)
    ctx = Context(options)
    run_passes(analysis_passes(options), model, ctx)
    inputs = layer_inputs(model.graph, ctx)
    nodes = {n.name: n for n in model.graph.node}
    seen: dict[str, tuple] = {}
    for name in ctx.plan:
        s = inputs[name].stats
        seen[name] = (nodes[name].input[0], s.mean_f.copy(), s.var_f.copy(), s.source)
    return seen


def top1_without_bc(path, options: ConvertOptions, substring: str) -> tuple[float, float]:
    """(top-1 default, top-1 with bias correction off on the matching layers), held-out set."""
    from .run import top1

    x, y = load_test_set(path)
    names = [e.name for e in inspect_model(path, options).layers if substring in e.name and e.bits]
    without = replace(options, plan={**options.plan, **{n: {"correction": "none"} for n in names}})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        convert_file(path, out, options)
        base = top1(out, x, y)
        convert_file(path, out, without)
        return base, top1(out, x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model stem under examples/models")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--low-bits", type=int, default=2)
    ap.add_argument("--granularity", default="channel")
    ap.add_argument("--without-bc", metavar="SUBSTRING", help="ablate bias correction on these layers")
    args = ap.parse_args()
    path = EXAMPLES / "models" / f"{args.model}.onnx"
    if args.without_bc:
        opts = ConvertOptions(low_bits=args.low_bits, granularity=args.granularity,
                              correction="bias")
        base, ablated = top1_without_bc(path, opts, args.without_bc)
        print(f"top-1 {args.low_bits}/8 {args.granularity}: default {100 * base:.1f}%, without bias "
              f"correction on layers containing {args.without_bc!r}: {100 * ablated:.1f}%")
        return
    seen = predicted_input_stats(str(path), ConvertOptions(low_bits=args.low_bits))
    model = onnx.load(str(path))
    names = sorted({v[0] for v in seen.values()})
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names)
    x, _ = load_test_set(path)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    real = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x[:args.samples]}), strict=True))
    print(f"{len(x[:args.samples])} held-out samples; input statistics of each quantized layer")
    print(f"{'layer':48s} {'source':10s} {'mean real':>9s} {'pred':>7s} {'corr':>5s} "
          f"{'var real':>8s} {'pred':>7s}")
    for layer, (tensor, mean_p, var_p, source) in seen.items():
        a = real[tensor]
        axes = (0,) + tuple(range(2, a.ndim))
        mean_r, var_r = a.mean(axes), a.var(axes)
        if len(mean_p) != len(mean_r):
            mean_p, var_p = np.resize(mean_p, len(mean_r)), np.resize(var_p, len(mean_r))
        corr = np.corrcoef(mean_p, mean_r)[0, 1] if len(mean_r) > 1 and mean_p.std() > 0 else np.nan
        print(f"{layer[-48:]:48s} {source:10s} {mean_r.mean():+9.3f} {mean_p.mean():+7.3f} "
              f"{corr:5.2f} {var_r.mean():8.3f} {var_p.mean():7.3f}")


if __name__ == "__main__":
    main()
