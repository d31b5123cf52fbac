"""--activations int8: the emitted pattern fuses into ONNX Runtime's integer kernels, the integers
it computes match a NumPy reference of the same quantization, ranges are deterministic, and the
clip rules and grids are what their definitions say."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tinymodels import conv_net, make_model

from dfmpc_onnx import convert
from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.activation_headroom import choose_headroom, merge_samples
from dfmpc_onnx.measure.calibrate import (
    _SHRINK,
    ActivationSamples,
    QuantParams,
    TensorSamples,
    clip_range,
    quant_params,
)
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.quant.activation_qdq import plan_activations
from dfmpc_onnx.validate.sessions import has_activation_qdq

A8 = ConvertOptions(activations="int8", fidelity_samples=8)  # the default: W7A8


def residual_net(seed: int = 0, c: int = 8) -> onnx.ModelProto:
    """input -> conv0 -> Relu -> [conv1 -> Relu -> conv2] + skip -> Relu -> MaxPool
    -> GlobalAveragePool -> Flatten -> fc: every pattern ResNets need."""
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}

    def conv(x: str, name: str, cin: int) -> onnx.NodeProto:
        inits[f"{name}.w"] = (rng.standard_normal((c, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits[f"{name}.b"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}_out"], name=name,
                                pads=[1, 1, 1, 1])

    inits["fc.w"] = (rng.standard_normal((10, c)) / np.sqrt(c)).astype(np.float32)
    inits["fc.b"] = (0.1 * rng.standard_normal(10)).astype(np.float32)
    nodes = [conv("input", "conv0", 3), helper.make_node("Relu", ["conv0_out"], ["r0"], name="relu0"),
             conv("r0", "conv1", c), helper.make_node("Relu", ["conv1_out"], ["r1"], name="relu1"),
             conv("r1", "conv2", c), helper.make_node("Add", ["conv2_out", "r0"], ["sum"], name="add"),
             helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["pool"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return make_model(
        nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)


def optimized_ops(model: onnx.ModelProto, tmp_path) -> collections.Counter:
    """The operators ONNX Runtime runs after its default graph optimisations."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def default_session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# -- the emitted pattern fuses --------------------------------------------------------------------


def test_every_layer_runs_on_an_integer_kernel(tmp_path):
    q, report = convert(residual_net(), A8)
    ops = optimized_ops(q, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["Conv"] == 0
    assert ops["QLinearAdd"] == 1 and ops["Add"] == 0
    assert ops["QGemm"] == 1 and ops["Gemm"] == 0
    assert ops["QLinearGlobalAveragePool"] == 1
    assert ops["Relu"] == 0  # dropped: the Q before them clamps at 0
    # One QuantizeLinear left: the float model input; the float output comes out of QGemm.
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0
    assert report.activations["tensors"] > 0 and report.activations["clip"] in ("minmax", "percentile", "mse")
    assert has_activation_qdq_model(q)


def has_activation_qdq_model(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_weights_are_int8_with_zero_points_and_biases_int32():
    q, _ = convert(residual_net(), A8)
    inits = {t.name: t for t in q.graph.initializer}
    for node in q.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w_dq = next(n for n in q.graph.node if n.output[0] == node.input[1])
            assert inits[w_dq.input[0]].data_type == TensorProto.INT8
            assert inits[w_dq.input[2]].data_type == TensorProto.INT8
            b_dq = next(n for n in q.graph.node if n.output[0] == node.input[2])
            assert inits[b_dq.input[0]].data_type == TensorProto.INT32
            # The bias scale is input scale x weight scale, what QLinearConv computes with.
            x_dq = next(n for n in q.graph.node if n.output[0] == node.input[0])
            x_scale = numpy_helper.to_array(inits[x_dq.input[1]])
            w_scale = numpy_helper.to_array(inits[w_dq.input[1]])
            np.testing.assert_array_equal(numpy_helper.to_array(inits[b_dq.input[1]]),
                                          (x_scale * w_scale).astype(np.float32))
    assert not any(t.data_type == TensorProto.FLOAT and len(t.dims) and t.name.endswith(".b")
                   for t in q.graph.initializer)  # float biases dropped


def test_int8_activation_type_is_symmetric_and_keeps_relu(tmp_path):
    q, _ = convert(residual_net(), ConvertOptions(activations="int8", activation_type="int8",
                                                  fidelity_samples=8))
    inits = {t.name: t for t in q.graph.initializer}
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in qs:
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8 and numpy_helper.to_array(zp) == 0
    assert sum(n.op_type == "Relu" for n in q.graph.node) == 3  # a symmetric grid does not clamp
    onnx.checker.check_model(q, full_check=True)
    # ORT's CPU kernels convert int8 activations to uint8 where they can (TensorRT takes them as
    # they are; no GPU here): the model must run and stay close to the float one.
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    a = default_session(residual_net()).run(None, {"input": x})[0]
    b = default_session(q).run(None, {"input": x})[0]
    assert np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


# -- the integers match a NumPy reference ---------------------------------------------------------


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3, stride 1, pad 1, float64, by explicit windows."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N,C,H,W,3,3
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def _q(x: np.ndarray, p: QuantParams) -> np.ndarray:
    lo, hi = (0, 255) if p.dtype == "uint8" else (-128, 127)
    return np.clip(np.rint(x / np.float64(np.float32(p.scale))) + p.zero_point, lo, hi)


def _dq(q: np.ndarray, p: QuantParams) -> np.ndarray:
    return (q - p.zero_point) * np.float64(np.float32(p.scale))


def test_integer_outputs_match_a_numpy_reference(tmp_path):
    """conv0 -> Relu -> conv1, run by ORT's QLinearConv; the uint8 output of conv1 equals the
    same quantization computed in NumPy (float64 convolution of the dequantized integers, int32
    bias, one rounding), to one step where ORT's fixed-point requantization rounds a tie apart."""
    q, _ = convert(residual_net(), A8)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    nodes = {n.name: n for n in q.graph.node}
    producer = {o: n for n in q.graph.node for o in n.output}

    def params(q_node: onnx.NodeProto) -> QuantParams:
        zp = inits[q_node.input[2]]
        return QuantParams(float(inits[q_node.input[1]]), int(zp), zp.dtype.name)

    def weights(conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        w_dq, b_dq = producer[conv.input[1]], producer[conv.input[2]]
        scale = inits[w_dq.input[1]].astype(np.float64)[:, None, None, None]
        w = inits[w_dq.input[0]].astype(np.float64) * scale
        b = inits[b_dq.input[0]].astype(np.float64) * inits[b_dq.input[1]].astype(np.float64)
        return w, b

    q_in = producer[producer[nodes["conv0"].input[0]].input[0]]  # DQ <- Q(input)
    conv1 = nodes["conv1"]
    q_mid = producer[producer[conv1.input[0]].input[0]]  # the grid conv1 reads (conv0's, relu'd)
    q_out = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv1.output[0])
    probe = onnx.ModelProto()
    probe.CopyFrom(q)
    probe.graph.output.append(helper.make_tensor_value_info(q_out.output[0], TensorProto.UINT8, None))
    assert optimized_ops(probe, tmp_path)["QLinearConv"] == 3  # still integer kernels

    x = np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)
    got = default_session(probe).run([q_out.output[0]], {"input": x})[0].astype(np.int64)

    p_in, p_mid, p_out = params(q_in), params(q_mid), params(q_out)
    w0, b0 = weights(nodes["conv0"])
    h = _q(_conv2d(_dq(_q(x.astype(np.float64), p_in), p_in), w0, b0), p_mid)  # Relu: zp 0 clamps
    assert p_mid.zero_point == 0
    w1, b1 = weights(conv1)
    want = _q(_conv2d(_dq(h, p_mid), w1, b1), p_out).astype(np.int64)
    diff = np.abs(got - want)
    assert diff.max() <= 1
    assert np.mean(diff == 0) > 0.99


# -- ranges and clip rules ------------------------------------------------------------------------


def test_conversion_is_deterministic():
    a, ra = convert(residual_net(), A8)
    b, rb = convert(residual_net(), A8)
    assert a.SerializeToString() == b.SerializeToString()
    assert ra.activations == rb.activations


def test_activation_samples_are_exact_at_the_extremes_and_seeded():
    model = residual_net()
    x = {"input": np.random.default_rng(1).standard_normal((6, 3, 8, 8)).astype(np.float32)}
    s1 = ActivationSamples(model, ["r0", "sum"], x, keep=500, seed=4)
    s2 = ActivationSamples(model, ["r0", "sum"], x, keep=500, seed=4)
    so = ort.SessionOptions()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.ValueInfoProto(name="r0"), onnx.ValueInfoProto(name="sum")])
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    r0, total = sess.run(["r0", "sum"], x)
    assert s1.samples["r0"].lo == float(r0.min()) and s1.samples["r0"].hi == float(r0.max())
    assert s1.samples["sum"].lo == float(total.min()) and s1.samples["sum"].hi == float(total.max())
    assert s1.samples["r0"].values.size <= 500
    np.testing.assert_array_equal(s1.samples["sum"].values, s2.samples["sum"].values)
    assert set(s1.samples["r0"].values.tolist()) <= set(r0.ravel().tolist())


def test_quant_params_represent_zero_and_cover_the_range():
    for lo, hi in ((-1.0, 3.0), (0.5, 2.0), (-4.0, -1.0), (0.0, 0.0)):
        p = quant_params(lo, hi, "uint8")
        assert 0 <= p.zero_point <= 255
        assert p.quantize_dequantize(np.array([0.0], np.float32))[0] == 0.0
        span = np.array([min(lo, 0.0), max(hi, 0.0)], np.float32)
        np.testing.assert_allclose(p.quantize_dequantize(span), span, atol=p.scale / 2 + 1e-7)
    s = quant_params(-1.0, 3.0, "int8")
    assert s.zero_point == 0 and s.scale == pytest.approx(3.0 / 127)


def test_mse_rule_is_the_best_of_its_ladder_by_brute_force():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(5000), [40.0]]).astype(np.float32)  # one outlier
    s = TensorSamples(float(v.min()), float(v.max()), v)
    lo, hi = clip_range(s, "mse")
    errors = {f: float(np.mean((quant_params(s.lo * f, s.hi * f).quantize_dequantize(v) - v) ** 2))
              for f in _SHRINK}
    best = min(errors, key=errors.get)
    assert (lo, hi) == pytest.approx((s.lo * best, s.hi * best))
    assert errors[best] < errors[1.0]  # the outlier made min-max worse


def test_percentile_rule_pins_zero_for_non_negative_tensors():
    v = np.abs(np.random.default_rng(0).standard_normal(100000)).astype(np.float32)
    lo, hi = clip_range(TensorSamples(0.0, float(v.max()), v), "percentile")
    assert lo == 0.0 and hi == pytest.approx(float(np.percentile(v, 99.99)))
    assert hi < v.max()


# -- which tensors -------------------------------------------------------------------------------


def test_plan_shares_grids_through_maxpool_and_relu_but_not_a_branching_relu_input():
    model = residual_net()
    names = {o for n in model.graph.node for o in n.output} | {"input"}
    plan = plan_activations(model.graph, ["conv0", "conv1", "conv2", "fc"], names)
    assert "logits" not in plan.tensors  # graph outputs stay float
    assert plan.group["sum"] == plan.group["r2"] == plan.group["pool"]  # Relu, MaxPool pass it on
    assert plan.group["gap"] != plan.group["pool"]  # averaging makes a range of its own
    assert plan.group["conv0_out"] == plan.group["r0"]  # relu0 is conv0_out's only reader
    assert plan.clamps["r1"] == "conv1_out"
    assert "conv0_out" not in plan.range_from[plan.group["r0"]]  # the clamp's input sets no range


def test_float_layers_get_no_activation_grids():
    model = residual_net()
    names = {o for n in model.graph.node for o in n.output} | {"input"}
    plan = plan_activations(model.graph, [], names)
    assert plan.tensors == []


# -- options --------------------------------------------------------------------------------------


def test_default_is_w7a8_for_uint8_w8a8_for_int8_and_target_bits_plans_low_grids():
    o = ConvertOptions(activations="int8")
    assert (o.method, o.low_bits, o.high_bits) == ("pairs", 7, 7)  # no U8S8 saturation on AVX2
    o = ConvertOptions(activations="int8", activation_type="int8")
    assert (o.method, o.low_bits, o.high_bits) == ("pairs", 8, 8)
    q, report = convert(conv_net(c=16), ConvertOptions(activations="int8", target_bits=4,
                                                        fidelity_samples=8))
    bits = {e.bits for e in report.layers if e.bits}
    assert min(bits) < 8
    q_types = {t.data_type for t in q.graph.initializer if t.name.endswith("_W_q")}
    assert q_types == {TensorProto.INT8}
    assert any("int8 containers" in n for n in report.notes)
    assert all(e.bits <= 7 for e in report.layers if e.bits)  # the widest grid is 7 bits here


def test_weights_on_all_of_int8_with_uint8_activations_are_flagged():
    _, report = convert(residual_net(), ConvertOptions(activations="int8", low_bits=8,
                                                       fidelity_samples=8))
    assert any("saturate" in n for n in report.notes)
    _, report = convert(residual_net(), A8)
    assert not any("saturate" in n for n in report.notes)


@pytest.mark.parametrize("quantizer", ["asym", "block32"])
def test_grids_integer_kernels_cannot_read_are_refused(quantizer):
    with pytest.raises(OptionsError, match="integer kernels"):
        ConvertOptions(activations="int8", quantizer=quantizer)


def test_validate_keeps_qdq_only_for_activation_models(tmp_path):
    model = residual_net()
    w8a8, _ = convert(model, A8)
    weight_only, _ = convert(model, ConvertOptions(low_bits=8, fidelity_samples=0))
    onnx.save(w8a8, tmp_path / "a.onnx")
    onnx.save(weight_only, tmp_path / "w.onnx")
    assert has_activation_qdq(tmp_path / "a.onnx") and not has_activation_qdq(tmp_path / "w.onnx")
    from dfmpc_onnx.validate import validate

    onnx.save(model, tmp_path / "f.onnx")
    assert validate(tmp_path / "f.onnx", tmp_path / "a.onnx", repeats=1).disable_quant_qdq is False
    assert validate(tmp_path / "f.onnx", tmp_path / "w.onnx", repeats=1).disable_quant_qdq is True


def test_a_clamp_read_by_a_subgraph_is_kept_and_the_model_runs():
    import awkward_models

    q, report = convert(awkward_models.with_if(), A8)
    onnx.checker.check_model(q, full_check=True)
    assert report.activations["tensors"] > 0
    default_session(q)  # loads: the If body still finds the tensor it reads


def test_a_model_ort_cannot_run_is_refused_in_one_line():
    import awkward_models

    from dfmpc_onnx.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="weight-only"):
        convert(awkward_models.custom_domain(), A8)


def test_bn_rule_takes_ranges_from_kept_batchnorm_statistics():
    model = conv_net(bn=True)
    q, report = convert(model, ConvertOptions(activations="int8", activation_clip="bn",
                                              fidelity_samples=8))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    bn = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # conv1 (bn1 folded, writing bn1_out) -> Relu: one grid, [0, max(beta + 6 |gamma|)].
    hi = float(np.max(bn["bn1.b"].astype(np.float64) + 6 * np.abs(bn["bn1.g"].astype(np.float64))))
    scale = float(inits["bn1_out_act_scale"])  # the Relu is gone: its grid clamps
    assert scale == pytest.approx(np.float32(hi / 255), rel=1e-6)
    assert any("BatchNormalization statistics" in n for n in report.notes)


@pytest.mark.parametrize("seed", [0, 2])  # seed 0: bn wins (over mse); seed 2: minmax stays
def test_auto_tries_kept_bn_ranges_over_the_winning_rule_and_keeps_the_closer(seed):
    model = conv_net(seed=seed, bn=True)
    q, report = convert(model, A8)
    act = report.activations
    scores = act["clip_scores"]
    assert set(scores) == {"minmax", "percentile", "mse", "bn"}
    best = min(("minmax", "percentile", "mse"), key=scores.get)
    assert act["clip"] == ("bn" if scores["bn"] < scores[best] else best)
    assert act["clip_base"] == (best if act["clip"] == "bn" else None)
    # The grids are those of the rules it names: a grid with BN statistics (bn1_out) takes
    # them under bn, one without (gap) the winning synthetic rule's, as if forced.
    forced, _ = convert(model, ConvertOptions(activations="int8", fidelity_samples=8,
                                              activation_clip=best))
    assert _act_scale(q, "gap") == _act_scale(forced, "gap")
    bn = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    from_bn = np.float32(np.max(bn["bn1.b"] + 6 * np.abs(bn["bn1.g"])) / 255)
    if act["clip"] == "bn":
        assert _act_scale(q, "bn1_out") == pytest.approx(from_bn, rel=1e-6)
        assert any(f"others from the synthetic inputs' {best}" in n for n in report.notes)
    else:
        assert _act_scale(q, "bn1_out") == _act_scale(forced, "bn1_out")
    _, folded = convert(conv_net(seed=seed), A8)  # no kept BN: nothing to try
    assert "bn" not in folded.activations["clip_scores"]


def test_a_model_with_a_fixed_batch_of_one_is_calibrated_run_by_run():
    model = residual_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    q, report = convert(model, A8)
    assert report.activations["tensors"] > 0 and report.fidelity["top1_agreement"] is not None
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert default_session(q).run(None, {"input": x})[0].shape == (1, 10)


def _act_scale(model: onnx.ModelProto, tensor: str) -> float:
    return float(numpy_helper.to_array(next(t for t in model.graph.initializer
                                            if t.name == f"{tensor}_act_scale")))


def test_headroom_is_measured_between_one_and_the_option_on_a_kind_left_out():
    model = residual_net()
    one, r1 = convert(model, ConvertOptions(activations="int8", activation_clip="minmax",
                                            activation_headroom=1.0, fidelity_samples=8))
    assert r1.activations["calibration_kinds"] == ["smooth"] and r1.activations["headroom"] == 1
    fixed, rf = convert(model, ConvertOptions(activations="int8", activation_clip="minmax",
                                              activation_headroom=2.0, fidelity_samples=8))
    assert rf.activations["calibration_kinds"] == ["smooth"] and rf.activations["headroom"] == 2
    assert _act_scale(fixed, "input") == _act_scale(one, "input")
    for t in ("conv0_out", "conv2_out", "sum"):  # conv0_out carries relu0's grid
        assert _act_scale(fixed, t) == pytest.approx(2 * _act_scale(one, t), rel=1e-6)
    two, r2 = convert(model, ConvertOptions(activations="int8", activation_clip="minmax",
                                            activation_headroom=2.0, fidelity_samples=8,
                                            activation_headroom_rule="measured"))
    act = r2.activations
    assert act["calibration_kinds"] == ["smooth", "gaussian", "uniform"]
    scores = {float(h): v for h, v in act["headroom_scores"].items()}
    assert sorted(scores) == pytest.approx([1.0, 2 ** 0.5, 2.0])
    assert all(len(v) == 3 for v in scores.values())
    assert act["headroom"] == choose_headroom(scores)
    # The union of three kinds is at least as wide as one kind's range, and the headroom widens it.
    for t in ("conv2_out", "sum"):
        assert _act_scale(two, t) >= act["headroom"] * _act_scale(one, t) * (1 - 1e-6)


def test_merged_samples_are_the_union_and_headroom_ties_go_to_the_finer_grid():
    a = TensorSamples(-1.0, 2.0, np.array([0.5], np.float32))
    b = TensorSamples(-3.0, 1.0, np.array([0.25, 0.75], np.float32))

    class Fake:
        tensors = ["t"]

        def __init__(self, s):
            self.samples = {"t": s}

    m = merge_samples([Fake(a), Fake(b)])["t"]
    assert (m.lo, m.hi) == (-3.0, 2.0) and sorted(m.values.tolist()) == [0.25, 0.5, 0.75]
    # fold 0 best at 1 (ratios 1, 2, 4), fold 1 best at 3 (ratios 3, 1.5, 1): means 2, 1.75, 2.5
    assert choose_headroom({1.0: [1.0, 3.0], 2.0: [2.0, 1.5], 3.0: [4.0, 1.0]}) == 2.0
    assert choose_headroom({1.0: [1.0], 3.0: [1.0]}) == 1.0


def test_a_clip_keeps_its_bounds_and_is_dropped_only_where_the_grid_clamps_the_same():
    q, _ = convert(conv_net(act="ReLU6"), ConvertOptions(activations="int8", fidelity_samples=8,
                                                         activation_headroom=100.0))
    assert not any(n.op_type == "Clip" for n in q.graph.node)  # uint8 from 0: the Q clamps
    for t in ("conv0_out", "conv1_out", "conv2_out"):
        # However wide the headroom, the grid stops at the Clip's 6: nothing above 6 survives it.
        assert _act_scale(q, t) * 255 <= 6.0 * (1 + 1e-6)
    q, _ = convert(conv_net(act="ReLU6"), ConvertOptions(activations="int8", fidelity_samples=8))
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    a = default_session(conv_net(act="ReLU6")).run(None, {"input": x})[0]
    b = default_session(q).run(None, {"input": x})[0]
    assert np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b) > 0.999


def test_a_clip_with_a_computed_bound_keeps_its_own_grid():
    model = conv_net(act="ReLU6")
    # act0's upper bound becomes computed from the input: unknown to the converter.
    model.graph.node.insert(0, helper.make_node("ReduceMax", ["input"], ["input_max"],
                                                name="input_max", keepdims=0))
    model.graph.node.insert(1, helper.make_node("Max", ["input_max", "act0.hi"],
                                                ["act0.hi_computed"], name="hi_max"))
    clip = next(n for n in model.graph.node if n.name == "act0")
    clip.input[2] = "act0.hi_computed"
    q, _ = convert(model, ConvertOptions(activations="int8", fidelity_samples=8))
    assert sum(n.op_type == "Clip" for n in q.graph.node) == 1  # act0 kept, the others dropped
    onnx.checker.check_model(q, full_check=True)


def test_an_assumed_input_range_is_named_with_its_grid_and_a_stated_one_is_not():
    import dataclasses

    model = residual_net()
    q, report = convert(model, A8)
    note = next(n for n in report.notes if "assume a normalised input" in n)
    x = model.graph.input[0].name
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    quant = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == x)
    scale, zp = float(inits[quant.input[1]]), int(inits[quant.input[2]])
    # The grid the note gives is the one written: QuantizeLinear's 0..255 mapped back.
    assert f"{x} {(0 - zp) * scale:.3g}..{(255 - zp) * scale:.3g}" in note
    _, told = convert(model, dataclasses.replace(A8, input_range=(-1.0, 1.0)))
    assert not any("assume a normalised input" in n for n in told.notes)
