"""The command line: convert / inspect / validate, and clean failures on bad input."""

import json
import os
import time

import onnx
import pytest
from click.testing import CliRunner
from tinymodels import conv_net

from dfmpc_onnx.cli import Progress, main


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_prints_a_line_when_something_changes(capsys):
    """Non-TTY: nothing in the first FIRST_LINE_S; then a line when the step changes (at most one
    per EVERY_S), an unchanged step again only every STILL_S, marked "still" (issue 22: the same
    line every 4 s, five times, told nothing)."""
    clock = FakeClock()
    progress = Progress(False, clock=clock, tty=False, heartbeat=False)
    first, every, still = Progress.FIRST_LINE_S, Progress.EVERY_S, Progress.STILL_S
    assert 1.0 <= first <= 3.0 and 3.0 <= every <= 5.0 and still >= 30
    progress("pass a")
    clock.now += first / 2
    progress("pass b")
    progress.tick()
    assert capsys.readouterr().err == ""  # a short run prints nothing
    clock.now += first / 2
    progress.tick()
    assert capsys.readouterr().err == f"[{first:6.1f}s] pass b\n"
    clock.now += every / 2
    progress("pass c")  # a step starting early waits for its line
    assert capsys.readouterr().err == ""
    lines = []
    for _ in range(int(2 * still / every) + 2):  # one long silent step: no repeats but "still"
        clock.now += every / 2
        progress.tick()
        lines += capsys.readouterr().err.splitlines()
    assert lines[0] == f"[{first + every:6.1f}s] pass c"
    assert len(lines) == 2 and "pass c (still," in lines[1], lines
    progress.done()
    clock.now += still
    progress.tick()
    assert capsys.readouterr().err == ""


def test_progress_verbose_and_log_file_time_each_pass(tmp_path, capsys):
    clock = FakeClock()
    with open(tmp_path / "log.txt", "w") as log:
        progress = Progress(False, verbose=True, log=log, clock=clock, tty=True, heartbeat=False)
        progress("pass a")
        clock.now += 1.5
        progress("measuring [1/2] x")
        progress("pass b")
        clock.now += 0.25
        progress.done()
    err = capsys.readouterr().err.splitlines()
    assert err == ["[   0.0s] pass a", "[   1.5s] measuring [1/2] x", "[   1.5s] pass a took 1.50s",
                   "[   1.5s] pass b", "[   1.8s] pass b took 0.25s"]
    assert (tmp_path / "log.txt").read_text().splitlines() == err


def test_progress_heartbeat_thread(monkeypatch, capsys):
    """The real thread prints on time during a silent pass and stops at done()."""
    monkeypatch.setattr(Progress, "FIRST_LINE_S", 0.1)
    monkeypatch.setattr(Progress, "EVERY_S", 0.05)
    monkeypatch.setattr(Progress, "STILL_S", 0.2)
    monkeypatch.setattr(Progress, "POLL_S", 0.01)
    progress = Progress(False, tty=False)
    progress("pass slow")
    time.sleep(0.7)
    progress.done()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("] pass slow") and 2 <= len(lines) <= 4, lines
    assert all("] pass slow (still, " in line for line in lines[1:]), lines
    assert progress._thread is not None and not progress._thread.is_alive()
    time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_no_progress_before_an_early_error(model_path, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"conv7": 4}')
    r = invoke("convert", model_path, "-o", tmp_path / "x.onnx", "--plan", plan)
    assert r.exit_code == 2 and r.stderr.splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: ")
