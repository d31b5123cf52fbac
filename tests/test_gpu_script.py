"""benchmarks/gpu.py on the CPU provider, on a tiny model: every output kind is made and run, the
CPU column is the reference, and whatever cannot run lands on the "could not run" list."""

import sys
from pathlib import Path

import numpy as np
import pytest
from tinymodels import conv_net

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not installed
from benchmarks import gpu  # noqa: E402


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    paths, failed = gpu.convert_kinds(conv_net(seed=1), folder)
    return folder, paths, failed


def _feeds():
    return {"input": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}


def test_every_kind_converts_and_runs_on_the_cpu(kinds):
    folder, paths, failed = kinds
    assert failed == {} and list(paths) == list(gpu.KINDS)
    results = gpu.run_matrix("tiny", paths, _feeds(), ["CPUExecutionProvider"], 3, folder)
    assert [(r.kind, r.provider) for r in results] == [(k, "CPUExecutionProvider") for k in gpu.KINDS]
    assert all(r.error is None and r.ms > 0 and r.vs_cpu == 0.0 for r in results)
    by_kind = {r.kind: r for r in results}
    assert by_kind["float"].vs_float == 0.0
    for kind in list(gpu.KINDS)[1:]:  # quantized: different from float, and not wildly
        assert 0.0 < by_kind[kind].vs_float < 0.5, (kind, by_kind[kind].vs_float)
    text = gpu.table(results)
    assert text.count("\n") == 1 + len(gpu.KINDS) and "int8 activations (int8)" in text


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_missing_and_failing_providers_are_listed(kinds):
    folder, paths, _ = kinds
    found, missing = gpu.gpu_providers(["CPUExecutionProvider"])
    assert found == [] and [m.split(":")[0] for m in missing] == list(gpu.GPU_PROVIDERS)
    # A provider ORT does not have here: ORT falls back to the CPU, which the script refuses.
    if "CUDAExecutionProvider" in gpu.ort.get_available_providers():
        pytest.skip("CUDA is available here: nothing falls back")
    results = gpu.run_matrix("tiny", {"float": paths["float"]}, _feeds(),
                             ["CUDAExecutionProvider"], 2, folder)
    cuda = [r for r in results if r.provider == "CUDAExecutionProvider"]
    assert len(cuda) == 1 and cuda[0].ms is None and cuda[0].error
    lines = gpu.could_not_run(results, missing,
                              {"tiny": {"int8 activations (int8)": "conversion failed: x"}})
    assert lines[:2] == missing
    assert "tiny / int8 activations (int8): conversion failed: x" in lines
    assert any(line.startswith("tiny / float / CUDAExecutionProvider: ") for line in lines)
    assert "CUDA" not in gpu.table(results)  # no figure for what did not run


def test_main_without_a_gpu_prints_what_it_could_not_run(monkeypatch, capsys, tmp_path):
    feeds = _feeds()
    monkeypatch.setattr(gpu, "default_models", lambda: {"tiny": (conv_net(seed=1), feeds)})
    monkeypatch.setattr(gpu, "gpu_providers", lambda: ([], ["TensorrtExecutionProvider: absent"]))
    out_json = tmp_path / "gpu.json"
    assert gpu.main(["--repeats", "2", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "GPU providers here: none" in text and "could not run:" in text
    assert "TensorrtExecutionProvider: absent" in text and text.count("| tiny |") == len(gpu.KINDS)
    assert out_json.read_text().count('"provider"') == len(gpu.KINDS)
