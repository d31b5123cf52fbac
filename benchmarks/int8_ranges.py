"""Why a grid loses (issue 23): each activation grid of ours against ONNX Runtime's
``quantize_static`` calibrated on noise, both measured against the real span of the tensor on
rendered inputs (``benchmarks/int8_data.py``). Run ``python -m benchmarks.int8_check MODEL
--tag TAG`` first (it writes both models), then:

    python -m benchmarks.int8_ranges captcha TAG

Prints, over the tensors both quantize: the median and 10th/90th percentiles of our scale over
ORT's, of each grid's span over the real span (above 1: steps wasted; below 1: the real values
saturate), and the tensors whose grid clips the real span.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper

from benchmarks.int8_data import OUT, SUITES
from dfmpc_onnx.measure.calibrate import ActivationSamples


def scales(model: onnx.ModelProto, ours: bool) -> dict[str, float]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1
            and (not ours or n.name.endswith("_act_QuantizeLinear"))}


def main() -> None:
    key, tag = sys.argv[1], sys.argv[2]
    theirs = scales(onnx.load(str(OUT / key / "ort_random.onnx")), ours=False)
    mine = scales(onnx.load(str(OUT / key / f"{tag}.onnx")), ours=True)
    common = [t for t in mine if t in theirs]
    s = SUITES[key](n=32)
    real = ActivationSamples(onnx.load(str(s.model)), common, {s.input: s.x})
    rows = []
    for t in common:
        span = max(real.samples[t].hi - min(real.samples[t].lo, 0.0), 1e-9)
        rows.append((t, mine[t] / theirs[t], 255 * mine[t] / span, 255 * theirs[t] / span))
    a = np.array([r[1:] for r in rows])
    pct = (50, 10, 90)
    print(f"{len(common)} tensors both quantize")
    for label, col in (("ours/ORT scale", 0), ("ours grid / real span", 1), ("ORT grid / real span", 2)):
        m, lo, hi = np.percentile(a[:, col], pct)
        print(f"{label:24s} median {m:.2f} p10 {lo:.2f} p90 {hi:.2f}")
    print("grids below 0.9x the real span: ours", [r[0] for r in rows if r[2] < 0.9],
          "ORT", len([r for r in rows if r[3] < 0.9]))


if __name__ == "__main__":
    main()
