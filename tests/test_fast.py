"""--fast (issue 20 s1): single-layer trials at 4 bits only, 8 bits estimated from them by weight
error, no 2-bit grids, no correction trials, fewer whole plans."""

import re

import numpy as np
import pytest
from conftest import assert_valid, run
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.passes import choose_plan


def _trials(report) -> int:
    note = next(n for n in report.notes if "single-layer trial" in n)
    return int(re.search(r"(\d+) single-layer trial", note).group(1))


def _whole_plans(report) -> int:
    note = next(n for n in report.notes if "whole plan(s) measured" in n)
    return int(note.split()[0])


@pytest.fixture
def captured(monkeypatch):
    """The Measurement choose-plan receives, kept for the test."""
    seen = {}
    original = choose_plan._allocate

    def spy(ctx, m, model):
        seen["m"], seen["ctx"] = m, ctx
        return original(ctx, m, model)

    monkeypatch.setattr(choose_plan, "_allocate", spy)
    return seen


def test_fast_runs_two_trials_a_layer_and_fewer_whole_plans(x8):
    model = conv_net(seed=3, c=16, bn=True)
    q_fast, fast = convert(model, ConvertOptions(target_bits=5, fast=True))
    _, slow = convert(model, ConvertOptions(target_bits=5))
    assert_valid(q_fast)
    measured = [e for e in fast.layers if e.sensitivity]
    assert measured and _trials(fast) == 2 * len(measured)  # the two 4-bit grids
    assert _trials(slow) > _trials(fast) and _whole_plans(slow) > _whole_plans(fast)
    assert all(2 not in e.sensitivity for e in measured)  # no 2-bit grids
    # Bias correction by the fixed rule, untried: on the low-bit layers that read a kept BN's
    # statistics, not on conv0 (it reads the graph input) nor on any 8-bit layer.
    low = {e.name: e.correction for e in measured if e.bits < 8}
    assert "bias" in low.values() and low.get("conv0", "none") == "none"
    assert {e.correction for e in measured if e.bits == 8} <= {"none"}
    assert fast.stored_bits <= 5 + 1e-9 and fast.fidelity["samples"] == 64
    assert np.isfinite(run(q_fast, x8)).all()


def test_fast_trials_are_measured_and_8_bits_is_the_trial_scaled_by_the_weight_error_ratio(captured):
    """Reference: each 4-bit candidate measured again on the same probe; the 8-bit candidate the
    4-bit max-abs trial times the squared weight error ratio, both computed here."""
    from dfmpc_onnx.options import LayerPlan
    from dfmpc_onnx.quant.layer import quantize_layer

    convert(conv_net(seed=4, c=16, bn=True), ConvertOptions(target_bits=5, fast=True))
    m, ctx = captured["m"], captured["ctx"]
    for name, cands in m.candidates.items():
        layer = m.layers[name]
        w = m.probe.weight(layer.weight).astype(np.float64)
        fours = [c for c in cands if c.bits == 4 and c.quantizer in ("maxabs", "mse", "asym", "block32")]
        assert len(fours) == 2 and fours[0].quantizer == "maxabs"
        for c in fours:
            again = m.probe.measure(m.replacement(name, LayerPlan(4, c.quantizer, c.correction), ctx))
            assert c.divergence == pytest.approx(again.score, rel=1e-9)
        e4, e8 = (quantize_layer(layer, w, LayerPlan(b, "maxabs", "none"), True,
                                   rounding=ctx.options.rounding).squared_error(w)
                  for b in (4, 8))
        eight = next(c for c in cands if c.bits == 8)
        assert eight.divergence == pytest.approx(fours[0].divergence * e8 / e4, rel=1e-9)
        assert {c.bits for c in cands} == {4, 8}


def test_fast_fixed_plan_takes_the_fixed_correction_rule_unmeasured():
    model = conv_net(seed=5, c=16, bn=True)
    q, rep = convert(model, ConvertOptions(method="pairs", low_bits=4, fast=True))
    assert_valid(q)
    assert not any("bias correction kept on" in n for n in rep.notes)  # nothing measured
    assert not any("single-layer trial" in n for n in rep.notes)
    assert rep.fidelity  # the written model's predicted fidelity is still measured
    # Kept BN gives statistics: the fixed rule corrects every quantized layer.
    assert {e.correction for e in rep.layers if e.bits} == {"bias"}


def test_fast_refuses_a_budget_only_2_bit_grids_reach_and_says_why():
    from dfmpc_onnx.errors import OptionsError

    with pytest.raises(OptionsError, match="--fast has no 2-bit grids"):
        convert(conv_net(seed=3, c=16, bn=True), ConvertOptions(target_bits=3, fast=True))


def test_fast_cli_flag(tmp_path):
    import onnx
    from click.testing import CliRunner

    from dfmpc_onnx.cli import main

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(conv_net(seed=3, c=16, bn=True), str(src))
    res = CliRunner().invoke(main, ["convert", str(src), "-o", str(dst), "--fast", "--target-bits", "5"])
    assert res.exit_code == 0, res.output
    assert dst.exists() and "--fast: measured" in res.output
