"""Conversion is deterministic: the same input and options give a byte-identical output, in this
process, in another process with another hash seed (set and dict order), and with external data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from awkward_models import AWKWARD
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions
from dfmpc_onnx.api import convert_file

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = {"conv_net_bn": lambda: conv_net(seed=1, bn=True), "if_node": AWKWARD["if_node"],
          "grouped_depthwise": AWKWARD["grouped_depthwise"], "float16": AWKWARD["float16"],
          "split_activations": AWKWARD["split_activations"],
          "light_squeezenet": lambda: onnx.load(str(LIGHT_DIR / "light_squeezenet.onnx"))}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("options", [ConvertOptions(), ConvertOptions(low_bits=4, correction="energy",
                                                                      granularity="tensor")],
                         ids=["default", "diag-tensor-4bit"])
def test_same_bytes_twice(name: str, options: ConvertOptions, tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(MODELS[name](), src)
    convert_file(src, tmp_path / "a.onnx", options)
    convert_file(src, tmp_path / "b.onnx", options)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_same_bytes_in_another_process(tmp_path: Path) -> None:
    """A fresh interpreter with a different PYTHONHASHSEED, external data included."""
    src = tmp_path / "m.onnx"
    onnx.save(conv_net(seed=2, c=32, bn=True), src, save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    convert_file(src, tmp_path / "a" / "q.onnx")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "dfmpc_onnx.cli", "convert", str(src), "-o",
                    str(tmp_path / "b" / "q.onnx"), "-q"], check=True, env=env, capture_output=True)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["q.onnx", "q.onnx.data"] == sorted(p.name for p in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
