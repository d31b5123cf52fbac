"""Measurement.replacement keeps each (layer, choice)'s arrays (issue 20 s1): whole plans share most
of their layers' choices, and rounding them again for every plan cost seconds per model. The cache
must change nothing but time: the same model, bit for bit, as with no cache."""

import pytest
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.passes import measure


@pytest.fixture
def counted(monkeypatch):
    """Calls of layer_replacement per (layer, choice), counted across the conversion."""
    calls: dict = {}
    original = measure.layer_replacement

    def spy(layer, choice, ctx, inp, probe):
        calls[(layer.name, choice)] = calls.get((layer.name, choice), 0) + 1
        return original(layer, choice, ctx, inp, probe)

    monkeypatch.setattr(measure, "layer_replacement", spy)
    return calls


def _convert(options: ConvertOptions):
    q, report = convert(conv_net(seed=5, c=16, bn=True), options)
    return q.SerializeToString(), report


def test_cached_replacements_write_the_same_model_and_round_each_choice_fewer_times(counted, monkeypatch):
    options = ConvertOptions(target_bits=5)
    cached, r_cached = _convert(options)
    with_cache = sum(counted.values())
    counted.clear()
    monkeypatch.setattr(measure, "REPLACEMENT_BYTES", 0)  # nothing kept: every plan rounds again
    plain, r_plain = _convert(options)
    without = sum(counted.values())
    assert cached == plain
    assert r_cached.fidelity == r_plain.fidelity
    assert [(e.name, e.bits, e.quantizer, e.correction) for e in r_cached.layers] == \
        [(e.name, e.bits, e.quantizer, e.correction) for e in r_plain.layers]
    assert with_cache < without  # fails if the cache keeps nothing


def test_a_plan_does_not_consume_the_kept_arrays(monkeypatch):
    """_Made.take hands each array out once from its own dict: the kept dict stays whole, so a
    later plan taking the same choice gets the weight and the corrected bias again."""
    from dfmpc_onnx.options import LayerPlan

    seen = {}
    original = measure.Measurement.replacement

    def keep(self, name, choice, ctx):
        arrays = original(self, name, choice, ctx)
        seen.setdefault((name, choice), (self, ctx, dict(arrays)))
        return arrays

    monkeypatch.setattr(measure.Measurement, "replacement", keep)
    convert(conv_net(seed=5, c=16, bn=True), ConvertOptions(target_bits=4))
    assert seen
    for (name, choice), (m, ctx, first) in seen.items():
        assert isinstance(choice, LayerPlan)
        again = original(m, name, choice, ctx)
        assert set(again) == set(first)  # nothing popped from what is kept
        assert all(again[k] is first[k] for k in first)  # kept, not made again


def test_refinement_on_a_probe_based_on_the_plan_writes_what_the_plain_probe_writes(monkeypatch):
    """choose-plan refines a plan on ``FidelityProbe.based_on`` (runs from the first layer that
    differs from the plan): the written model is the one refinement on the plain probe writes."""
    from dfmpc_onnx.measure.fidelity import FidelityProbe

    used = []
    original = FidelityProbe.based_on

    def spy(self, base):
        used.append(len(base))
        return original(self, base)

    monkeypatch.setattr(FidelityProbe, "based_on", spy)
    options = ConvertOptions(target_bits=4)
    based, r_based = _convert(options)
    assert used  # the refinement ran on a based probe
    monkeypatch.setattr(FidelityProbe, "based_on", lambda self, base: self)
    plain, r_plain = _convert(options)
    assert based == plain and r_based.fidelity == r_plain.fidelity
