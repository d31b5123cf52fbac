"""Why ``--floor-factor``: on a model's held-out synthetic inputs, how far 8-bit weights move its
outputs, against plans at --target-bits 6 and 5, and against the float model itself under tiny
input noise (+-0.5, 1, 2 steps of an 8-bit range of +-3 std).

Top-1 agreement (per non-blank position for sequence outputs) and divergence, as choose-plan
judges them (``measure.fidelity.compare``). Where even 8 bits agree on few positions, agreement
cannot judge the plan; the divergence relative to the 8-bit plan's still ranks plans.

    M=out/pretrained/rapidocr-onnxruntime/rapidocr_onnxruntime/models
    python -m benchmarks.floor_check $M/ch_PP-OCRv4_rec_infer.onnx 1,3,48,320
    python -m benchmarks.floor_check $M/ch_ppocr_mobile_v2.0_cls_infer.onnx 1,3,48,192

(the models are fetched by ``python -m benchmarks.pretrained``.) Prints one line per variant.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.measure.fidelity import compare
from dfmpc_onnx.measure.synthetic import synthetic_inputs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("shape", help="the first input's shape, e.g. 1,3,48,320")
    args = ap.parse_args(argv)
    model = onnx.load(args.model)
    name = model.graph.input[0].name
    shape = tuple(int(x) for x in args.shape.split(","))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2

    def runs(m: onnx.ModelProto, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = [o.name for o in s.get_outputs()]
        return [dict(zip(outs, s.run(None, {name: x[i:i + 1]}), strict=True)) for i in range(len(x))]

    x = synthetic_inputs(model, n=64, kind="smooth", seed=1, mean=0.0, std=1.0, value_range=None,
                         shapes={name: shape})[name]
    ref = runs(model, x)
    outs = list(ref[0])
    step = 2 * 3.0 / 255
    rng = np.random.default_rng(5)
    for k in (0.5, 1, 2):
        noisy = (x + rng.uniform(-k * step, k * step, x.shape)).astype(np.float32)
        fid = compare(ref, runs(model, noisy), outs)
        print(f"float +-{k:g} step  agreement {fid.top1_agreement}  divergence {fid.score:.3g}")
    for label, opts in [("8 bits", ConvertOptions(method="pairs", low_bits=8, high_bits=8,
                                                  fidelity_samples=0)),
                        ("--target-bits 6", ConvertOptions(target_bits=6, input_shapes={name: shape})),
                        ("--target-bits 5", ConvertOptions(target_bits=5, input_shapes={name: shape}))]:
        q, _ = convert(model, opts)
        fid = compare(ref, runs(q, x), outs)
        print(f"{label}  agreement {fid.top1_agreement}  divergence {fid.score:.3g}")


if __name__ == "__main__":
    main()
