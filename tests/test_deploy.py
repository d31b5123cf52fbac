"""Issue 22: what a deployment engineer hit on a clean machine (signals, leftovers, --debug, ...)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from dfmpc_onnx.cli import main
from dfmpc_onnx.model.modelio import OWNER_FILE, make_work_folder

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "models" / "digits_resnet20_bnkept.onnx"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_work_folders_of_dead_processes_are_swept(tmp_path: Path) -> None:
    out = tmp_path / "m.q.onnx"
    dead = tmp_path / ".m.q.onnx.work.dead"
    live = tmp_path / ".m.q.onnx.work.live"
    for folder, pid in ((dead, _dead_pid()), (live, os.getppid())):
        folder.mkdir()
        (folder / "w.bin").write_bytes(b"x" * 1000)
        (folder / OWNER_FILE).write_text(f"{pid} {os.uname().nodename}\n")
    work = make_work_folder(out)
    try:
        assert not dead.exists(), "a dead process's working folder must be swept"
        assert live.exists(), "a running process's working folder must be left alone"
        assert (work / OWNER_FILE).read_text().split()[0] == str(os.getpid())
    finally:
        import shutil

        shutil.rmtree(work)


def test_sigterm_exits_143_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "d.q.onnx"
    cmd = [sys.executable, "-m", "dfmpc_onnx.cli", "convert", str(DIGITS), "-o", str(out),
           "--fidelity-samples", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".d.q.onnx.work.*")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err
    assert list(tmp_path.iterdir()) == [], "nothing may be left behind"


def test_exit_codes_130_and_143_are_documented() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| 130 |" in text and "| 143 |" in text


def test_debug_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for args in (["convert", str(bad), "-o", str(tmp_path / "q.onnx"), "--debug"],
                 ["inspect", "--debug", str(bad)],
                 ["validate", str(bad), str(bad), "--debug"]):
        r = CliRunner().invoke(main, args)
        assert "No such option" not in r.output, args
        assert r.exception is not None and not isinstance(r.exception, SystemExit), args


def _report(bits: list[int], **fidelity):
    from dfmpc_onnx.report import LayerReport, Report

    rep = Report(layers=[LayerReport(f"l{i}", "Conv", "single", b) for i, b in enumerate(bits)])
    rep.fidelity = {"score": 1e-3, "metric": ["kl"], "samples": 64, "inputs": "smooth",
                    "single_class": False, **fidelity}
    return rep


def test_fidelity_warning_is_earned_and_its_advice_is_new() -> None:
    from dfmpc_onnx.cli import fidelity_warning
    from dfmpc_onnx.options import ConvertOptions

    low = _report([2, 8, 8], top1_agreement=0.9)
    # the default plan was chosen to keep --min-agreement (or the 8-bit plan's figure): no warning
    assert fidelity_warning(low, ConvertOptions()) is None
    # a plan the user chose, below the threshold: warned, with advice they have not followed
    line = fidelity_warning(low, ConvertOptions(target_bits=3))
    assert line and "--target-bits (now 3)" in line and "--method auto" not in line
    line = fidelity_warning(low, ConvertOptions(low_bits=2))
    assert line and "--low-bits/--high-bits (now 2/8)" in line and "below --min-agreement" in line
    # at or above the threshold: nothing
    assert fidelity_warning(_report([2, 8], top1_agreement=0.995), ConvertOptions(low_bits=2)) is None
    # every layer at 8 bits: nothing to trade back, whatever the figure
    eight = _report([8, 8], top1_agreement=1.0, single_class=True, centered_error=0.5)
    assert fidelity_warning(eight, ConvertOptions(low_bits=8)) is None
    assert fidelity_warning(_report([8, 8], top1_agreement=0.5), ConvertOptions(low_bits=8)) is None


def test_readme_quick_start_model_converts_without_a_warning(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["convert", str(DIGITS), "-o", str(tmp_path / "d.q.onnx"), "-q"])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    assert "warns (one line) only when a warning is earned" in (ROOT / "README.md").read_text()


def _symbolic_hw(tmp_path: Path) -> Path:
    import onnx
    from tinymodels import conv_net

    model = conv_net(seed=0, c=8)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("N", None, "H", "W"), strict=True):
        if name:
            d.dim_param = name
    path = tmp_path / "hw.onnx"
    onnx.save(model, path)
    return path


def test_input_shape_forms_are_one_syntax() -> None:
    from dfmpc_onnx.measure.synthetic import parse_input_shapes
    from dfmpc_onnx.validate import parse_shape_option

    for spec in ("x=1,3,8,8", "x=1x3x8x8", "x:[1,3,8,8]", "x=[1,3,8,8]"):
        assert parse_input_shapes([spec]) == {"x": (1, 3, 8, 8)}, spec
        assert parse_shape_option([spec]) == {"x": (1, 3, 8, 8)}, spec
    assert parse_input_shapes(["x=N,3,?,8"]) == {"x": (None, 3, None, 8)}
    assert parse_input_shapes(["in:0:[N,4]", "a=1x2,b=3"]) == {"in:0": (None, 4), "a": (1, 2),
                                                                "b": (3,)}


def test_input_shape_unknown_name_is_exit_2_naming_the_inputs(tmp_path: Path) -> None:
    path = _symbolic_hw(tmp_path)
    for extra in ([], ["--fidelity-samples", "0", "--low-bits", "4"]):
        r = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "q.onnx"), "-q",
                                      "--input-shape", "wrongname=1,3,8,8", *extra])
        assert r.exit_code == 2, r.output
        assert "'wrongname'" in r.stderr and "'input'" in r.stderr
    r = CliRunner().invoke(main, ["inspect", str(path), "-q", "--input-shape", "wrongname=1,3,8,8"])
    assert r.exit_code == 2 and "'input'" in r.stderr


def test_input_shape_n_and_polygraphy_form_in_convert_inspect_and_validate(tmp_path: Path) -> None:
    path = _symbolic_hw(tmp_path)
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "-q",
                                  "--input-shape", "input:[N,3,8,8]"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["inspect", str(path), "-q", "--input-shape", "input=N,3,8,8"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "-q",
                                  "--input-shape", "input=N,3,?,8"])
    assert r.exit_code == 2 and "give it a number" in r.stderr, r.output
    for flag in ("--input-shape", "--shape"):
        r = CliRunner().invoke(main, ["validate", str(path), str(out), "--repeats", "1",
                                      flag, "input=N,3,8,8"])
        assert r.exit_code == 0, r.output
    assert "deprecated" in r.stderr
    help_text = CliRunner().invoke(main, ["validate", "--help"]).output
    assert "--input-shape" in help_text and "--shape " not in help_text


def test_readme_shows_the_input_shape_forms() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`x:[1,3,224,224]`" in text and "`x=N,3,224,224`" in text


def _packed_model(tmp_path: Path) -> Path:
    import onnx
    from tinymodels import conv_net

    path = tmp_path / "m.onnx"
    onnx.save(conv_net(seed=0, c=16, opset=13), path)
    return path


def test_target_opset_picks_containers_and_the_lowest_ir_version(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    src = _packed_model(tmp_path)
    seen = {}
    for cap in (None, 21, 13):
        out = tmp_path / f"q{cap}.onnx"
        args = ["convert", str(src), "-o", str(out), "-q", "--low-bits", "2",
                "--fidelity-samples", "0", "--json"]
        r = CliRunner().invoke(main, args + ([] if cap is None else ["--target-opset", str(cap)]))
        assert r.exit_code == 0, r.output
        m = onnx.load(out)
        opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        types = {t.data_type for t in m.graph.initializer}
        need_ir = helper.find_min_ir_version_for(list(m.opset_import), ignore_unknown=True)
        assert m.ir_version == max(need_ir, onnx.load(src).ir_version), (cap, m.ir_version)
        seen[cap] = (opset, types)
        if cap is not None:
            assert opset <= cap
    assert seen[None][0] == 25 and onnx.TensorProto.INT2 in seen[None][1]
    assert seen[21][0] == 21 and onnx.TensorProto.INT4 in seen[21][1]
    assert onnx.TensorProto.INT2 not in seen[21][1]
    assert seen[13][0] == 13 and onnx.TensorProto.INT4 not in seen[13][1]
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "x.onnx"), "-q",
                                  "--target-opset", "12"])
    assert r.exit_code == 2 and "--target-opset 12" in r.stderr, r.output


def test_inspect_shows_the_opset_convert_writes(tmp_path: Path) -> None:
    import json

    src = _packed_model(tmp_path)
    common = ["-q", "--low-bits", "4", "--fidelity-samples", "0", "--json"]
    ins = json.loads(CliRunner().invoke(main, ["inspect", str(src), *common]).stdout)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "q.onnx"), *common])
    conv = json.loads(r.stdout)
    assert ins["opset_out"] == conv["opset_out"] == 21
    assert any("IR version" in n and "ONNX Runtime 1.18" in n for n in conv["notes"])


def test_readme_names_the_minimum_runtime() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--target-opset" in text and "IR version" in text and "| 21, IR 10 | 1.18 or newer |" in text


def test_output_records_its_provenance(tmp_path: Path) -> None:
    import json

    import onnx

    out = tmp_path / "d.q.onnx"
    r = CliRunner().invoke(main, ["convert", str(DIGITS), "-o", str(out), "-q",
                                  "--low-bits", "4", "--fidelity-samples", "0"])
    assert r.exit_code == 0, r.output
    m = onnx.load(out)
    props = {p.key: p.value for p in m.metadata_props}
    src = onnx.load(DIGITS)
    assert m.producer_name == "dfmpc-onnx" and m.producer_version
    assert props["dfmpc.source_producer"] == f"{src.producer_name} {src.producer_version}"
    assert props["dfmpc.version"] == m.producer_version
    assert json.loads(props["dfmpc.options"])["low_bits"] == 4
    assert "stored bits per weight" in props["dfmpc.plan"] and "4-bit" in props["dfmpc.plan"]
    assert "`dfmpc.source_producer`" in (ROOT / "README.md").read_text()


def test_readme_library_file_to_file_call_runs(tmp_path: Path, monkeypatch) -> None:
    """The README's python block, run with its paths redirected into tmp_path."""
    import re

    import onnx

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "quantize(" in b)
    first = block.split("\n\n")[0]
    src = _packed_model(tmp_path)
    monkeypatch.chdir(tmp_path)
    src.rename(tmp_path / "model.onnx")
    code = first.replace("target_bits=4", "target_bits=4, fidelity_samples=4")
    scope: dict = {}
    exec(compile(code, "README", "exec"), scope)  # noqa: S102 - the README's own example
    report = scope["report"]
    assert (tmp_path / "model.q.onnx").is_file() and report.stored_bits <= 4
    onnx.checker.check_model(str(tmp_path / "model.q.onnx"))
    import pytest

    from dfmpc_onnx import quantize

    with pytest.raises(Exception, match="unknown option"):
        quantize("model.onnx", "x.onnx", target_bitz=4)


def test_convert_verbose_and_log_file(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    r = CliRunner().invoke(main, ["convert", str(DIGITS), "-o", str(tmp_path / "q.onnx"),
                                  "--low-bits", "4", "--fidelity-samples", "0", "--verbose",
                                  "--log-file", str(log)])
    assert r.exit_code == 0, r.output
    assert "pass normalise" in r.stderr or "pass check-opset" in r.stderr, r.stderr
    assert " took " in r.stderr
    text = log.read_text()
    assert " took " in text and "wrote " in text and "predicted fidelity" not in text.split(
        "took")[0]
    bad = CliRunner().invoke(main, ["convert", str(tmp_path / "absent.onnx"), "-o",
                                    str(tmp_path / "x.onnx"), "-q", "--log-file", str(log)])
    assert bad.exit_code == 3 and log.read_text().rstrip().splitlines()[-1].startswith("error: ")


def _fixed_batch_net(tmp_path: Path) -> Path:
    import onnx
    from tinymodels import conv_net

    model = conv_net(seed=0, c=8)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    for vi in model.graph.output:
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "b1.onnx"
    onnx.save(model, path)
    return path


def test_validate_runs_several_batches_on_a_fixed_batch_model_and_gates(tmp_path: Path) -> None:
    import json

    src = _fixed_batch_net(tmp_path)
    out = tmp_path / "b1.q.onnx"
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "-q", "--low-bits", "2",
                                  "--fidelity-samples", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["validate", str(src), str(out), "--repeats", "1",
                                  "--batch", "16", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["samples"] == 16
    assert result["outputs"][0]["centered_cosine"] is not None
    r = CliRunner().invoke(main, ["validate", str(src), str(out), "--repeats", "1",
                                  "--atol", "0", "--rtol", "0"])
    assert r.exit_code == 8, r.output
    assert "FAILED: output" in r.stdout and "outside --atol 0 --rtol 0" in r.stderr
    r = CliRunner().invoke(main, ["validate", str(src), str(src), "--repeats", "1",
                                  "--atol", "0", "--min-cosine", "0.999999"])
    assert r.exit_code == 0, r.output


def test_validate_says_when_the_outputs_hardly_depend_on_the_input(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from dfmpc_onnx.validate import validate

    def gemm(noise: float) -> onnx.ModelProto:
        rng = np.random.default_rng(0)
        w = 1e-3 * rng.standard_normal((16, 10)).astype(np.float32)
        w += noise * np.random.default_rng(1).standard_normal(w.shape).astype(np.float32)
        b = np.linspace(1, 10, 10).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
            [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    onnx.save(gemm(0), tmp_path / "f.onnx")
    onnx.save(gemm(1e-3), tmp_path / "q.onnx")
    result = validate(tmp_path / "f.onnx", tmp_path / "q.onnx", repeats=1, batch=16)
    stats = result.outputs[0]
    assert stats.cosine > 0.9999 and stats.top1_agreement == 1.0
    assert stats.centered_cosine < 0.9 and stats.input_share < 0.01
    assert any("hardly depends on the input" in n for n in result.notes)
    assert any("same class" in n for n in result.notes)


def test_validate_size_line_says_larger() -> None:
    from dfmpc_onnx.validate import format_table
    from dfmpc_onnx.validate.metrics import ValidationResult

    result = ValidationResult([], 1000, 25000, 1.0, 1.0, 1.0, "CPU", 8, "random")
    assert "25.00x larger" in format_table(result) and "smaller" not in format_table(result)


def test_readme_documents_the_validate_gates() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`--min-cosine`" in text and "| 8 |" in text and "`input-dep` line" in text


def test_help_fits_a_screen_in_groups_and_help_all_has_everything() -> None:
    from dataclasses import fields

    from dfmpc_onnx.options import ConvertOptions

    for command in ("convert", "inspect", "validate"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert len(text.splitlines()) <= 60, (command, len(text.splitlines()))
        assert "--help-all" in text and "Logging:" in text
    text = CliRunner().invoke(main, ["convert", "--help"]).output
    for group in ("Input shape and range:", "Plan and budget:", "Output format:"):
        assert group in text
    full = CliRunner().invoke(main, ["convert", "--help-all"]).output
    for f in fields(ConvertOptions):
        flag = {"input_shapes": "--input-shape", "output_kinds": "--output-kind"}.get(
            f.name, "--" + f.name.replace("_", "-"))
        assert flag in full, flag
    assert "Grids and corrections:" in full and "--lambda1" not in text
    top = CliRunner().invoke(main, ["--help"]).output
    assert "By default each layer's bits" in top


def test_readme_first_screen_has_install_convert_validate_runtime_and_session_option() -> None:
    first = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40]
    screen = "\n".join(first)
    for needle in ("pip install", "dfmpc-onnx convert", "dfmpc-onnx validate",
                   "--target-opset 21", "session.disable_quant_qdq=1"):
        assert needle in screen, needle


def test_class_scores_with_trailing_singletons_are_judged_as_flat_ones() -> None:
    import numpy as np

    from dfmpc_onnx.measure.fidelity import compare
    from dfmpc_onnx.validate.metrics import output_stats

    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 10)).astype(np.float32)
    b = a + 0.3 * rng.standard_normal(a.shape).astype(np.float32)
    flat = compare([{"y": a}], [{"y": b}], ["y"])
    four = compare([{"y": a[:, :, None, None]}], [{"y": b[:, :, None, None]}], ["y"])
    assert flat.metric == four.metric == {"y": "kl"}
    assert four.divergence == flat.divergence and four.top1_agreement == flat.top1_agreement
    stats = output_stats("y", a[:, :, None, None], b[:, :, None, None])
    assert stats.top1_agreement == output_stats("y", a, b).top1_agreement is not None


def test_outputs_that_do_not_vary_are_decided_after_the_float_run() -> None:
    import numpy as np
    from onnx import helper, numpy_helper
    from tinymodels import conv_net

    from dfmpc_onnx import convert

    model = conv_net(seed=1, c=16, bn=True)
    model.graph.initializer.append(numpy_helper.from_array(np.array(1e6, np.float32), "big"))
    model.graph.node.append(helper.make_node("Mul", ["logits", "big"], ["scaled"], name="scale"))
    model.graph.node.append(helper.make_node("Softmax", ["scaled"], ["probs"], name="softmax"))
    model.graph.output[0].name = "probs"
    said: list[str] = []
    _, rep = convert(model, progress=said.append)
    assert all(e.bits == 8 for e in rep.layers if e.bits)
    assert not any(m.startswith("measuring [") or "plan(s)" in m for m in said), said
    assert any("decided after the float run" in n for n in rep.notes)
    assert not any("Give the input shape" in n for n in rep.notes)
