"""Bad input through the command line: each case gets one clear line on stderr naming the problem,
its documented exit code, no traceback, the input byte for byte unchanged and nothing written
(no output file, no temporary files left beside it)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from tinymodels import conv_net

from dfmpc_onnx.cli import main
from dfmpc_onnx.errors import EXIT_CODES, DfmpcError
from dfmpc_onnx.model import modelio

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path -> sha256: inputs must not change at all."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def save(model: onnx.ModelProto, path: Path, **kwargs) -> Path:
    onnx.save(model, str(path), **kwargs)
    return path


def mutated(change: Callable[[onnx.ModelProto], None]) -> onnx.ModelProto:
    model = conv_net(bn=True)
    change(model)
    return model


def _undefined_input(m: onnx.ModelProto) -> None:
    m.graph.node[1].input[0] = "nowhere"


def _opset(m: onnx.ModelProto) -> None:
    m.opset_import[0].version = 99


def _undeclared_domain(m: onnx.ModelProto) -> None:
    m.graph.node[2].domain = "com.undeclared"


def _unknown_op(m: onnx.ModelProto) -> None:
    m.graph.node[2].op_type = "Reluu"


def _external(src: Path, *, cut: bool) -> Path:
    """A model with external data whose data file is cut in half (cut) or missing."""
    path = save(conv_net(c=16), src / "ext.onnx", save_as_external_data=True,
                all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    data = src / "ext.data"
    if cut:
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        data.unlink()
    return path


def _good(src: Path) -> Path:
    return save(conv_net(bn=True), src / "m.onnx")


def _plan(src: Path, content: bytes | str) -> tuple[Path, Path]:
    plan = src / "plan.json"
    plan.write_bytes(content if isinstance(content, bytes) else content.encode())
    return _good(src), plan


# case id -> (build(src dir, out dir) -> argv after "convert", exit code, words the message must hold)
CASES: dict[str, tuple[Callable[[Path, Path], list], int, list[str]]] = {
    "missing path": (lambda s, o: [s / "nope.onnx", "-o", o / "q.onnx"], 3, ["no such file"]),
    # A folder converts every model in it into the folder -o names: a model file name is refused.
    "directory": (lambda s, o: [s, "-o", o / "q.onnx"], 2, ["convert into a folder"]),
    "empty file": (lambda s, o: [s / "e.onnx", "-o", o / "q.onnx"], 3, ["empty"]),
    "truncated file": (lambda s, o: [s / "t.onnx", "-o", o / "q.onnx"], 3, ["truncated"]),
    "random bytes": (lambda s, o: [s / "r.onnx", "-o", o / "q.onnx"], 3, ["not an ONNX model"]),
    "tensor protobuf": (lambda s, o: [s / "tensor.pb", "-o", o / "q.onnx"], 3, ["no ONNX graph"]),
    "graph protobuf": (lambda s, o: [s / "graph.pb", "-o", o / "q.onnx"], 3, ["no ONNX graph"]),
    "fails checker": (lambda s, o: [save(mutated(_undefined_input), s / "c.onnx"), "-o", o / "q.onnx"],
                      3, ["onnx.checker", "nowhere"]),
    "unknown opset": (lambda s, o: [save(mutated(_opset), s / "c.onnx"), "-o", o / "q.onnx"],
                      4, ["opset 99"]),
    "undeclared domain": (lambda s, o: [save(mutated(_undeclared_domain), s / "c.onnx"), "-o",
                                        o / "q.onnx"], 3, ["com.undeclared"]),
    "unknown operator": (lambda s, o: [save(mutated(_unknown_op), s / "c.onnx"), "-o", o / "q.onnx"],
                         3, ["Reluu"]),
    "external data cut": (lambda s, o: [_external(s, cut=True), "-o", o / "q.onnx"], 3,
                          ["external data"]),
    "external data missing": (lambda s, o: [_external(s, cut=False), "-o", o / "q.onnx"], 3,
                              ["external data"]),
    "output dir missing": (lambda s, o: [_good(s), "-o", o / "no" / "q.onnx"], 5, ["does not exist"]),
    "output parent is a file": (lambda s, o: [_good(s), "-o", _good(s) / "q.onnx"], 5,
                                ["not a directory"]),
    "output is a directory": (lambda s, o: [_good(s), "-o", o], 5, ["is a directory"]),
    "output in unwritable place": (lambda s, o: [_good(s), "-o", "/proc/q.onnx"], 5, ["cannot write"]),
    "output equals input": (lambda s, o: [_good(s), "-o", s / "m.onnx"], 5, ["input path"]),
    "output equals input, respelled": (lambda s, o: [_good(s), "-o", s / "." / ".." / s.name / "m.onnx"],
                                       5, ["input path"]),
    "plan file missing": (lambda s, o: [_good(s), "-o", o / "q.onnx", "--plan", s / "no.json"], 2,
                          ["plan file", "cannot read"]),
    "plan file is a directory": (lambda s, o: [_good(s), "-o", o / "q.onnx", "--plan", o], 2,
                                 ["--plan", "directory"]),
    "plan file not UTF-8": (lambda s, o: [*_plan(s, b"\xff\xfe{}")[:1], "-o", o / "q.onnx", "--plan",
                                          s / "plan.json"], 2, ["plan file", "UTF-8"]),
    "plan file not JSON": (lambda s, o: [*_plan(s, "{conv1: 4")[:1], "-o", o / "q.onnx", "--plan",
                                         s / "plan.json"], 2, ["plan file", "JSON"]),
    "plan file not an object": (lambda s, o: [*_plan(s, "[4]")[:1], "-o", o / "q.onnx", "--plan",
                                              s / "plan.json"], 2, ["plan file", "object"]),
    "plan names unknown layers": (lambda s, o: [*_plan(s, '{"conv7": 4}')[:1], "-o", o / "q.onnx",
                                                "--plan", s / "plan.json"], 2, ["conv7", "not in the model"]),
    "plan bits as text": (lambda s, o: [*_plan(s, '{"conv1": "4"}')[:1], "-o", o / "q.onnx", "--plan",
                                        s / "plan.json"], 2, ["conv1", "'4'"]),
}
for _bits in (0, 1, 9, 32):
    for _flag in ("--low-bits", "--high-bits"):
        CASES[f"{_flag} {_bits}"] = (
            lambda s, o, f=_flag, b=_bits: [_good(s), "-o", o / "q.onnx", f, b], 2, [_flag, str(_bits)])
    CASES[f"plan bits {_bits}"] = (
        lambda s, o, b=_bits: [*_plan(s, json.dumps({"conv1": b}))[:1], "-o", o / "q.onnx", "--plan",
                               s / "plan.json"], 2, ["conv1", f"{_bits} bits"])


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An input folder with the raw bad files, and an empty output folder."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    good = conv_net(bn=True).SerializeToString()
    (src / "e.onnx").write_bytes(b"")
    (src / "t.onnx").write_bytes(good[: len(good) // 2])
    (src / "r.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (src / "tensor.pb").write_bytes(onnx.numpy_helper.from_array(np.ones(3, np.float32)).SerializeToString())
    (src / "graph.pb").write_bytes(conv_net().graph.SerializeToString())
    return src, out


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, dirs: tuple[Path, Path]) -> None:
    src, out = dirs
    build, code, words = CASES[case]
    argv = build(src, out)
    before_in, before_out = digest(src), sorted(os.listdir(out))
    r = invoke("convert", *argv)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert code in EXIT_CODES
    *progress, line = r.stderr.splitlines()
    assert line.startswith("error: ") and all(p.startswith("[") for p in progress), r.stderr
    assert "Traceback" not in r.output and "internal error" not in r.stderr
    for word in words:
        assert word in line, (word, line)
    assert r.stdout == ""
    assert digest(src) == before_in  # the input, byte for byte (and nothing added beside it)
    assert sorted(os.listdir(out)) == before_out  # no output, no temporary files


def test_failed_check_writes_nothing_and_keeps_old_output(dirs, monkeypatch) -> None:
    """If the written model fails its check, nothing appears and an older output stays as it was."""
    src, out = dirs
    model = _good(src)
    old = out / "q.onnx"
    old.write_bytes(b"previous result")
    monkeypatch.setattr(modelio, "runtime_load_error",
                        lambda m: "simulated failure" if str(m).endswith("q.onnx") else None)
    r = invoke("convert", model, "-o", old, "-q")
    assert r.exit_code == 6 and "simulated failure" in r.stderr
    assert old.read_bytes() == b"previous result" and os.listdir(out) == ["q.onnx"]


def test_input_that_runtime_refuses_is_blamed_on_the_input(dirs, monkeypatch) -> None:
    src, out = dirs
    model = _good(src)
    monkeypatch.setattr(modelio, "runtime_load_error", lambda m: "no kernel for op")
    r = invoke("convert", model, "-o", out / "q.onnx", "-q")
    assert r.exit_code == 4 and "input model itself does not load" in r.stderr
    assert os.listdir(out) == []


def test_debug_shows_the_exception(dirs) -> None:
    src, out = dirs
    r = CliRunner().invoke(main, ["--debug", "convert", str(src / "r.onnx"), "-o", str(out / "q")])
    assert isinstance(r.exception, DfmpcError) and r.exception.exit_code == 3


def test_inspect_and_validate_share_the_messages(dirs) -> None:
    src, out = dirs
    r = invoke("inspect", src / "r.onnx")
    assert r.exit_code == 3 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
    r = invoke("inspect", _good(src), "--low-bits", "1")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args,code", [
    (["convert", "{src}/r.onnx", "-o", "{out}/q.onnx"], 3),
    (["convert", "{model}", "-o", "{out}/q.onnx", "--low-bits", "9"], 2),
    (["convert", "{model}", "-o", "{model}"], 5),
])
def test_real_process(args: list[str], code: int, dirs: tuple[Path, Path]) -> None:
    """The installed command, in its own process: exit code, one line, no traceback."""
    src, out = dirs
    model = _good(src)
    before = digest(src)
    argv = [a.format(src=src, out=out, model=model) for a in args]
    p = subprocess.run([sys.executable, "-m", "dfmpc_onnx.cli", *argv], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == code, p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("error: ")
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert digest(src) == before and os.listdir(out) == []


def test_exit_codes_are_documented() -> None:
    """Every exit code the CLI can return is in --help and in the README's section."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes and guarantees", 1)[1].split("\n## ", 1)[0]
    for code in EXIT_CODES:
        assert f"| {code} |" in section, code
    assert "Exit codes:" in invoke("convert", "--help").output


@pytest.mark.parametrize("args", [[], ["--target-bits", "4"], ["--activations", "int8"]])
def test_an_already_quantized_model_is_said_so_and_explicit_requests_refused(
        args: list[str], tmp_path: Path) -> None:
    """ORT's dynamic quantizer output (ConvInteger, DynamicQuantizeLinear) has no float layer:
    the default writes it unchanged and says why; an explicit budget or int8 activations, which
    nothing could honour, exits 2 instead of writing it unchanged with exit 0."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = save(conv_net(seed=0, c=8), tmp_path / "f.onnx")
    qsrc = tmp_path / "dyn.onnx"
    quantize_dynamic(str(src), str(qsrc), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["convert", str(qsrc), "-o", str(out), *args])
    if args:
        assert result.exit_code == 2, result.output
        assert "nothing to quantize: the model is already quantized (ConvInteger" in result.output
        assert not out.exists()
    else:
        assert result.exit_code == 0, result.output
        assert "nothing quantized: the model is already quantized" in result.output
