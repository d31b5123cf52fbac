"""The zoo's CI subset: tiny torch.onnx exports of the zoo's awkward shapes, converted without torch.

``tests/data/zoo`` holds reduced-width blocks (DenseNet pre-activation on a growing Concat,
Inception branches into a Concat, MobileNetV3 HardSwish + squeeze-excitation, a ViT encoder with
MatMul/Softmax attention and a GELU MLP, a U-Net level with ConvTranspose and a skip Concat) as the
TorchScript and dynamo exporters write them; ``python -m benchmarks.zoo --fixtures tests/data/zoo``
regenerates them (needs torch). The full zoo and its table are ``benchmarks/zoo.py`` and ZOO.md.

Each must convert at default options and at 8/8, pass the full checker and load in ONNX Runtime,
account for every layer it leaves in float, and at 8/8 agree with the float model (cosine >= 0.999
on seeded inputs, computed here directly from ONNX Runtime's outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dfmpc_onnx import ConvertOptions
from dfmpc_onnx.api import convert_file

ZOO_DIR = Path(__file__).parent / "data" / "zoo"
FIXTURES = sorted(p.name for p in ZOO_DIR.glob("*.onnx"))


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def seeded_input(path: Path) -> np.ndarray:
    """Batch 2 (the batch axis is dynamic in every fixture), the other dims as exported."""
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param, "the fixture's batch axis must be dynamic"
    shape = [2] + [d.dim_value for d in dims[1:]]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_fixtures_present_and_small() -> None:
    assert len(FIXTURES) >= 5, FIXTURES
    exporters = {re.match(r"[a-z]+", name.split(".")[1]).group() for name in FIXTURES}  # type: ignore[union-attr]
    assert exporters == {"ts", "dynamo"}
    for name in FIXTURES:
        assert (ZOO_DIR / name).stat().st_size < 300_000, name


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("bits", [None, 8], ids=["default", "8-8"])
def test_zoo_fixture_converts(name: str, bits: int | None, tmp_path: Path) -> None:
    src, out = ZOO_DIR / name, tmp_path / "q.onnx"
    options = ConvertOptions() if bits is None else ConvertOptions(low_bits=bits, high_bits=bits)
    report = convert_file(src, out, options)

    onnx.checker.check_model(str(out), full_check=True)
    linear = sum(n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
                 for n in onnx.load(str(src)).graph.node)
    assert len(report.layers) == linear
    for e in report.layers:
        assert e.role != "float" or e.reason, f"{e.name} left in float without a reason"
    assert any(e.role != "float" for e in report.layers), "nothing was quantized"

    x = seeded_input(src)
    want, got = run(src, x), run(out, x)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and np.isfinite(g).all()
        if bits == 8:
            assert cosine(w, g) >= 0.999
