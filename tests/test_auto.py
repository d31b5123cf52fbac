"""The measured plan: budgets, overrides, corrections chosen by measurement, fallbacks."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_valid, run
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert, inspect_model
from dfmpc_onnx.cli import main
from dfmpc_onnx.errors import OptionsError


@pytest.mark.parametrize("target", [2.5, 3.0, 4.0, 6.0])
def test_target_bits_is_never_exceeded_and_more_bits_do_not_lose(target, x8):
    model = conv_net(seed=3, c=16, bn=True)
    q, rep = convert(model, ConvertOptions(target_bits=target))
    assert_valid(q)
    assert rep.stored_bits <= target + 1e-9
    assert rep.fidelity and rep.fidelity["samples"] == 64  # held out: 4 x 16
    assert all(e.sensitivity for e in rep.layers)  # each layer's measured curve is reported


def test_fidelity_grows_with_budget():
    model = conv_net(seed=3, c=16, bn=True)
    scores = [convert(model, ConvertOptions(target_bits=t))[1].fidelity["score"] for t in (2.5, 4, 8)]
    assert scores[0] >= scores[1] >= scores[2]


def test_default_is_measured_and_reports_predicted_fidelity(x8):
    model = conv_net(seed=1, c=16, bn=True)
    q, rep = convert(model)
    assert rep.options["method"] == "auto" and rep.fidelity["top1_agreement"] is not None
    assert any("automatic plan" in n for n in rep.notes)
    if not any("budget" in n for n in rep.notes):  # no level of the ladder held: all at 8 bits
        assert all(e.bits == 8 for e in rep.layers if e.bits)
    ref, out = run(model, x8), run(q, x8)
    assert np.isfinite(out).all() and out.shape == ref.shape


def test_a_plan_file_still_overrides_the_allocator():
    model = conv_net(seed=2, c=16, bn=True)
    rep = inspect_model(model, ConvertOptions(target_bits=6, plan={"conv2": 2, "fc": None}))
    assert rep.layer("conv2").bits == 2 and rep.layer("fc").bits is None
    assert rep.layer("fc").reason == "kept in float by the plan"


def test_measured_corrections_never_lose_to_both_none_and_all():
    from test_quant_emit import fold_bn_in_numpy

    for model in (conv_net(seed=5, c=16, bn=True), fold_bn_in_numpy(conv_net(seed=5, c=16, bn=True))):
        scores = {c: convert(model, ConvertOptions(method="pairs", correction=c,
                                                   propagated_stats=True))[1].fidelity["score"]
                  for c in ("auto", "none", "bias")}
        # Chosen on the probe's 16 inputs, reported on 16 others: there auto may lose to one
        # alternative by noise, never to both.
        assert scores["auto"] <= max(scores["none"], scores["bias"]) * (1 + 1e-6)


def test_no_measurement_falls_back_to_8_bits_and_says_so():
    _, rep = convert(conv_net(seed=1), ConvertOptions(fidelity_samples=0))
    assert {e.bits for e in rep.layers} == {8} and not rep.fidelity
    assert any("no measurement" in n for n in rep.notes)


def test_auto_refuses_fixed_plan_options():
    with pytest.raises(OptionsError, match="--method pairs"):
        ConvertOptions(method="auto", low_bits=3)
    with pytest.raises(OptionsError, match="--target-bits is for --method auto"):
        ConvertOptions(low_bits=3, target_bits=4)
    assert ConvertOptions(low_bits=3).method == "pairs" and ConvertOptions().method == "auto"


def test_cli_target_bits_input_shape_and_poor_fidelity_warning(tmp_path):
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(conv_net(seed=0, c=16, bn=True), src)
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "a.onnx"), "-q",
                             "--target-bits", "4", "--input-shape", "input=1x3x8x8", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["stored_bits"] <= 4 and rep["fidelity"]["samples"] == 64
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "b.onnx"), "-q",
                             "--low-bits", "2", "--high-bits", "2", "--correction", "none"])
    assert r.exit_code == 0
    assert "warning: poor predicted fidelity" in r.stderr


def test_statistics_the_synthetic_inputs_cannot_refute_are_not_candidates():
    """BN folded: statistics propagated from the assumed input describe the synthetic inputs
    themselves, so no measured plan corrects biases from them (unless --propagated-stats)."""
    from test_quant_emit import fold_bn_in_numpy

    folded = fold_bn_in_numpy(conv_net(seed=5, c=16, bn=True))
    for options in (ConvertOptions(target_bits=3), ConvertOptions(method="pairs")):
        _, rep = convert(folded, options)
        assert all(e.correction in (None, "none") for e in rep.layers), options


def test_the_default_level_yields_to_what_8_bits_keep():
    """A model unsure on noise: if 8 bits everywhere keep only 14 of 16 synthetic predictions, a
    plan that keeps as many is good enough; where 8 bits keep all, 0.99 still holds."""
    from dfmpc_onnx.measure.fidelity import Fidelity
    from dfmpc_onnx.passes.choose_plan import _fid_ok

    def fid(agree):
        return Fidelity({"y": 0.1}, {"y": "kl"}, 0.1, agree)

    assert not _fid_ok(fid(0.875), 0.99)
    assert _fid_ok(fid(0.875), 0.99, floor=fid(0.875))
    assert not _fid_ok(fid(0.8125), 0.99, floor=fid(0.875))
    assert not _fid_ok(fid(0.9375), 0.99, floor=fid(1.0))


def test_below_the_level_a_plan_is_judged_on_the_samples_8_bits_keep():
    """Where 8 bits everywhere keep 14 of 16, a plan with as many flips passes only if it flips
    the same borderline samples, not others the 8-bit plan keeps."""
    from dfmpc_onnx.measure.fidelity import Fidelity
    from dfmpc_onnx.passes.choose_plan import _fid_ok

    def fid(flipped):
        agrees = np.ones(16, bool)
        agrees[list(flipped)] = False
        return Fidelity({"y": 0.1}, {"y": "kl"}, 0.1, float(agrees.mean()), agrees)

    floor = fid({3, 7})
    assert _fid_ok(fid({3, 7}), 0.99, floor)
    assert _fid_ok(fid({3}), 0.99, floor)
    assert not _fid_ok(fid({3, 9}), 0.99, floor)  # as many flips, but one the 8-bit plan keeps


def test_floor_factor_lets_a_plan_within_that_many_times_the_8_bit_divergence_pass():
    """--floor-factor: only where the 8-bit plan itself misses the level, a plan passes whose
    divergence is at most factor x the 8-bit plan's; at 1 the rules of the earlier releases (the
    option's default is 2). Reference: the rule written out case by case."""
    from dfmpc_onnx.measure.fidelity import Fidelity
    from dfmpc_onnx.passes.choose_plan import _fid_ok

    def cls(agree, score):
        agrees = np.arange(64) < round(agree * 64)
        return Fidelity({"y": score}, {"y": "kl"}, score, float(agrees.mean()), agrees)

    def dense(score):
        return Fidelity({"y": score}, {"y": "rel_mse"}, score, None)

    low_floor = cls(0.3125, 0.09)  # 8 bits keep 20 of 64 (a recogniser on noise)
    plan = cls(0.15625, 0.12)  # flips 10 of the 20 the 8-bit plan keeps, moves 1.3x as much
    assert not _fid_ok(plan, 0.99, low_floor)  # factor 1: judged on the kept samples only
    assert not _fid_ok(plan, 0.99, low_floor, 1.0)
    assert _fid_ok(plan, 0.99, low_floor, 2.0)
    assert not _fid_ok(cls(0.15625, 0.19), 0.99, low_floor, 2.0)  # 2.1x
    good_floor = cls(1.0, 0.0004)  # 8 bits keep every sample: the factor has no say
    assert not _fid_ok(cls(0.953125, 0.0005), 0.99, good_floor, 100.0)
    assert _fid_ok(cls(1.0, 0.0005), 0.99, good_floor, 100.0)
    # Not class scores: error at most 0.01, or, where 8 bits exceed it, factor x theirs.
    assert _fid_ok(dense(0.009), 0.99, dense(0.001), 4.0)
    assert not _fid_ok(dense(0.011), 0.99, dense(0.001), 4.0)  # the floor is within the level
    assert _fid_ok(dense(0.05), 0.99, dense(0.05)) and not _fid_ok(dense(0.051), 0.99, dense(0.05))
    assert _fid_ok(dense(0.099), 0.99, dense(0.05), 2.0)
    assert not _fid_ok(dense(0.101), 0.99, dense(0.05), 2.0)


def test_floor_factor_below_1_is_refused(tmp_path):
    import onnx

    with pytest.raises(OptionsError, match="--floor-factor must be >= 1"):
        ConvertOptions(floor_factor=0.5)
    src = tmp_path / "m.onnx"
    onnx.save(conv_net(seed=1, c=8), src)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "q.onnx"),
                                  "--floor-factor", "0.5"])
    assert r.exit_code == 2 and "--floor-factor must be >= 1" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "q.onnx").exists()


def test_the_ladder_is_checked_on_held_out_inputs_and_the_report_says_so():
    _, report = convert(conv_net(seed=3, c=16), ConvertOptions(fidelity_samples=8))
    assert report.fidelity["samples"] == 32 and report.fidelity["inputs"] == "smooth, held out"
    assert any("32 other synthetic inputs" in n for n in report.notes)


def test_agreement_is_not_trusted_where_the_float_model_answers_one_class():
    """Random-weight networks give every synthetic input the same class: 100% agreement then
    says nothing, and the plan is judged by the error of its input-dependent outputs."""
    from dfmpc_onnx.measure.fidelity import compare
    from dfmpc_onnx.passes.choose_plan import _fid_ok

    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 10)) * 0.01
    a[:, 3] += 5.0  # class 3 for every sample
    b = a + rng.standard_normal(a.shape) * 0.005  # keeps class 3, disturbs the variation
    fid = compare([{"y": a}], [{"y": b}], ["y"])
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    assert fid.single_class and fid.top1_agreement == 1.0
    assert fid.centered_error == pytest.approx(((b_c - a_c) ** 2).sum() / (a_c ** 2).sum())
    assert fid.centered_error > 0.1 and not _fid_ok(fid, 0.99)
    small = compare([{"y": a}], [{"y": a + (b - a) * 0.01}], ["y"])
    assert _fid_ok(small, 0.99)
    assert _fid_ok(fid, 0.99, floor=fid)  # no worse than the 8-bit plan: accepted
    varied = a.copy()
    varied[:16, 3] -= 10.0  # two classes: agreement is informative again
    assert not compare([{"y": varied}], [{"y": varied}], ["y"]).single_class


def test_outputs_that_do_not_vary_keep_every_layer_at_the_widest_bits():
    """A saturated softmax gives the same one-hot answer to every input: no plan can be judged
    on such outputs, so none below 8 bits is taken, and the report says why."""
    from onnx import helper, numpy_helper

    model = conv_net(seed=1, c=16, bn=True)
    model.graph.initializer.append(numpy_helper.from_array(np.array(1e6, np.float32), "big"))
    model.graph.node.append(helper.make_node("Mul", ["logits", "big"], ["scaled"], name="scale"))
    model.graph.node.append(helper.make_node("Softmax", ["scaled"], ["probs"], name="softmax"))
    model.graph.output[0].name = "probs"
    _, rep = convert(model)
    assert rep.fidelity["single_class"] and rep.fidelity["centered_error"] == float("inf")
    assert all(e.bits == 8 for e in rep.layers if e.bits)
    assert any("did not vary over the synthetic inputs" in n for n in rep.notes)


def test_the_recipe_is_among_the_candidate_plans():
    from dfmpc_onnx.measure.allocate import Candidate, recipe
    from dfmpc_onnx.options import LayerPlan
    from dfmpc_onnx.passes.base import Context
    from dfmpc_onnx.passes.choose_plan import _Space

    names = ["a", "b", "c"]
    sizes = [100, 400, 100]
    # Layer b is cheap per weight at 2 bits alone (the knapsack takes it), never at 4 in the
    # recipe's order: the two plans differ, and both are measured.
    cands = [[Candidate(2, "maxabs", "none", s / 4, d2), Candidate(4, "block32", "none", s / 2 + 4, d4),
              Candidate(8, "maxabs", "none", s, 1e-4)]
             for s, d2, d4 in zip(sizes, (0.5, 0.01, 0.5), (0.001, 0.02, 0.002), strict=True)]
    ctx = Context(options=ConvertOptions())
    ctx.plan = {n: LayerPlan(8, "maxabs", "none") for n in names}
    space = _Space(ctx, None, names, cands, sizes, 8)
    budget = 0.85 * sum(sizes)  # a and c at 4 bits fit (508 bytes), b stays at 8
    expect = recipe(cands, sizes, budget)
    trials = space.candidates(budget)
    assert expect in trials and expect == [1, 2, 1]
    assert any(t != expect for t in trials)  # the knapsack's plan is there too


def test_the_allocators_plan_without_2_bit_grids_is_among_the_candidate_plans():
    from dfmpc_onnx.measure.allocate import Candidate, allocate
    from dfmpc_onnx.options import LayerPlan
    from dfmpc_onnx.passes.base import Context
    from dfmpc_onnx.passes.choose_plan import _Space

    names, sizes = ["a", "b", "c"], [100, 100, 100]
    # Alone, every 2-bit layer looks nearly free: the knapsack fills the budget with them.
    cands = [[Candidate(2, "maxabs", "none", s / 4, 1e-3), Candidate(4, "maxabs", "none", s / 2, 2e-3),
              Candidate(8, "maxabs", "none", s, 1e-4)] for s in sizes]
    ctx = Context(options=ConvertOptions())
    ctx.plan = {n: LayerPlan(8, "maxabs", "none") for n in names}
    space = _Space(ctx, None, names, cands, sizes, 8)
    budget = 0.6 * sum(sizes)
    full = allocate(cands, budget)
    assert any(cands[li][i].bits == 2 for li, i in enumerate(full))
    # Reference: the best plan by brute force over the 4- and 8-bit candidates within the budget.
    import itertools

    fits = [c for c in itertools.product((1, 2), repeat=3)
            if sum(cands[li][i].nbytes for li, i in enumerate(c)) <= budget]
    best = list(min(fits, key=lambda c: sum(cands[li][i].divergence for li, i in enumerate(c))))
    trials = space.candidates(budget)
    assert full in trials and best in trials
    # No 2-bit candidate at all: nothing more to measure.
    no2 = [cs[1:] for cs in cands]
    assert _Space(ctx, None, names, no2, sizes, 8)._allocate_above(2, budget) is None


def test_the_default_writes_8_bits_and_says_so_when_no_budget_keeps_the_level():
    model = conv_net(seed=3, c=16, bn=True)
    # Relative error judged, at most the 8-bit plan's own: no smaller plan can keep that.
    opts = ConvertOptions(min_agreement=1.0, output_kinds={"logits": "regression"})
    _, rep = convert(model, opts)
    assert all(e.bits == 8 for e in rep.layers if e.bits)
    assert any("no budget of" in n and "8 bits" in n for n in rep.notes)
    assert rep.fidelity["kinds"] == {"logits": "regression"}


def test_an_explicit_budget_that_misses_the_level_is_written_with_an_honest_warning(tmp_path):
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(conv_net(seed=3, c=16, bn=True), src)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "o.onnx"),
                                  "--target-bits", "4", "--min-agreement", "1",
                                  "--output-kind", "logits=regression", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["stored_bits"] <= 4 and rep["fidelity"]["target_missed"]
    assert rep["fidelity"]["passing_bits"] is None
    assert "predicted below the fidelity level" in r.stderr and "divergence" in r.stderr
    assert "no budget below 8 bits" in r.stderr and "--method auto" not in r.stderr


def test_an_8_bit_plan_that_moves_the_outputs_far_leaves_nothing_to_judge():
    from dfmpc_onnx.measure.fidelity import Fidelity
    from dfmpc_onnx.passes.choose_plan import _fid_ok, _judgeable

    near_zero_map = Fidelity({"m": 0.8}, {"m": "rel_mse"}, 0.8, None)
    assert not _judgeable(near_zero_map, 0.99)
    assert _fid_ok(near_zero_map, 0.99, near_zero_map)  # as bad as 8 bits would pass, so the
    assert _judgeable(Fidelity({"m": 1e-4}, {"m": "rel_mse"}, 1e-4, None), 0.99)  # guard decides


def test_a_target_below_what_the_smallest_grids_need_is_refused_not_written_at_8_bits() -> None:
    """An 8x8 MatMul: per-channel scales alone cost 4 bits a weight, so no grid fits 3 stored bits.
    The request is refused (exit 2 from the CLI), never answered with an 8-bit model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dfmpc_onnx import ConvertOptions, convert
    from dfmpc_onnx.errors import OptionsError

    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    with pytest.raises(OptionsError, match="below what the smallest grids"):
        convert(model, ConvertOptions(target_bits=3))


def test_wider_blocks_are_candidates_estimated_from_the_block32_trial():
    from onnx import numpy_helper

    from dfmpc_onnx.model.graph import GraphIndex
    from dfmpc_onnx.model.layers import as_linear_layer
    from dfmpc_onnx.options import LayerPlan
    from dfmpc_onnx.passes.base import Context
    from dfmpc_onnx.passes.measure import _wider_block_errors
    from dfmpc_onnx.quant.layer import quantize_layer

    model = conv_net(seed=2, c=160)
    index = GraphIndex(model.graph)
    ctx = Context(options=ConvertOptions())
    done = 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        layer, _ = as_linear_layer(node, index)
        w = numpy_helper.to_array(index.initializers[layer.weight])
        est = _wider_block_errors(ctx, layer, w, [(4, "maxabs"), (4, "block32")])
        fan_in = w.shape[1]
        if fan_in <= 32:  # one block either way: nothing wider to estimate
            assert est.get((4, "block32"), {}) == {}
            continue
        assert set(est[(4, "block32")]) == {"block64", "block128"} and (4, "maxabs") not in est
        base = quantize_layer(layer, w, LayerPlan(4, "block32", "none"), True,
                              rounding="balanced").squared_error(w)
        for grid, (ratio, nbytes) in est[(4, "block32")].items():
            qt = quantize_layer(layer, w, LayerPlan(4, grid, "none"), True, rounding="balanced")
            assert ratio == pytest.approx(qt.squared_error(w) / base) and ratio >= 1.0
            assert nbytes == pytest.approx(qt.ideal_bytes("packed", w.dtype.itemsize))
            assert nbytes < quantize_layer(layer, w, LayerPlan(4, "block32", "none"), True).ideal_bytes(
                "packed", w.dtype.itemsize)
        done += 1
    assert done

