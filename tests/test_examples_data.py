"""Every held-out file in examples/data is in the form ``dfmpc-onnx validate --inputs`` reads, for
every example model of its task (issue 12: the glyph file once held raw pixels validate refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dfmpc_onnx.cli import main
from dfmpc_onnx.validate import load_inputs, load_labels, make_session, read_npz

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DATA = sorted((EXAMPLES / "data").glob("*.npz"))
MAX_TRACKED_BYTES = 5 * 1024 * 1024


def _models(npz: Path) -> list[Path]:
    task = npz.name.split("_")[0]
    return sorted((EXAMPLES / "models").glob(f"{task}_*.onnx"))


def test_there_is_data_for_every_task() -> None:
    assert DATA, "no examples/data/*.npz"
    tasks = {path.name.split("_")[0] for path in (EXAMPLES / "models").glob("*.onnx")}
    assert tasks == {path.name.split("_")[0] for path in DATA}


@pytest.mark.parametrize("npz", DATA, ids=lambda p: p.name)
def test_every_model_reads_its_held_out_file(npz: Path) -> None:
    assert npz.stat().st_size < MAX_TRACKED_BYTES
    arrays = read_npz(npz)
    models = _models(npz)
    assert models
    for model in models:
        session = make_session(model, threads=1)
        feeds = load_inputs(npz, session, arrays)
        samples = len(next(iter(feeds.values())))
        assert feeds["input"].dtype == np.float32
        found = load_labels(arrays, samples, feeds.keys())
        assert found is not None and found[0] == "label", model.name


@pytest.mark.parametrize("npz", DATA, ids=lambda p: p.name)
def test_validate_command_runs_on_the_file_format(npz: Path, tmp_path: Path) -> None:
    """The command end to end on the first 32 samples of the file (the whole file is slow)."""
    arrays = read_npz(npz)
    head = tmp_path / npz.name
    np.savez(head, **{k: (v[:32] if v.ndim and len(v) == len(arrays["label"]) else v)
                      for k, v in arrays.items()})
    model = _models(npz)[0]
    result = CliRunner().invoke(main, ["validate", str(model), str(model), "--inputs", str(head),
                                       "--repeats", "1", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["samples"] == 32 and data["labels"] == "label"
    (out,) = data["outputs"]
    assert out["top1_agreement"] == 1.0 and out["float_accuracy"] == out["quant_accuracy"]
