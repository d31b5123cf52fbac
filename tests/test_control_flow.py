"""A model whose layers all sit inside If bodies: the default keeps it float and says so; an
explicit --target-bits or --activations int8 is refused (exit 2), never written float with exit 0
(issue 19 s2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from awkward_models import all_inside_if
from click.testing import CliRunner

from dfmpc_onnx.api import convert
from dfmpc_onnx.cli import main
from dfmpc_onnx.options import ConvertOptions


def test_default_keeps_float_and_says_why() -> None:
    model, report = convert(all_inside_if(), ConvertOptions())
    assert any("nothing quantized" in n and "If/Loop" in n for n in report.notes)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((1, 3, 8, 8), np.float32)
    assert sess.run(None, {"input": x, "flag": np.array(True)})[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("args", [["--target-bits", "5"], ["--activations", "int8"]])
def test_explicit_request_is_refused(args: list[str], tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(all_inside_if(), src)
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert "inside If/Loop/Scan bodies" in result.output and "if0/" in result.output
    assert not out.exists()


def test_stray_shape_value_is_named(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(all_inside_if(), src)
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "q.onnx"),
                                       "--input-shape", "input=1,3,8,8", "flag=1"])
    assert result.exit_code == 2, result.output
    assert "'flag=1': no such model file" in result.output
