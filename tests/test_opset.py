"""A model that runs must convert, whatever opset it was exported at (issue 10, section 1).

Tiny models (tests/opset_models.py) valid at every ai.onnx opset from 9 to the newest the
installed onnx knows are converted with the default options (INT2 containers: opset 25), INT4
(opset 21), int8 containers (opset 13) and 8/8; each result must pass the full checker, load in
ONNX Runtime and compute what the float model computes. Models carrying exporter value_info that
newer shape inference contradicts must convert too, and a version converter failure must be a
clear, one-line OpsetUpgradeError that names the failing step and the opset reached.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import version_converter
from opset_models import MODELS, stale_reshape

import dfmpc_onnx
from dfmpc_onnx import ConvertOptions
from dfmpc_onnx.errors import UnsupportedModelError
from dfmpc_onnx.model.opset import OpsetUpgradeError, highest_reachable_opset, upgrade_opset

NEWEST = onnx.defs.onnx_opset_version()
OPSETS = list(range(9, NEWEST + 1))

OPTIONS = {
    # Fixed plans: the measured plan may break near-ties differently where two spellings of the
    # same function round differently in the last bit, and these tests compare opsets exactly.
    "default": ConvertOptions(method="pairs", correction="bias"),
    "int4": ConvertOptions(low_bits=4),
    "int8-format": ConvertOptions(method="pairs", correction="bias", format="int8"),
    "8/8": ConvertOptions(low_bits=8),
}


def _needed_opset(model: onnx.ModelProto) -> int:
    """The lowest opset whose DequantizeLinear reads every container of a converted model:
    INT2/UINT2 25, INT4/UINT4 21, 8-bit per-axis 13."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    T = onnx.TensorProto
    need = {T.INT2: 25, T.UINT2: 25, T.INT4: 21, T.UINT4: 21}
    return max([need.get(types.get(n.input[0]), 13)
                for n in model.graph.node if n.op_type == "DequantizeLinear"], default=0)


@functools.cache
def _dq_runs_in_ort(opset: int) -> bool:
    """Whether this ONNX Runtime implements DequantizeLinear as of ``opset``: onnx may know newer
    opsets than the runtime (onnx 1.23: 28; ONNX Runtime 1.32 runs DequantizeLinear up to 25),
    and a model above gets converted at the highest opset whose DequantizeLinear ORT runs."""
    from onnx import TensorProto, helper
    dq = helper.make_node("DequantizeLinear", ["q", "s"], ["y"])
    graph = helper.make_graph([dq], "dq", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [helper.make_tensor("q", TensorProto.INT8, [2], [1, 2]),
                               helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        return False
    return True


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


X = np.random.default_rng(11).standard_normal((1, 3, 8, 8)).astype(np.float32)


def _convert_and_compare(model: onnx.ModelProto, opset: int) -> dict[str, np.ndarray]:
    """Convert with every option set; check each result (full checker, opset, shapes, 8/8 close
    to float); return the converted outputs by option set."""
    reference = _run(model, X)
    outputs = {}
    for name, options in OPTIONS.items():
        quantized, report = dfmpc_onnx.convert(model, options)
        onnx.checker.check_model(quantized, full_check=True)
        out_opset = max(opset, _needed_opset(quantized))
        while not _dq_runs_in_ort(out_opset):  # brought down to an opset ORT runs DQ at
            out_opset -= 1
        assert (report.opset_in, report.opset_out) == (opset, out_opset), name
        assert quantized.opset_import[0].version == out_opset, name
        y = _run(quantized, X)
        assert y.shape == reference.shape and np.isfinite(y).all(), name
        outputs[name] = y
    assert _cosine(outputs["8/8"], reference) > 0.99
    return outputs


@functools.cache
def _outputs_at(family: str, opset: int) -> dict[str, np.ndarray]:
    return _convert_and_compare(MODELS[family](opset), opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_opset_converts(family: str, opset: int) -> None:
    """Each opset's spelling of a family has the same seeded weights and computes the same
    function, so its conversion (2-bit layers included) must compute what opset 13's does."""
    onnx.checker.check_model(MODELS[family](opset), full_check=True)  # valid at its own opset
    outputs, same = _outputs_at(family, opset), _outputs_at(family, 13)
    for name in OPTIONS:
        np.testing.assert_allclose(outputs[name], same[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("opset", OPSETS)
def test_stale_value_info_converts(opset: int) -> None:
    """Exporter value_info with a rank newer shape inference contradicts (the Reshape of a real
    opset-12 export): valid for the full checker up to opset 13, run by ORT at every opset."""
    model = stale_reshape(opset)
    if opset <= 13:
        onnx.checker.check_model(model, full_check=True)
    _convert_and_compare(model, opset)


def test_stale_value_info_is_noted() -> None:
    # 4-bit layers need opset 21: the upgrade is what meets the stale value_info.
    _, report = dfmpc_onnx.convert(stale_reshape(12), ConvertOptions(low_bits=4))
    assert any("view_out" in n and "dropped" in n for n in report.notes), report.notes


@pytest.mark.parametrize("opset", [12, 21])
def test_stale_graph_output_shape_is_fitted(opset: int) -> None:
    """A graph output declared with a rank the graph does not produce: ORT runs the model; the
    output is declared as inferred, and the report says so."""
    model = stale_reshape(opset, output_rank=3)
    quantized, report = dfmpc_onnx.convert(model, ConvertOptions())
    dims = [d.dim_value for d in quantized.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 10]
    assert any("graph outputs output" in n for n in report.notes), report.notes
    assert _run(quantized, X).shape == _run(model, X).shape


def test_uninferable_value_info_is_kept() -> None:
    """Entries shape inference cannot recreate (here: after a custom operator) stay."""
    from onnx import TensorProto, helper
    model = MODELS["dropout"](12)
    node = model.graph.node[-1]  # conv1 -> custom op -> output
    node.output[0] = "conv1_raw"
    model.graph.node.append(helper.make_node("Mystery", ["conv1_raw"], ["mystery"], domain="com.example"))
    model.graph.node.append(helper.make_node("Identity", ["mystery"], ["output"]))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    model.graph.value_info.append(helper.make_tensor_value_info("mystery", TensorProto.FLOAT, [1, 8, 8, 8]))
    upgrade_opset(model, 21)
    kept = {vi.name: vi for vi in model.graph.value_info}
    assert [d.dim_value for d in kept["mystery"].type.tensor_type.shape.dim] == [1, 8, 8, 8]


def test_upgrade_leaves_large_weights_in_place() -> None:
    """Large initializers are lifted while the converter runs and come back unchanged."""
    model = MODELS["conv_bn_reshape_gemm"](12)
    big = onnx.numpy_helper.from_array(np.arange(300_000, dtype=np.float32), "big")
    model.graph.initializer.append(big)
    upgrade_opset(model, 25)
    back = next(t for t in model.graph.initializer if t.name == "big")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(back), np.arange(300_000, dtype=np.float32))
    assert model.opset_import[0].version == 25


def test_ir3_initializers_not_inputs_are_read_as_ir4() -> None:
    """IR 3 wants every initializer listed as a graph input; exporters that did not list them
    made models the version converter reads as having undefined inputs."""
    model = MODELS["conv_bn_reshape_gemm"](9)
    model.ir_version = 3
    notes = upgrade_opset(model, 13)
    assert model.ir_version >= 4 and any("IR version 3" in n for n in notes)
    onnx.checker.check_model(model, full_check=True)


def _failing_converter(monkeypatch: pytest.MonkeyPatch, fails_at: int) -> None:
    """The version converter with no adapter from ``fails_at - 1`` to ``fails_at``: what it
    raises for a missing adapter (no op here lacks one; the tests above show every family
    converting, so the failure is injected)."""
    real = version_converter.convert_version

    def convert(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        current = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
        if current < fails_at <= target:
            raise RuntimeError(f"adapters.h:42: adapt: No Adapter For Mystery from {fails_at - 1}")
        return real(model, target)

    monkeypatch.setattr(version_converter, "convert_version", convert)


def test_converter_failure_names_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_converter(monkeypatch, fails_at=22)
    model = MODELS["clip"](12)
    before = model.SerializeToString()
    with pytest.raises(OpsetUpgradeError) as caught:
        upgrade_opset(model, 25)
    assert caught.value.reachable == 21 and (caught.value.current, caught.value.target) == (12, 25)
    assert "from opset 21 to 22" in str(caught.value) and "No Adapter For Mystery" in str(caught.value)
    assert model.SerializeToString() == before  # unchanged: the caller may fall back
    assert highest_reachable_opset(model, [25, 21, 13]) == 21


def test_converter_failure_falls_back_to_int8_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    """INT2 containers need opset 25; a model the converter cannot take past 13 keeps its grids
    in int8 containers at opset 13 (passes/upgrade_opset.py), and the report names the step."""
    _failing_converter(monkeypatch, fails_at=14)
    model = MODELS["clip"](12)
    fixed = dict(method="pairs", correction="bias")  # a 2-bit layer: INT2 needs opset 25
    quantized, report = dfmpc_onnx.convert(model, ConvertOptions(**fixed))
    assert report.opset_out == 13 and quantized.opset_import[0].version == 13
    assert any("from opset 13 to 14" in n and "int8 containers" in n for n in report.notes), report.notes
    reference, _ = dfmpc_onnx.convert(model, ConvertOptions(format="int8", **fixed))
    np.testing.assert_allclose(_run(quantized, X), _run(reference, X), rtol=1e-5, atol=1e-6)


def test_converter_failure_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """When not even opset 13 is reachable, the refusal is one line (exit 4) naming the step."""
    _failing_converter(monkeypatch, fails_at=13)
    with pytest.raises(UnsupportedModelError) as caught:
        dfmpc_onnx.convert(MODELS["clip"](12), ConvertOptions())
    message = str(caught.value)
    assert caught.value.exit_code == 4 and "\n" not in message
    assert "from opset 12 to 13" in message and "No Adapter For Mystery" in message, message


@pytest.mark.skipif(_dq_runs_in_ort(NEWEST),
                    reason="this ONNX Runtime runs DequantizeLinear at the newest opset")
def test_newest_opset_comes_down_to_what_the_runtime_runs() -> None:
    quantized, report = dfmpc_onnx.convert(MODELS["clip"](NEWEST), ConvertOptions())
    assert report.opset_out < NEWEST and _dq_runs_in_ort(report.opset_out)
    assert any(f"opset {NEWEST} -> {report.opset_out}" in n for n in report.notes), report.notes


def test_no_runtime_opset_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers that need an opset whose DequantizeLinear the runtime lacks: refused early
    (exit 4), not after the conversion by a failed load (exit 6)."""
    import dfmpc_onnx.model.opset as opset_module
    monkeypatch.setattr(opset_module, "runtime_has_dequantize", lambda opset: opset < 21)
    with pytest.raises(UnsupportedModelError) as caught:
        dfmpc_onnx.convert(MODELS["clip"](12), ConvertOptions(low_bits=4))
    assert "no DequantizeLinear for opset 21" in str(caught.value), str(caught.value)
