"""Keras models exported with tf2onnx (NHWC inputs, transposes as tf2onnx writes them) through the
converter: issue 10 section 2's "one NHWC model". ``zoo.py --table`` adds these rows to ZOO.md.

    python -m venv /work/venv-tf && /work/venv-tf/bin/pip install tensorflow tf2onnx \\
        onnx==1.23.2 onnxruntime==1.32.0
    /work/venv-tf/bin/python benchmarks/zoo_tf.py --export DIR   # Keras -> ONNX (tensorflow)
    python -m benchmarks.zoo_tf DIR                               # convert, compare, write JSON

The export step needs TensorFlow and tf2onnx (never imported by the converter or the tests); the
second step runs with the project's own environment. Weights are Keras' seeded random
initialisation (``weights=None``) and the classifier gives logits (``classifier_activation=None``):
a softmax over random logits saturates and then does not vary with the input at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "zoo_tf_results.json"
MODELS = {"keras_mobilenet_v2": (96, 96, 3), "keras_resnet50": (64, 64, 3)}
OPSET = 17


def export(folder: Path) -> None:
    """Build each Keras application and write ``<name>.onnx`` with tf2onnx (NHWC input)."""
    import tensorflow as tf
    import tf2onnx

    folder.mkdir(parents=True, exist_ok=True)
    builders = {"keras_mobilenet_v2": tf.keras.applications.MobileNetV2,
                "keras_resnet50": tf.keras.applications.ResNet50}
    for name, shape in MODELS.items():
        tf.keras.utils.set_random_seed(0)
        model = builders[name](weights=None, input_shape=shape, classes=10,
                               classifier_activation=None)
        spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET,
                                   output_path=str(folder / f"{name}.onnx"))
        print(f"{name}: tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}", flush=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def evaluate(folder: Path) -> list[dict]:
    """Convert every export at default options and at 8/8; pairs, transposes, output cosines."""
    import onnx
    import onnxruntime as ort

    rows = []
    for name, shape in MODELS.items():
        src = folder / f"{name}.onnx"
        model = onnx.load(str(src))
        x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
        ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        row = {"arch": name, "input": "x".join(map(str, (1, *shape))), "opset": OPSET,
               "transposes": sum(n.op_type == "Transpose" for n in model.graph.node),
               "layers": sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in model.graph.node)}
        for tag, options in (("default", []), ("8/8", ["--low-bits", "8", "--high-bits", "8"])):
            out = folder / f"{name}.{tag.replace('/', '')}.q.onnx"
            proc = subprocess.run([sys.executable, "-m", "dfmpc_onnx.cli", "convert", str(src), "-o",
                                   str(out), "-q", "--json", *options], capture_output=True, text=True)
            row[f"exit {tag}"] = proc.returncode
            if proc.returncode:
                row[f"error {tag}"] = proc.stderr.strip().splitlines()[-1][:300]
                continue
            report = json.loads(proc.stdout)
            y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            row[f"cos {tag}"] = round(_cosine(ref, y), 6)
            row[f"pairs {tag}"] = len(report.get("pairs", []))
            row[f"bits {tag}"] = round(report["stored_bits"], 2)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--export":
        export(Path(sys.argv[2]))
        return
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    RESULTS.write_text(json.dumps(evaluate(Path(sys.argv[1])), indent=1) + "\n")


if __name__ == "__main__":
    main()
