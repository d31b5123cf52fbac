"""Several models at once: every model converted or reported, one failure stopping nothing."""

import json

import onnx
from click.testing import CliRunner
from tinymodels import conv_net

from dfmpc_onnx.cli import main


def test_a_folder_converts_in_parallel_with_one_bad_model(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for seed in (0, 1):
        onnx.save(conv_net(seed=seed), src / f"m{seed}.onnx")
    (src / "broken.onnx").write_bytes(b"not a model")
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "--jobs", "2", "-q",
                                  "--fidelity-samples", "4"])
    assert r.exit_code == 3, r.output  # the broken model's own exit code
    summary = {e["model"].split("/")[-1]: e for e in json.loads((out / "summary.json").read_text())}
    assert summary["broken.onnx"]["ok"] is False and "not an ONNX model" in summary["broken.onnx"]["error"]
    for name in ("m0.onnx", "m1.onnx"):
        assert summary[name]["ok"] and summary[name]["top1_agreement"] is not None
        onnx.checker.check_model(onnx.load(out / name.replace(".onnx", ".q.onnx")), full_check=True)
    assert "2 of 3 converted" in r.output
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched


def test_several_files_into_a_file_is_refused(tmp_path):
    for seed in (0, 1):
        onnx.save(conv_net(seed=seed), tmp_path / f"m{seed}.onnx")
    (tmp_path / "f").write_text("x")
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "m0.onnx"), str(tmp_path / "m1.onnx"),
                                  "-o", str(tmp_path / "f")])
    assert r.exit_code == 2 and "into a folder" in r.output
    r = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and not (tmp_path / "x.onnx").exists()
