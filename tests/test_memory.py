"""Memory safety of a conversion: no whole-model copies where a light one does, and no
measurement that would not fit in the machine's memory."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from tinymodels import conv_net

import dfmpc_onnx.passes.measure as measure
from dfmpc_onnx.api import convert
from dfmpc_onnx.model.opset import light_copy, serialized_bytes
from dfmpc_onnx.options import ConvertOptions


def _big_conv_net() -> onnx.ModelProto:
    """conv_net with 192 channels: conv1..3 weights of 1.3 MB, over light_copy's 1 MB."""
    return conv_net(c=192)


def test_light_copy_stubs_the_large_weights_and_leaves_the_model_alone():
    model = _big_conv_net()
    before = model.SerializeToString()
    light = light_copy(model)
    assert model.SerializeToString() == before
    large = {t.name for t in model.graph.initializer if len(t.raw_data) > 1 << 20}
    assert large == {"conv1.weight", "conv2.weight", "conv3.weight"}
    for t in light.graph.initializer:
        original = next(o for o in model.graph.initializer if o.name == t.name)
        assert list(t.dims) == list(original.dims) and t.data_type == original.data_type
        assert (not t.raw_data) == (t.name in large)
    assert list(light.graph.node) == list(model.graph.node)
    assert light.opset_import == model.opset_import and light.ir_version == model.ir_version


def test_serialized_bytes_is_the_size_to_within_headers():
    model = _big_conv_net()
    assert abs(serialized_bytes(model) - model.ByteSize()) < 200


def test_probe_memory_counts_the_weights_and_the_largest_layer():
    from dfmpc_onnx.measure.fidelity import CACHE_BYTES, RUN_BYTES

    model = conv_net(c=8)
    sizes = [numpy_helper.to_array(t).nbytes for t in model.graph.initializer]
    fixed = CACHE_BYTES + 8 * RUN_BYTES
    assert measure.probe_memory(model, stored=True) == sum(sizes) + 3 * max(sizes) + fixed
    assert measure.probe_memory(model, stored=False) == 2 * sum(sizes) + 3 * max(sizes) + fixed


def test_no_measurement_when_it_would_not_fit(monkeypatch):
    """Too little memory: the default conversion still succeeds, unmeasured, and says why."""
    monkeypatch.setattr(measure, "available_memory", lambda: 1000)
    q, report = convert(conv_net(c=8), ConvertOptions())
    assert any(n.startswith("not measured: measuring needs about") for n in report.notes)
    assert not any(e.sensitivity for e in report.layers)
    monkeypatch.setattr(measure, "available_memory", lambda: None)
    _, measured = convert(conv_net(c=8), ConvertOptions())
    assert not any(n.startswith("not measured") for n in measured.notes)
    assert any(e.sensitivity for e in measured.layers)


def test_split_batches_cuts_a_dynamic_batch_into_runs():
    from dfmpc_onnx.measure.fidelity import split_batches

    model = conv_net(c=8)  # input (N, 3, 8, 8): a dynamic batch
    x = np.arange(40 * 3 * 8 * 8, dtype=np.float32).reshape(40, 3, 8, 8)
    runs = split_batches(model, {"input": x}, max_rows=16)
    assert [len(r["input"]) for r in runs] == [14, 13, 13]
    np.testing.assert_array_equal(np.concatenate([r["input"] for r in runs]), x)
    assert len(split_batches(model, {"input": x})) == 1
    assert len(split_batches(model, {"input": x[:16]}, max_rows=16)) == 1


def test_a_probe_measures_the_same_in_runs(monkeypatch):
    """Cutting the probe's inputs into runs changes memory, not the measurement."""
    import dfmpc_onnx.measure.fidelity as fidelity
    from dfmpc_onnx.measure.synthetic import synthetic_inputs

    model = conv_net(c=8)
    weights = ["conv1.weight", "conv2.weight"]
    inputs = synthetic_inputs(model, n=40, seed=3)
    scores = []
    for rows in (1000, 16, 7):
        monkeypatch.setattr(fidelity, "RUN_ROWS", rows)
        probe = fidelity.FidelityProbe(model, weights, inputs)
        assert len(probe.runs()[0]) == -(-40 // rows)
        scores.append(probe.measure({w: np.round(probe.weight(w) * 4) / 4 for w in weights}).score)
    assert scores[0] > 0
    np.testing.assert_allclose(scores[1:], scores[0], rtol=1e-5)
