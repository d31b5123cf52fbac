"""Tests of dfmpc_onnx.validate on tiny models built with onnx.helper (fast, CPU only)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx.cli import main
from dfmpc_onnx.errors import DfmpcError, ModelLoadError, OptionsError
from dfmpc_onnx.validate import (
    ValidationResult,
    format_table,
    load_inputs,
    make_session,
    model_size_bytes,
    output_stats,
    parse_shape_option,
    random_inputs,
    resolve_providers,
    validate,
)

FEATURES = 4
RNG = np.random.default_rng(1234)
WEIGHT = RNG.standard_normal((1, FEATURES)).astype(np.float32)
BIAS = RNG.standard_normal((1, FEATURES)).astype(np.float32)


def _model(
    weight: np.ndarray = WEIGHT,
    *,
    input_shape: list | None = None,
    input_name: str = "x",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """y = x * w + b, element-wise.

    Element-wise float32 Mul and Add are correctly rounded in both ORT and NumPy, so the test
    can recompute the outputs bit-exactly and check the statistics to tight tolerances.
    """
    shape = input_shape if input_shape is not None else ["N", FEATURES]
    graph = helper.make_graph(
        [
            helper.make_node("Mul", [input_name, "w"], ["scaled"]),
            helper.make_node("Add", ["scaled", "b"], [output_name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", FEATURES])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def float_path(tmp_path: Path) -> Path:
    return _save(_model(), tmp_path / "float.onnx")


def _reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) * weight + BIAS


def test_identical_models_agree_perfectly(float_path: Path, tmp_path: Path) -> None:
    quant_path = _save(_model(), tmp_path / "quant.onnx")
    result = validate(float_path, quant_path, batch=8, repeats=2)
    assert [o.name for o in result.outputs] == ["logits"]
    stats = result.outputs[0]
    assert stats.cosine == pytest.approx(1.0, abs=1e-12)
    assert stats.sqnr_db == math.inf
    assert stats.max_abs_error == 0.0 and stats.mean_abs_error == 0.0
    assert stats.top1_agreement == 1.0
    assert result.samples == 8
    assert result.input_source == "random(seed=0)"
    assert result.provider == "CPUExecutionProvider"
    assert result.float_latency_ms > 0 and result.quant_latency_ms > 0
    assert result.latency_ratio == pytest.approx(result.quant_latency_ms / result.float_latency_ms)
    assert result.float_size_bytes == os.path.getsize(float_path)

    table = format_table(result)
    assert "logits" in table and "inf" in table and "100.00%" in table
    assert "CPUExecutionProvider" in table and "random(seed=0)" in table
    assert max(len(line) for line in table.splitlines()) <= 100


def test_perturbed_weight_matches_numpy(float_path: Path, tmp_path: Path) -> None:
    perturbed = WEIGHT + np.float32(0.3) * RNG.standard_normal(WEIGHT.shape).astype(np.float32)
    quant_path = _save(_model(perturbed), tmp_path / "quant.onnx")
    result = validate(float_path, quant_path, batch=16, seed=3, repeats=2)

    # Same inputs the tool used: random_inputs is seeded, so it reproduces them.
    x = random_inputs(make_session(float_path), batch=16, seed=3)["x"]
    ref = _reference(x, WEIGHT).astype(np.float64).ravel()
    quant = _reference(x, perturbed).astype(np.float64).ravel()
    cosine = ref @ quant / (np.linalg.norm(ref) * np.linalg.norm(quant))
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - quant) ** 2))

    stats = result.outputs[0]
    assert stats.cosine == pytest.approx(cosine, abs=1e-6)
    assert stats.sqnr_db == pytest.approx(sqnr, abs=1e-6)
    assert stats.max_abs_error == pytest.approx(np.abs(ref - quant).max(), abs=1e-6)
    assert stats.mean_abs_error == pytest.approx(np.abs(ref - quant).mean(), abs=1e-6)
    agree = np.mean(ref.reshape(16, -1).argmax(1) == quant.reshape(16, -1).argmax(1))
    assert stats.top1_agreement == pytest.approx(agree)
    assert stats.cosine < 1.0 and math.isfinite(stats.sqnr_db)


def test_npz_inputs_are_used(float_path: Path, tmp_path: Path) -> None:
    perturbed = WEIGHT * np.float32(1.5)
    quant_path = _save(_model(perturbed), tmp_path / "quant.onnx")
    x = np.arange(5 * FEATURES, dtype=np.float64).reshape(5, FEATURES) / 7  # float64: cast
    npz = tmp_path / "inputs.npz"
    np.savez(npz, x=x)
    result = validate(float_path, quant_path, inputs=npz, repeats=2)
    assert result.input_source == str(npz)
    assert result.samples == 5
    expected = np.abs(_reference(x, WEIGHT) - _reference(x, perturbed)).astype(np.float64)
    assert result.outputs[0].mean_abs_error == pytest.approx(expected.mean(), rel=1e-6)
    assert "inputs.npz, 5 samples" in format_table(result)


def test_npz_with_wrong_key_is_an_options_error(float_path: Path, tmp_path: Path) -> None:
    npz = tmp_path / "bad.npz"
    np.savez(npz, image=np.zeros((2, FEATURES), np.float32))
    with pytest.raises(OptionsError, match=r"missing 'x'.*unexpected 'image'"):
        validate(float_path, float_path, inputs=npz, repeats=1)


def test_npz_extra_arrays_such_as_labels_are_ignored(float_path: Path, tmp_path: Path) -> None:
    npz = tmp_path / "with_labels.npz"
    np.savez(npz, x=np.ones((3, FEATURES), np.float32), label=np.arange(3))
    result = validate(float_path, float_path, inputs=npz, repeats=1)
    assert result.samples == 3 and result.outputs[0].cosine == pytest.approx(1.0)


def test_npz_shape_mismatch_and_unreadable_file(float_path: Path, tmp_path: Path) -> None:
    session = make_session(float_path)
    npz = tmp_path / "shape.npz"
    np.savez(npz, x=np.zeros((2, FEATURES + 1), np.float32))
    with pytest.raises(OptionsError, match=r"'x' has shape 2x5.*\[N, 4\]"):
        load_inputs(npz, session)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(OptionsError, match="garbage.npz"):
        load_inputs(garbage, session)
    with pytest.raises(OptionsError, match="not found"):
        load_inputs(tmp_path / "absent.npz", session)


def test_symbolic_non_batch_dim_needs_shape(tmp_path: Path) -> None:
    model = _model(input_shape=["N", "C"])
    path = _save(model, tmp_path / "sym.onnx")
    # No rule of convert's gives a feature width ONNX Runtime runs (it is the weight's): the
    # shapes tried are named, and --input-shape asked for.
    with pytest.raises(OptionsError, match=r"ONNX Runtime refused x 1x.*--input-shape x="):
        validate(path, path, batch=8, repeats=1)
    result = validate(path, path, shapes={"x": (3, FEATURES)}, repeats=1)
    assert result.samples == 3
    with pytest.raises(OptionsError, match="unknown input"):
        validate(path, path, shapes={"y": (3, FEATURES)}, repeats=1)
    with pytest.raises(OptionsError, match="rank"):
        validate(path, path, shapes={"x": (3,)}, repeats=1)


def test_parse_shape_option() -> None:
    assert parse_shape_option("input=1x3x32x32") == {"input": (1, 3, 32, 32)}
    assert parse_shape_option("a=1x2, b=3") == {"a": (1, 2), "b": (3,)}
    assert parse_shape_option(["a=1x2", "in:0=4X5"]) == {"a": (1, 2), "in:0": (4, 5)}
    for garbage in ["input", "=1x3", "input=", "input=1xax3", "input=0x3", "input=-1x3",
                    "input=1x3x", "", "a=1,a=2"]:
        with pytest.raises(OptionsError):
            parse_shape_option(garbage)


def test_size_counts_external_data(float_path: Path, tmp_path: Path) -> None:
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    quant_path = ext_dir / "quant.onnx"
    onnx.save(_model(), str(quant_path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    expected = os.path.getsize(quant_path) + os.path.getsize(ext_dir / "w.bin")
    assert os.path.getsize(ext_dir / "w.bin") > 0
    assert model_size_bytes(quant_path) == expected
    result = validate(float_path, quant_path, repeats=1)  # ORT finds w.bin next to the model
    assert result.quant_size_bytes == expected
    assert result.outputs[0].sqnr_db == math.inf


def test_to_dict_is_json(float_path: Path, tmp_path: Path) -> None:
    quant_path = _save(_model(), tmp_path / "quant.onnx")
    result = validate(float_path, quant_path, repeats=1)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["outputs"][0]["sqnr_db"] == "inf"
    assert data["outputs"][0]["name"] == "logits"
    assert data["input_source"] == "random(seed=0)"
    assert isinstance(result, ValidationResult)


def test_interface_mismatch_is_reported(float_path: Path, tmp_path: Path) -> None:
    other = _save(_model(output_name="probs"), tmp_path / "other.onnx")
    with pytest.raises(OptionsError, match=r"outputs only in the float model: 'logits'.*'probs'"):
        validate(float_path, other, repeats=1)


def _identity_model(shape: list) -> onnx.ModelProto:
    """x -> logits unchanged, for any declared input shape (same names as ``_model``)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    "float_shape,quant_shape,refused",
    [
        (["N", 1, 24, 24], ["N", 1, 16, 16], True),  # what a user hit: glyph float, digits quant
        (["N", 4], ["N", 1, 4], True),  # another rank
        (["N", 4], [8, 4], False),  # a symbolic dim accepts a fixed one
        (["N", "C"], ["N", 4], False),
    ],
)
def test_differently_shaped_inputs_are_a_user_error(
    tmp_path: Path, float_shape: list, quant_shape: list, refused: bool
) -> None:
    float_model = _save(_identity_model(float_shape), tmp_path / "f.onnx")
    quant_model = _save(_identity_model(quant_shape), tmp_path / "q.onnx")
    args = ["validate", str(float_model), str(quant_model), "--repeats", "1", "--batch", "8"]
    if "C" in float_shape:
        args += ["--shape", "x=8x4"]
    result = CliRunner().invoke(main, args)
    if not refused:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == OptionsError.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    f_text = "[" + ", ".join(map(str, float_shape)) + "]"  # symbolic dims show by name
    q_text = "[" + ", ".join(map(str, quant_shape)) + "]"
    assert line.startswith("error: ") and f_text in line and q_text in line, line
    assert "f.onnx" in line and "q.onnx" in line


def test_labels_give_both_models_accuracy(float_path: Path, tmp_path: Path) -> None:
    perturbed = WEIGHT + np.float32(0.5) * RNG.standard_normal(WEIGHT.shape).astype(np.float32)
    quant_path = _save(_model(perturbed), tmp_path / "quant.onnx")
    x = np.random.default_rng(5).standard_normal((64, FEATURES)).astype(np.float32)
    labels = np.random.default_rng(6).integers(0, FEATURES, 64)
    want_f = np.mean(_reference(x, WEIGHT).argmax(1) == labels)
    want_q = np.mean(_reference(x, perturbed).argmax(1) == labels)
    for key in ("label", "labels"):
        npz = tmp_path / f"{key}.npz"
        np.savez(npz, x=x, **{key: labels})
        result = validate(float_path, quant_path, inputs=npz, repeats=1)
        stats = result.outputs[0]
        assert stats.float_accuracy == pytest.approx(want_f)
        assert stats.quant_accuracy == pytest.approx(want_q)
        assert result.labels == key
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert data["outputs"][0]["float_accuracy"] == pytest.approx(want_f)
        assert data["outputs"][0]["quant_accuracy"] == pytest.approx(want_q)
        table = format_table(result)
        assert "top-1 agree" in table
        (line,) = [line for line in table.splitlines() if line.startswith("accuracy")]
        assert f"{want_f * 100:.2f} %" in line and f"{want_q * 100:.2f} %" in line, line
        assert max(len(line) for line in table.splitlines()) <= 100


def test_labels_of_another_length_or_kind_are_ignored(float_path: Path, tmp_path: Path) -> None:
    x = np.zeros((6, FEATURES), np.float32)
    for labels in (np.zeros(5, np.int64), np.zeros(6, np.float32), np.zeros((6, 2), np.int64)):
        npz = tmp_path / "l.npz"
        np.savez(npz, x=x, label=labels)
        result = validate(float_path, float_path, inputs=npz, repeats=1)
        assert result.labels is None and result.outputs[0].float_accuracy is None
        assert "accuracy" not in format_table(result)


def test_bad_model_files_are_model_load_errors(float_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="quantized model.*absent.onnx"):
        validate(float_path, tmp_path / "absent.onnx", repeats=1)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not a protobuf")
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        make_session(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        make_session(empty)


def test_providers() -> None:
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(OptionsError, match="CPUExecutionProvider"):
        resolve_providers("quantum")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert resolve_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        with pytest.raises(OptionsError, match="not available.*CPUExecutionProvider"):
            resolve_providers("cuda")


def test_session_options(float_path: Path) -> None:
    session = make_session(float_path, threads=1, disable_quant_qdq=True)
    assert session.get_session_options().intra_op_num_threads == 1
    config = session.get_session_options().get_session_config_entry("session.disable_quant_qdq")
    assert config == "1"


def test_random_inputs_respect_dtypes(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["h", "ids_f"], ["y"]),
        ],
        "dtypes",
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["N", 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = _save(model, tmp_path / "dtypes.onnx")
    feeds = random_inputs(make_session(path), batch=5, seed=0)
    assert feeds["h"].dtype == np.float16 and feeds["h"].shape == (5, 3)
    assert feeds["ids"].dtype == np.int64 and set(np.unique(feeds["ids"])) <= {0, 1}
    again = random_inputs(make_session(path), batch=5, seed=0)
    assert np.array_equal(feeds["h"], again["h"])  # seeded: reproducible
    result = validate(path, path, batch=5, repeats=1)
    assert result.outputs[0].top1_agreement == 1.0  # float16 output, 2-D with 3 columns


def test_output_stats_edge_cases() -> None:
    zeros = np.zeros((2, 3), np.float32)
    same = output_stats("z", zeros, zeros)
    assert same.cosine == 1.0 and same.sqnr_db == math.inf
    vec = output_stats("v", np.ones(4), np.ones(4) * 2)
    assert vec.top1_agreement is None  # not (batch, classes)
    assert vec.cosine == pytest.approx(1.0) and vec.sqnr_db == pytest.approx(0.0)
    with pytest.raises(DfmpcError, match="shape"):
        output_stats("s", np.ones((2, 3)), np.ones((3, 2)))


def test_validate_reports_the_divergence_convert_predicts_by_the_same_definition():
    """KL of softmax for (batch, classes), relative squared error per feature otherwise, written out
    here."""
    from dfmpc_onnx.validate import output_stats

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    pa = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    pb = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    kl = float(np.mean(np.sum(pa * (np.log(pa) - np.log(pb)), axis=1)))
    s = output_stats("logits", a, b)
    assert s.metric == "kl" and abs(s.divergence - kl) < 1e-9
    assert output_stats("logits", a, a).divergence == 0.0
    m = rng.standard_normal((2, 3, 4))
    s = output_stats("map", m, m + 0.1)
    # relative squared error with each feature at its own scale: the worst of the plain error and,
    # for each non-batch axis, the mean over its slices of the slice's relative error
    expected = (0.01 * m.size) / np.sum(m * m)
    for axis in (1, 2):
        expected = max(expected, np.mean([
            0.01 * np.take(m, c, axis).size / np.sum(np.take(m, c, axis) ** 2)
            for c in range(m.shape[axis])]))
    assert expected > (0.01 * m.size) / np.sum(m * m)  # the per-feature view is the one that counts
    assert s.metric == "rel_mse" and abs(s.divergence - expected) < 1e-9


def test_symbolic_image_sides_are_set_by_converts_rule(tmp_path: Path) -> None:
    """A model convert measures without --input-shape (symbolic height and width) is validated
    without it too, at the shape convert's rule gives, and the result says which."""
    from tinymodels import conv_net

    from dfmpc_onnx import convert
    from dfmpc_onnx.options import ConvertOptions

    model = conv_net(seed=0, c=8)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("N", None, "H", "W"), strict=True):
        if name:
            d.dim_param = name  # replaces the fixed size (one of the two fields)
    src = _save(model, tmp_path / "dyn.onnx")
    q, _ = convert(model, ConvertOptions(low_bits=8, fidelity_samples=0))
    dst = _save(q, tmp_path / "dyn.q.onnx")
    result = validate(src, dst, batch=2, repeats=1)
    assert result.samples == 2
    note = next(n for n in result.notes if "set by the rule convert measures with" in n)
    side = note.split("input Nx3x")[1].split(" ")[0]  # e.g. 224x224
    assert all(int(v) > 0 for v in side.split("x"))
    assert result.outputs[0].cosine > 0.99


def test_an_rnn_state_follows_the_batch(tmp_path: Path) -> None:
    """x[N, 4] feeds an LSTM whose state h0 is [2, B, 3]: B is the batch (convert's RNN-state
    rule), so validate gives it --batch, not the 1 convert measures one run with."""
    from tinymodels import make_model

    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((2, 12, 4)).astype(np.float32),
             "R": rng.standard_normal((2, 12, 3)).astype(np.float32),
             "axes": np.array([0], np.int64)}
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["seq"]),
             helper.make_node("LSTM", ["seq", "W", "R", "", "", "h0"], ["y"], hidden_size=3,
                              direction="bidirectional", name="lstm")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "B", 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "N", 3])], inits)
    path = _save(model, tmp_path / "rnn.onnx")
    result = validate(path, path, batch=3, repeats=1)
    assert result.samples == 3
    assert any("h0 2x3x3" in n and "here --batch 3" in n for n in result.notes)


def test_shapes_onnx_runtime_refuses_are_not_logged(tmp_path: Path, capfd) -> None:
    """The shape tries run in validate's own session: a refused one is an expected answer,
    returned and moved past, not an ONNX Runtime error printed on stderr."""
    from tinymodels import make_model

    inits = {"shape": np.array([1, 512], np.int64),
             "w": np.random.default_rng(0).standard_normal((512, 4)).astype(np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="fc")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "L"])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    path = _save(model, tmp_path / "chunk.onnx")
    capfd.readouterr()
    result = validate(path, path, repeats=1)
    assert any("x 1x512" in n for n in result.notes)
    assert "onnxruntime" not in capfd.readouterr().err
