"""The command line: convert / inspect / validate, and clean failures on bad input."""

import json
import os

import onnx
import pytest
from click.testing import CliRunner
from tinymodels import conv_net

from dfmpc_onnx.cli import main


@pytest.fixture
def model_path(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(conv_net(bn=True), p)
    return p


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_convert_validate_inspect(model_path, tmp_path):
    out = tmp_path / "m.q.onnx"
    before = model_path.read_bytes()
    r = invoke("convert", model_path, "-o", out, "-q", "--method", "pairs", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "conv1" in r.output and "average weight bits" in r.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert model_path.read_bytes() == before
    assert json.loads((tmp_path / "r.json").read_text())["pairs"] == [["conv1", "conv2"]]
    r = invoke("validate", model_path, out, "--json", "--repeats", "2")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["outputs"][0]["cosine"] > 0.5
    r = invoke("inspect", model_path, "--json", "-q", "--method", "pairs")
    assert r.exit_code == 0 and json.loads(r.output)["pairs"] == [["conv1", "conv2"]]


@pytest.mark.parametrize("content,code", [(None, 3), (b"", 3), (b"\x00garbage\xff" * 50, 3)])
def test_bad_input_files(tmp_path, content, code):
    p = tmp_path / "bad.onnx"
    if content is not None:
        p.write_bytes(content)
    out = tmp_path / "out.onnx"
    r = invoke("convert", p, "-o", out)
    assert r.exit_code == code, r.output
    assert r.output.startswith("error:") and "Traceback" not in r.output
    assert not out.exists()


def test_output_equal_to_input_and_unwritable(model_path, tmp_path):
    r = invoke("convert", model_path, "-o", model_path)
    assert r.exit_code == 5 and "input" in r.output
    r = invoke("convert", model_path, "-o", tmp_path / "missing_dir" / "x.onnx")
    assert r.exit_code == 5 and "does not exist" in r.output


@pytest.mark.parametrize("bits", ["0", "1", "9", "32"])
def test_nonsense_bits(model_path, tmp_path, bits):
    r = invoke("convert", model_path, "-o", tmp_path / "x.onnx", "--low-bits", bits)
    assert r.exit_code == 2
    assert not (tmp_path / "x.onnx").exists()


def test_plan_file_errors(model_path, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    r = invoke("convert", model_path, "-o", tmp_path / "x.onnx", "--plan", plan)
    assert r.exit_code == 2 and "not valid JSON" in r.output
    plan.write_text('{"conv7": 4}')
    r = invoke("convert", model_path, "-o", tmp_path / "x.onnx", "--plan", plan)
    assert r.exit_code == 2 and "conv7" in r.output
    r = invoke("convert", model_path, "-o", tmp_path / "x.onnx", "--plan", tmp_path / "nope")
    assert r.exit_code == 2 and "cannot read" in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_no_stray_temporary_files(model_path, tmp_path):
    out = tmp_path / "q.onnx"
    assert invoke("convert", model_path, "-o", out, "-q").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "q.onnx"]
