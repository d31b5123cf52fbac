"""CI-size subset of benchmarks/pretrained.py: PaddleOCR's text-direction classifier (0.6 MB, from
the rapidocr-onnxruntime wheel) scored by the harness, float and after one fast CLI conversion.

The wheel comes from the shared cache, ``out/``, or pip with a short timeout; without any of them
(no network in CI) the test is skipped with the reason. Needs Pillow and the DejaVu fonts for the
rendered text lines, skipped likewise."""

from __future__ import annotations

import glob
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow renders the text lines (pip install '.[ref]')")
if not glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"):
    pytest.skip("needs the DejaVu fonts (apt-get install fonts-dejavu-core)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not installed
from benchmarks import pretrained, pretrained_data  # noqa: E402  (after the skips)

SPEC = pretrained.BY_NAME["ppocr_cls"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    try:
        wheel = pretrained.wheel_file(SPEC.wheel, pip_timeout=20)
    except Exception as exc:  # noqa: BLE001 - no cache and no registry: nothing to test on
        pytest.skip(f"wheel {SPEC.wheel} not cached and pip could not fetch it: {exc}")
    dest = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel) as z:
        z.extract(SPEC.member, dest)
    return dest / SPEC.member


def test_float_metric_and_one_conversion(model: Path, tmp_path: Path) -> None:
    samples = SPEC.make(40, 0)
    outs = pretrained_data.outputs(pretrained.session(model), samples)
    acc = pretrained_data.accuracy(outs, samples, outs)
    assert acc >= 0.8, acc  # the float model reads rendered lines' direction (93% on 400)
    flipped = pretrained_data.Samples(samples.feeds, [1 - y for y in samples.labels])
    assert pretrained_data.accuracy(outs, flipped, outs) <= 0.2  # the metric can fail

    cat = pretrained.catalogue(model)
    assert cat["opset"] == 11 and cat["bn"] > 0 and cat["params"] > 100_000
    assert "?" in cat["inputs"]["x"]  # symbolic height and width, as the wheel ships it

    row = pretrained.convert(model, tmp_path / "q.onnx",
                             ["--fidelity-samples", "0", "--low-bits", "8", "--high-bits", "8"]
                             + pretrained.shape_args(samples), timeout=120)
    assert row["rc"] == 0, row
    assert pretrained.outcome(row, None) == "ok"
    assert 8 <= row["stored_bits"] < 10 and row["quantized_layers"] > 40
    q = pretrained_data.outputs(pretrained.session(tmp_path / "q.onnx"), samples)
    assert abs(pretrained_data.accuracy(q, samples, outs) - acc) <= 0.05


def test_table_and_spearman_from_rows() -> None:
    assert pretrained.spearman([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert pretrained.spearman([0.4, 0.3, 0.2, 0.1], [1, 2, 3, 4]) == pytest.approx(-1.0)
    assert pretrained.spearman([0.1, 0.1], [1, 2]) is None
    results = {"ppocr_cls": {"catalogue": {"opset": 11, "inputs": {"x": "-1x3x?x?"}},
                             "rows": {"float": {"metric": 0.9, "n": 4},
                                      "tb4": {"metric": 0.5, "rc": 2, "outcome": "exit 2",
                                              "seconds": 1, "stderr": "error: shape"},
                                      "default": {"metric": 0.8, "outcome": "ok", "seconds": 3,
                                                  "stored_bits": 4.5,
                                                  "fidelity": {"top1_agreement": 0.9}}}}}
    text = pretrained.table(results)
    assert "| ppocr_cls | 4 | 90.0 |" in text and "exit 2" in text and "4.50 b" in text
    assert "ppocr_cls/ort_dyn" in text  # the rows not run are named
    assert np.isnan(pretrained.spearman_rows(results)["ppocr_cls"][0] or np.nan)  # one pair only
