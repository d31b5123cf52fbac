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


def _zoo_row(**kw: str) -> dict[str, str]:
    from benchmarks import zoo

    row = {k: "" for k in zoo.COLUMNS}
    row.update(source="torchvision", input="1x3x64x64", params_m="1", export_ok="ok",
               convert_exit="0", exit_88="0", conv="2", gemm="1", matmul="0", layers="3",
               layers_float="0", convert_s="1", pairs="1", pct_in_pairs="50", params_linear="1000",
               cos_default="0.99", sqnr_88="20", cos_ref88="nan")
    row.update(kw)
    return row


def test_zoo_table_status_and_pair_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZOO.md's two former "(cos!)" rows were measurement artefacts: vgg16_bn ts20-kept had no
    torch reference (it was computed for phase-1 rows only, and vgg16_bn had none), coatnet_0
    dynamo18-folded had no cosine at all (the float export fails in ONNX Runtime at batch 2)."""
    import csv

    from benchmarks import zoo

    rows = [
        _zoo_row(arch="vgg", export="ts20-kept", cos_88="0.986665", cos_ref88="0.986683",
                 pairs_one="5", pct_one="93.2", pairs_through="5", pct_through="93.2", pairs="5"),
        _zoo_row(arch="coat", export="ts17-folded", cos_88="0.99943", cos_ref88="0.999431"),
        _zoo_row(arch="coat", export="dynamo18-folded", cos_88="nan",
                 error_88="cosine: Fail: [ONNXRuntimeError] Add node broadcast 16 by 32"),
        _zoo_row(arch="sq", export="ts17-folded", cos_88="0.99995", pairs="16", pairs_one="0",
                 pct_one="0.0", pairs_through="16", pct_through="58.3"),
    ]
    results, table = tmp_path / "zoo_results.csv", tmp_path / "ZOO.md"
    with results.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, zoo.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setattr(zoo, "RESULTS", results)
    monkeypatch.setattr(zoo, "TABLE", table)
    zoo.write_table("cmd")
    text = table.read_text()
    assert "| vgg |" in text and "5 / 93% -> 5 / 93% (ref)" in text
    assert not [ln for ln in text.splitlines() if ln.startswith(("| vgg |", "| coat |")) and "(cos!)" in ln]
    assert "| coat | dynamo18-folded | 8/8 cosine not measured | cosine: Fail" in text
    assert "0 / 0% -> 16 / 58%" in text
    assert "| vgg | ts20-kept |" not in text  # as close as torch rounding: not a failure


def test_zoo_unpaired_reasons_come_from_find_pairs() -> None:
    """The zoo's unpaired reasons are find-pairs' own, every one non-empty (ZOO.md's resnet18
    ts17-folded row read '16x no reason given': it counted the measured plan's report)."""
    from benchmarks import zoo

    row: dict[str, str] = {}
    zoo.fill_coverage(row, ZOO_DIR / "mbv3_block.ts17-folded.onnx")
    assert int(row["pairs_through"]) >= int(row["pairs_one"]) >= 1
    assert "no reason given" not in row["unpaired_reasons"]
    assert "first/last layer" in row["unpaired_reasons"]
