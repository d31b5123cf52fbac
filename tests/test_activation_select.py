"""Which activations stay float (issue 23): the noise each grid adds matches a NumPy reference,
the output-aware divergence and the stopping rule are what their definitions say, and on a model
with one grid ruined by an outlier channel that grid, and only it, stays float and is reported."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tinymodels import make_model

from dfmpc_onnx import convert
from dfmpc_onnx.measure.activation_select import (
    choose_float_count,
    float_budget,
    output_divergence,
    rank_groups,
    tensor_sqnr,
    without_groups,
)
from dfmpc_onnx.measure.calibrate import QuantParams
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.quant.activation_qdq import plan_activations

C = 8


def chain_net(layers: int = 16, outlier: int | None = 5, seed: int = 0) -> onnx.ModelProto:
    """input(N,C,6,6) -> [1x1 conv_i -> Relu] x layers -> GlobalAveragePool -> Flatten -> fc.
    ``outlier``: conv_i's output channel 0 gets a bias of 1000 (a constant channel, like the
    massive activations of large models) which conv_{i+1}'s bias takes back (the function is
    unchanged), behind an Add of zeros so no pair equalization can undo it: that Add's grid then
    spends its steps on channel 0, and its other channels keep almost nothing."""
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes, x = [], "input"
    for i in range(layers):
        w = rng.standard_normal((C, C, 1, 1)).astype(np.float32) * np.float32(np.sqrt(2 / C))
        b = (0.1 * rng.standard_normal(C)).astype(np.float32)
        if outlier is not None and i == outlier:
            b[0] += 1000
        if outlier is not None and i == outlier + 1:
            b -= 1000 * w[:, 0, 0, 0]
        inits[f"w{i}"], inits[f"b{i}"] = w, b
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"))
        x = f"c{i}"
        if outlier is not None and i == outlier:
            inits["zeros"] = np.zeros((1, C, 1, 1), np.float32)
            nodes.append(helper.make_node("Add", [x, "zeros"], [f"s{i}"], name=f"add{i}"))
            x = f"s{i}"
        nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    inits["fc.w"] = (rng.standard_normal((10, C)) / np.sqrt(C)).astype(np.float32)
    inits["fc.b"] = np.zeros(10, np.float32)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, 6, 6])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)


A8 = ConvertOptions(activations="int8", fidelity_samples=8, activation_float_grids=True)


def test_tensor_sqnr_matches_a_numpy_reference_of_each_grid_alone():
    model = chain_net(outlier=None, layers=3)
    x = np.random.default_rng(1).standard_normal((4, C, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(2)
    names = ["input", "c0", "r1", "c2"]
    params = {t: QuantParams(float(rng.uniform(0.005, 0.05)), int(rng.integers(0, 255)), "uint8")
              for t in names}
    params["c0"] = QuantParams(0.01, 0, "uint8")  # clamps like relu0's grid
    got = tensor_sqnr(model, {**params, "not_a_tensor": params["c0"]}, {"input": x[:2]},
                      clamped={"c0": (0.0, np.inf)})
    got_in_one = tensor_sqnr(model, params, {"input": x[:2]}, clamped={"c0": (0.0, np.inf)})
    assert sorted(got) == sorted(names) and got == got_in_one
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names[1:])
    s = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(["logits"] + names[1:], s.run(None, {"input": x[:2]}), strict=True))
    values["input"] = x[:2]
    for t in names:
        v = values[t].astype(np.float64)
        ref = np.clip(v, 0, None) if t == "c0" else v
        err = (params[t].quantize_dequantize(values[t]).astype(np.float64) - ref) ** 2
        db = []
        for c in range(v.shape[1]):  # channel by channel, the slow way
            sc, ec = ref[:, c], err[:, c]
            if np.sum(sc ** 2) > 0:
                db.append(10 * np.log10(np.sum(sc ** 2) / np.sum(ec)) if np.sum(ec) > 0 else np.inf)
        assert got[t] == pytest.approx(float(np.median(db)), rel=1e-6)


def test_output_divergence_counts_flipped_positions_and_relative_error():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 5, 3)).astype(np.float32)  # (batch, time, classes)
    b = a.copy()
    b[1, 2] = b[1, 2][::-1] * 3  # one position changes class (most likely) and value
    flips = np.count_nonzero(np.argmax(a, -1) != np.argmax(b, -1))
    rel = np.sum((a.astype(np.float64) - b) ** 2) / np.sum(a.astype(np.float64) ** 2)
    got = output_divergence([{"y": a[:1]}, {"y": a[1:]}], [{"y": b[:1]}, {"y": b[1:]}], ["y"])
    assert got == pytest.approx(flips / 10 + rel)
    dense = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)  # a map: no classes axis
    assert output_divergence([{"m": dense}], [{"m": 2 * dense}], ["m"]) == pytest.approx(1.0)
    assert output_divergence([{"y": a}], [{"y": a}], ["y"]) == 0.0


def test_choose_float_count_maximises_the_gain_net_of_two_shares_a_grid():
    # 10 groups: each float grid is charged 2 * 1.0 / 10 = 0.2.
    assert choose_float_count({0: 1.0, 1: 0.5, 2: 0.45, 4: 0.3}, 10) == 1  # nets .3, .15, -.1
    assert choose_float_count({0: 1.0, 1: 1.0, 2: 0.3, 4: 0.29}, 10) == 2  # a pair only helps together
    assert choose_float_count({0: 1.0, 1: 0.9}, 10) == 0
    assert choose_float_count({}, 10) == 0
    assert float_budget(7) == [] and float_budget(8) == [1] and float_budget(40) == [1, 2, 4]


def test_groups_rank_by_their_noisiest_member_and_leave_whole():
    model = chain_net(outlier=None, layers=3)
    q, _ = convert(model, ConvertOptions(activations="int8", fidelity_samples=8))
    src = onnx.shape_inference.infer_shapes(model)
    plan = plan_activations(src.graph, ["conv0", "conv1", "conv2", "fc"],
                            {v.name for v in src.graph.value_info} | {"input"})
    reps = list(plan.range_from)
    assert len(reps) >= 3
    members = {r: [t for t in plan.tensors if plan.group[t] == r] for r in reps}
    noisy = reps[1]
    sqnr = {t: 30.0 for t in plan.tensors}
    sqnr[members[noisy][-1]] = 5.0
    assert rank_groups(plan, sqnr)[0] == noisy
    params = {t: QuantParams(1.0, 0, "uint8") for t in plan.tensors}
    left = without_groups(plan, params, [noisy])
    assert set(left) == set(plan.tensors) - set(members[noisy])
    assert any(n.output[0].endswith("_act_dq") for n in q.graph.node)


def test_the_grid_an_outlier_ruins_stays_float_and_is_reported():
    model = chain_net()
    q, report = convert(model, A8)
    # c5 carries the constant channel into the Add (of zeros, left float: an initializer input),
    # r5 out of its ReLU: each grid crushes the other channels; only both float help.
    assert report.activations["kept_float"] == ["c5", "r5"]
    assert not any(n.input[0] in ("c5", "r5") for n in q.graph.node if n.op_type == "QuantizeLinear")
    assert any("2 of" in note and "kept float" in note and "c5, r5" in note for note in report.notes)
    div = report.activations["float_divergence"]
    assert div["2"] < div["0"] / 10


def test_a_model_without_outliers_keeps_every_grid_and_the_default_tries_none():
    _, report = convert(chain_net(outlier=None), A8)
    assert report.activations["kept_float"] == []
    _, default = convert(chain_net(), ConvertOptions(activations="int8", fidelity_samples=8))
    assert default.activations["kept_float"] == [] and default.activations["float_divergence"] == {}
