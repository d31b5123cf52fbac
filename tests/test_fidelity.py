"""The fidelity probe against the obvious reference: build the modified model, run it in ONNX
Runtime, compute the divergence in NumPy by hand."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx.measure.fidelity import FidelityProbe
from dfmpc_onnx.measure.synthetic import synthetic_inputs
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer


def quantize(w, bits, axis):
    """Per-channel max-abs rounding along ``axis`` (the converter's default grid)."""
    return get_quantizer("maxabs").quantize(w, bits, WeightLayout(axis, 1 - axis if w.ndim == 2 else 1))


def _make(nodes, inputs, outputs, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    m = helper.make_model(helper.make_graph(nodes, "t", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Relu, a residual Add, pool, Gemm(transB=1): 10 logits."""
    rng = np.random.default_rng(seed)
    f = np.float32
    w = {"c1.w": (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(f),
         "bn.s": (1 + 0.1 * rng.standard_normal(8)).astype(f),
         "bn.b": (0.1 * rng.standard_normal(8)).astype(f),
         "bn.m": (0.1 * rng.standard_normal(8)).astype(f), "bn.v": (1 + rng.random(8)).astype(f),
         "c2.w": (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(f), "c2.b": np.zeros(8, f),
         "fc.w": (rng.standard_normal((10, 8)) * 0.8).astype(f), "fc.b": np.zeros(10, f)}
    nodes = [helper.make_node("Conv", ["x", "c1.w"], ["c1"], pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Add", ["r1", "r2"], ["res"]),
             helper.make_node("GlobalAveragePool", ["res"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1)]
    return _make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], w)


CONV_AXES = {"c1.w": 0, "c2.w": 0, "fc.w": 0}


def replaced(model: onnx.ModelProto, new: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in new:
            t.CopyFrom(numpy_helper.from_array(new[t.name].astype(numpy_helper.to_array(t).dtype), t.name))
    return m


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def kl_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(b - b.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


def q(w: np.ndarray, bits: int, axis: int) -> np.ndarray:
    return quantize(w, bits, axis).dequantize().astype(w.dtype)


@pytest.fixture(scope="module")
def conv_probe():
    model = conv_net()
    inputs = synthetic_inputs(model, n=32, seed=1)
    return model, inputs, FidelityProbe(model, list(CONV_AXES), inputs)


def test_float_weights_give_exactly_zero(conv_probe):
    model, inputs, probe = conv_probe
    np.testing.assert_allclose(probe.reference["logits"], ort_run(model, inputs)[0], rtol=1e-5, atol=1e-6)
    for trial in ({}, {"c2.w": probe.weight("c2.w")}, {w: probe.weight(w).copy() for w in CONV_AXES}):
        fid = probe.measure(trial)
        assert fid.score == 0.0 and fid.divergence == {"logits": 0.0}
        assert fid.top1_agreement == 1.0 and fid.metric == {"logits": "kl"}


def test_divergence_grows_as_bits_fall(conv_probe):
    _, _, probe = conv_probe
    for name, axis in CONV_AXES.items():
        scores = [probe.measure({name: q(probe.weight(name), b, axis)}).score for b in (8, 4, 2)]
        assert 0 < scores[0] < scores[1] < scores[2], (name, scores)
    every = [probe.measure({n: q(probe.weight(n), b, a) for n, a in CONV_AXES.items()}).score
             for b in (8, 4, 2)]
    assert 0 < every[0] < every[1] < every[2]


@pytest.mark.parametrize("names", [("c1.w",), ("c2.w",), ("fc.w",), ("c1.w", "fc.w")])
def test_kl_equals_numpy_on_a_separately_built_model(conv_probe, names):
    model, inputs, probe = conv_probe
    new = {n: q(probe.weight(n), 3, CONV_AXES[n]) for n in names}
    fid = probe.measure(new)
    ref = ort_run(model, inputs)[0]
    cand = ort_run(replaced(model, new), inputs)[0]
    assert fid.divergence["logits"] == pytest.approx(kl_by_hand(ref, cand), rel=1e-3, abs=1e-9)
    assert fid.top1_agreement == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))


def test_the_callers_model_is_not_modified():
    model = conv_net()
    before = model.SerializeToString()
    probe = FidelityProbe(model, list(CONV_AXES), synthetic_inputs(model, n=4))
    probe.measure({"c1.w": q(probe.weight("c1.w"), 2, 0)})
    assert model.SerializeToString() == before


def matmul_net(shared: bool) -> onnx.ModelProto:
    """Two MatMuls on a (N, 4, 6) sequence; with ``shared`` both read the same weight."""
    rng = np.random.default_rng(2)
    w = {"w1": rng.standard_normal((6, 6)).astype(np.float32)}
    if not shared:
        w["w2"] = rng.standard_normal((6, 6)).astype(np.float32)
    second = "w1" if shared else "w2"
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["t", second], ["y"])]
    return _make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6])], w)


@pytest.mark.parametrize("shared", [True, False])
def test_matmul_relative_mse_and_shared_weights(shared):
    model = matmul_net(shared)
    names = ["w1"] if shared else ["w1", "w2"]
    inputs = synthetic_inputs(model, n=8)
    probe = FidelityProbe(model, names, inputs)
    ref = ort_run(model, inputs)[0].astype(np.float64)
    for name in names:
        new = {name: q(probe.weight(name), 2, 1)}
        fid = probe.measure(new)
        cand = ort_run(replaced(model, new), inputs)[0].astype(np.float64)
        # relative squared error, each feature at its own scale (output_kinds'
        # feature_relative_error): the worst over the plain error and, for each non-batch axis,
        # the mean over its slices
        expected = np.sum((ref - cand) ** 2) / np.sum(ref ** 2)
        for axis in (1, 2):
            expected = max(expected, np.mean([
                np.sum((np.take(ref, c, axis) - np.take(cand, c, axis)) ** 2)
                / np.sum(np.take(ref, c, axis) ** 2) for c in range(ref.shape[axis])]))
        assert fid.metric == {"y": "rel_mse"} and fid.top1_agreement is None
        assert fid.score == pytest.approx(expected, rel=1e-4)
        assert probe.measure({name: probe.weight(name)}).score == 0.0


def test_float16_weights_and_constant_nodes():
    """A float16 weight read through a Cast, and a weight held by a Constant node."""
    rng = np.random.default_rng(3)
    w16 = rng.standard_normal((5, 7)).astype(np.float16)
    wc = rng.standard_normal((7, 3)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["w16"], ["w16f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w16f"], ["h"]),
             helper.make_node("Constant", [], ["wc"], value=numpy_helper.from_array(wc)),
             helper.make_node("MatMul", ["h", "wc"], ["logits"])]
    model = _make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], {"w16": w16})
    inputs = synthetic_inputs(model, n=16)
    probe = FidelityProbe(model, ["w16", "wc"], inputs)
    assert probe.weight("w16").dtype == np.float16
    assert probe.measure({"w16": probe.weight("w16").astype(np.float64)}).score == 0.0
    q16 = quantize(w16, 3, 1).dequantize()  # float64 candidate: the probe casts it to float16
    fid = probe.measure({"w16": q16, "wc": q(wc, 3, 1)})
    expected_model = _make([nodes[0], nodes[1],
                            helper.make_node("MatMul", ["h", "wc"], ["logits"])],
                           list(model.graph.input), list(model.graph.output),
                           {"w16": q16.astype(np.float16), "wc": q(wc, 3, 1)})
    cand = ort_run(expected_model, inputs)[0]
    assert fid.score == pytest.approx(kl_by_hand(ort_run(model, inputs)[0], cand), rel=1e-3)


def test_fixed_batch_model_runs_stacked_inputs_in_runs_of_its_batch():
    model = conv_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    inputs = synthetic_inputs(model, n=5)
    assert inputs["x"].shape[0] == 5
    probe = FidelityProbe(model, ["c2.w"], inputs)
    assert probe.reference["logits"].shape == (5, 10)
    new = {"c2.w": q(probe.weight("c2.w"), 2, 0)}
    runs = [ort_run(m, {"x": inputs["x"][i:i + 1]})[0]
            for m in (model, replaced(model, new)) for i in range(5)]
    ref, cand = np.concatenate(runs[:5]), np.concatenate(runs[5:])
    assert probe.measure(new).score == pytest.approx(kl_by_hand(ref, cand), rel=1e-3)


def test_external_data_model_loaded(tmp_path):
    from dfmpc_onnx.model.modelio import load_model

    model = conv_net()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    loaded = load_model(path)
    inputs = synthetic_inputs(loaded, n=4)
    probe = FidelityProbe(loaded, ["c1.w"], inputs)
    assert probe.measure({"c1.w": probe.weight("c1.w")}).score == 0.0
    assert probe.measure({"c1.w": q(probe.weight("c1.w"), 2, 0)}).score > 0.0


def test_probability_outputs_use_kl_of_the_rows_themselves():
    model = conv_net()
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10]))
    inputs = synthetic_inputs(model, n=16)
    probe = FidelityProbe(model, ["c2.w"], inputs)
    new = {"c2.w": q(probe.weight("c2.w"), 2, 0)}
    fid = probe.measure(new)
    p = ort_run(model, inputs)[0].astype(np.float64)
    r = ort_run(replaced(model, new), inputs)[0].astype(np.float64)
    assert fid.metric == {"probs": "kl-prob"}
    assert fid.score == pytest.approx(np.mean(np.sum(p * np.log(p / r), axis=1)), rel=1e-3)


def test_unknown_weight_and_bad_shape_are_refused(conv_probe):
    _, _, probe = conv_probe
    with pytest.raises(ValueError, match="not one of the probed weights"):
        probe.measure({"bn.s": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        probe.measure({"c1.w": np.ones((8, 3), np.float32)})


def test_non_finite_candidates_are_infinitely_far():
    from dfmpc_onnx.measure.fidelity import compare

    ref = [{"logits": np.ones((2, 3), np.float32), "map": np.ones((2, 4, 4), np.float32)}]
    bad = [{"logits": np.full((2, 3), np.nan, np.float32), "map": np.full((2, 4, 4), np.inf, np.float32)}]
    fid = compare(ref, bad, ["logits", "map"])
    assert fid.divergence == {"logits": float("inf"), "map": float("inf")}


def test_inputs_are_cast_to_the_declared_type(conv_probe):
    model, inputs, probe = conv_probe
    as64 = FidelityProbe(model, ["c2.w"], {"x": inputs["x"].astype(np.float64)})
    np.testing.assert_array_equal(as64.reference["logits"], probe.reference["logits"])


def test_fewer_segments_than_layers_give_the_same_figures(conv_probe):
    """With max_segments=1 every layer shares one segment (the variant feeds the float weights of
    the layers not under trial): same divergence as one segment per layer."""
    model, inputs, probe = conv_probe
    coarse = FidelityProbe(model, list(CONV_AXES), inputs, max_segments=1)
    assert len(coarse._segments) == 1 and len(probe._segments) == 3
    for name, axis in CONV_AXES.items():
        new = {name: q(probe.weight(name), 2, axis)}
        assert coarse.measure(new).score == pytest.approx(probe.measure(new).score, rel=1e-4)


def test_fixed_plan_fidelity_is_measured_on_a_model_with_a_fixed_batch_of_one():
    from tinymodels import conv_net

    from dfmpc_onnx import convert
    from dfmpc_onnx.options import ConvertOptions

    model = conv_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    _, report = convert(model, ConvertOptions(low_bits=4, correction="none", fidelity_samples=4))
    assert report.fidelity["samples"] == 4 and report.fidelity["top1_agreement"] is not None


# -- memory: what the probe keeps and where (benchmarks/memory.py) ------------------------------


def _scores(probe: FidelityProbe, trials: list[dict]) -> list[float]:
    return [probe.measure(t).score for t in trials]


def _trials(probe: FidelityProbe, lazy: bool = False) -> list[dict]:
    """One layer at a time, then all of them (a whole plan), at 3 bits."""
    one = [{n: q(probe.weight(n), 3, a)} for n, a in CONV_AXES.items()]
    every = {n: q(probe.weight(n), 3, a) for n, a in CONV_AXES.items()}
    if lazy:
        every = {n: (lambda v=v: v) for n, v in every.items()}
    return [*one, every]


def test_cached_activations_in_files_and_small_runs_measure_the_same(monkeypatch):
    """Cached activations written to files (CACHE_BYTES 0), runs of a few samples (RUN_BYTES),
    lazy candidates written to files between runs: memory changes, not the measurement."""
    import dfmpc_onnx.measure.fidelity as fidelity

    model = conv_net()
    inputs = synthetic_inputs(model, n=12, seed=2)
    plain = FidelityProbe(model, list(CONV_AXES), inputs)
    want = _scores(plain, _trials(plain))
    assert len(plain.runs()[0]) == 1 and all(s > 0 for s in want)
    monkeypatch.setattr(fidelity, "WHOLE_MODEL_BYTES", 0)  # measured as a large model is
    monkeypatch.setattr(fidelity, "CACHE_BYTES", 0)
    monkeypatch.setattr(fidelity, "RUN_BYTES", 3 * 3 * 8 * 8 * 4)  # the input: 3 samples a run
    monkeypatch.setattr(fidelity, "LARGE_TENSOR_BYTES", 0)  # every lazy candidate to a file
    lean = FidelityProbe(model, list(CONV_AXES), inputs)
    assert len(lean.runs()[0]) == 4
    stored = [v for c in lean._cache for k, v in c.items() if isinstance(v, fidelity._Stored)]
    assert stored  # the cache is in files
    np.testing.assert_allclose(_scores(lean, _trials(lean, lazy=True)), want, rtol=1e-5)
    np.testing.assert_allclose(_scores(lean, _trials(lean)), want, rtol=1e-5)
    folder = stored[0].path.parent
    # the trials' files are gone, the cache's stay
    kept = sorted(p.name for p in folder.iterdir() if p.name != ".dfmpc-owner")  # owner: modelio
    assert kept == sorted(v.path.name for v in stored)


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_a_probe_on_other_inputs_measures_whole_models(monkeypatch, large):
    """On other inputs: a large model's probe shares the sessions (no second copy of the
    weights in ONNX Runtime), a small one's runs as one segment; both measure what a new probe
    on those inputs measures."""
    import dfmpc_onnx.measure.fidelity as fidelity

    if large:
        monkeypatch.setattr(fidelity, "WHOLE_MODEL_BYTES", 0)
    model = conv_net()
    probe = FidelityProbe(model, list(CONV_AXES), synthetic_inputs(model, n=8, seed=1))
    other_inputs = synthetic_inputs(model, n=20, seed=5)
    other = probe.on_inputs(other_inputs)
    fresh = FidelityProbe(model, list(CONV_AXES), other_inputs)
    alone = FidelityProbe(model, list(CONV_AXES), other_inputs, cache_segments=False)
    if large:
        assert other._segments is probe._segments  # the same ORT sessions
    else:
        assert len(other._segments) == 1 and len(probe._segments) > 1
    assert set(other._cache[0]) == {"x", "logits"}  # only the inputs (and outputs) cached
    want = _scores(fresh, _trials(fresh))
    np.testing.assert_allclose(_scores(other, _trials(other, lazy=True)), want, rtol=1e-5)
    np.testing.assert_allclose(_scores(alone, _trials(alone)), want, rtol=1e-5)
    np.testing.assert_allclose(other.reference["logits"], fresh.reference["logits"], rtol=1e-5, atol=1e-6)


def test_the_probe_keeps_few_decoded_weights(monkeypatch):
    import dfmpc_onnx.measure.fidelity as fidelity

    monkeypatch.setattr(fidelity, "WEIGHT_CACHE_BYTES", 1)
    model = conv_net()
    probe = FidelityProbe(model, list(CONV_AXES), synthetic_inputs(model, n=4, seed=1))
    for name in CONV_AXES:
        np.testing.assert_array_equal(probe.weight(name), numpy_helper.to_array(
            next(t for t in model.graph.initializer if t.name == name)))
    assert list(probe._recent) == ["fc.w"] and set(probe._index._arrays) <= {"fc.w"}


def test_a_probe_based_on_a_plan_measures_what_the_plain_probe_measures(conv_probe):
    """``based_on`` (choose-plan's refinement): its cache ran the base plan, yet ``measure``
    still means the float model with exactly the replacements given; the same figures bit for
    bit as the plain probe, for plans near the base, a base layer reverted to float, the base
    itself and a plan sharing nothing with it. Also against ONNX Runtime on a model built here."""
    model, inputs, probe = conv_probe
    base = {n: q(probe.weight(n), 4, a) for n, a in CONV_AXES.items()}
    based = probe.based_on(base)
    plans = [dict(base),
             base | {"fc.w": q(probe.weight("fc.w"), 8, 0)},  # the last layer raised
             base | {"c1.w": q(probe.weight("c1.w"), 2, 0)},  # the first layer changed
             {k: v for k, v in base.items() if k != "c2.w"},  # a base layer back to float
             {"c2.w": q(probe.weight("c2.w"), 3, 0)},  # nothing of the base
             {}]
    for plan in plans:
        assert based.measure(plan) == probe.measure(plan), sorted(plan)
    new = base | {"fc.w": q(probe.weight("fc.w"), 8, 0)}
    ref = ort_run(model, inputs)[0]
    cand = ort_run(replaced(model, new), inputs)[0]
    assert based.measure(new).divergence["logits"] == pytest.approx(kl_by_hand(ref, cand), rel=1e-3)
    assert based.measure({}).score == 0.0  # the float model, though the cache ran the base
    assert probe.measure({}).score == 0.0  # and the plain probe's cache is untouched
