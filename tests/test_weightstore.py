"""The weight store (dfmpc_onnx/model/weightstore.py): large weights live in a file while a model is
converted. Checked against the values themselves and against the in-memory conversion."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tinymodels import conv_net

from dfmpc_onnx.api import convert, convert_file
from dfmpc_onnx.model.graph import LARGE_TENSOR_BYTES, GraphIndex
from dfmpc_onnx.model.modelio import load_model
from dfmpc_onnx.model.weightstore import ALIGN, StoredArray, WeightStore, is_stub, read, set_array
from dfmpc_onnx.options import ConvertOptions


def test_put_and_read_round_trip_every_plain_type(tmp_path):
    store = WeightStore(tmp_path)
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((3, 5)).astype(t) for t in (np.float32, np.float16, np.float64)]
    values += [rng.integers(-100, 100, (7,)).astype(t) for t in (np.int8, np.int32, np.int64)]
    stubs = [store.put(f"t{i}", v) for i, v in enumerate(values)]
    for stub, value in zip(stubs, values, strict=True):
        assert is_stub(stub) and not stub.raw_data
        offset = int(next(e.value for e in stub.external_data if e.key == "offset"))
        assert offset % ALIGN == 0  # ONNX Runtime maps aligned tensors instead of copying them
        got = read(stub)
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)


def test_stored_rows_read_only_what_is_sliced(tmp_path):
    store = WeightStore(tmp_path)
    value = np.arange(6 * 4 * 3, dtype=np.float32).reshape(6, 4, 3)
    rows = StoredArray(store.put("w", value))
    assert rows.shape == value.shape and rows.dtype == value.dtype and rows.nbytes == value.nbytes
    for key in [np.s_[0:2], np.s_[2:6, :, 1:], np.s_[5:9], np.s_[3:3], np.s_[1], np.s_[::2]]:
        np.testing.assert_array_equal(rows[key], value[key])
    np.testing.assert_array_equal(np.asarray(rows), value)
    np.testing.assert_array_equal(rows.astype(np.float64), value.astype(np.float64))


def test_take_stores_large_tensors_only_and_copies_external_data(tmp_path):
    (tmp_path / "store").mkdir()
    store = WeightStore(tmp_path / "store")
    big = np.arange(LARGE_TENSOR_BYTES // 4 + 1, dtype=np.float32)
    small = np.ones(8, np.float32)
    assert store.take(numpy_helper.from_array(small, "s")).raw_data  # stays inline
    stub = store.take(numpy_helper.from_array(big, "b"))
    np.testing.assert_array_equal(read(stub), big)
    # An input tensor in external data is copied in; the input's file is only read.
    data = tmp_path / "in.data"
    data.write_bytes(b"\x07" * 12 + big.tobytes())
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    t = TensorProto(name="e", data_type=TensorProto.FLOAT, dims=big.shape,
                    data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "in.data"), ("offset", "12"), ("length", str(big.nbytes))):
        t.external_data.add(key=key, value=value)
    np.testing.assert_array_equal(read(store.take(t, tmp_path)), big)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before


def test_set_array_goes_to_the_store_when_large(tmp_path):
    store = WeightStore(tmp_path)
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    big = np.full(LARGE_TENSOR_BYTES // 4 + 1, 0.5)  # float64, cast to the tensor's float32
    set_array(t, big, store)
    assert is_stub(t) and read(t).dtype == np.float32
    np.testing.assert_array_equal(GraphIndex(helper.make_graph([], "g", [], [], [t])).array("w"), big)
    set_array(t, np.ones(3), store)
    assert not is_stub(t) and numpy_helper.to_array(t).tolist() == [1.0, 1.0, 1.0]
    set_array(t, big, None)  # no store: inline
    assert not is_stub(t) and numpy_helper.to_array(t).size == big.size


def test_ort_maps_a_model_file_in_the_store_and_computes_the_same(tmp_path):
    model = conv_net(c=192)  # conv weights of 1.3 MB: stubs
    store = WeightStore(tmp_path)
    light = load_model(_saved(model, tmp_path / "m.onnx"), store)
    assert sum(is_stub(t) for t in light.graph.initializer) == 3
    assert light.ByteSize() < 200_000  # the weights are not in the protobuf
    path = store.model_file(light)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    so = ort.SessionOptions()
    got = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    want = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_array_equal(got[0], want[0])


def test_a_probe_on_stubs_measures_what_it_measures_in_memory(tmp_path, monkeypatch):
    """Sessions that map the store's file, and segments whose float weights are fed mapped
    (MAPPED_BYTES 0: every segment), measure what the in-memory probe measures."""
    import dfmpc_onnx.measure.fidelity as fidelity
    from dfmpc_onnx.measure.synthetic import synthetic_inputs

    model = conv_net(c=192)
    store = WeightStore(tmp_path)
    light = load_model(_saved(model, tmp_path / "m.onnx"), store)
    names = [t.name for t in model.graph.initializer if t.name.startswith("conv")]
    inputs = synthetic_inputs(model, n=6, seed=4)
    memory = fidelity.FidelityProbe(model, names, inputs)
    trials = [{n: np.round(memory.weight(n) * 8) / 8} for n in names if n.endswith("weight")]
    want = [memory.measure(t).score for t in trials]
    assert all(w > 0 for w in want)
    monkeypatch.setattr(fidelity, "WHOLE_MODEL_BYTES", 0)  # lazy candidates made per segment
    for limit in (1 << 60, 0):
        monkeypatch.setattr(fidelity, "MAPPED_BYTES", limit)
        probe = fidelity.FidelityProbe(light, names, inputs, store=store)
        inits = {t.name: t for t in light.graph.initializer}
        stubbed = [s for s in probe._segments if any(is_stub(inits[w]) for w in s.weights)]
        assert len(stubbed) >= 2 and all(s.mapped == (limit == 0) for s in stubbed)
        np.testing.assert_allclose(probe.reference["logits"], memory.reference["logits"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([probe.measure(t).score for t in trials], want, rtol=1e-5)
        lazy = {k: (lambda v=v: v) for t in trials for k, v in t.items()}
        whole = {k: v for t in trials for k, v in t.items()}
        assert probe.measure(lazy).score == pytest.approx(memory.measure(whole).score, rel=1e-5)


MEASURED = ConvertOptions(fidelity_samples=4)
UNMEASURED = ConvertOptions(method="pairs", low_bits=2, correction="bias", fidelity_samples=0)


@pytest.mark.parametrize("options,external,constants", [
    (MEASURED, False, False),
    (MEASURED, True, False),
    (MEASURED, False, True),
    (ConvertOptions(method="pairs", low_bits=4, correction="auto", fidelity_samples=4), True, False),
    (UNMEASURED, False, False),
    (UNMEASURED, False, True),
    (ConvertOptions(activations="int8", fidelity_samples=4), False, False),
], ids=["measured", "measured-external", "measured-constants", "pairs-auto-external", "unmeasured",
        "unmeasured-constants", "int8-activations"])
def test_a_file_converts_to_what_the_in_memory_model_converts_to(tmp_path, options, external,
                                                                  constants):
    """convert_file keeps the large weights in its store, convert() in memory: the same model,
    the same report; the input is untouched and nothing but the output is left beside it.
    ``constants``: the weights as Constant nodes, as some exporters write them."""
    model = conv_net(c=192, bn=True)
    if constants:
        model = _weights_as_constants(model)
    src = _saved(model, tmp_path / "in" / "m.onnx", external=external)
    before = {p.name: p.read_bytes() for p in src.parent.iterdir()}
    out = tmp_path / "out" / "m.q.onnx"
    out.parent.mkdir()
    report = convert_file(src, out, options)
    q_mem, report_mem = convert(model, options)
    assert {p.name: p.read_bytes() for p in src.parent.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == (
        ["m.q.onnx", "m.q.onnx.data"] if external else ["m.q.onnx"])
    q_file = onnx.load(str(out))
    assert [n.SerializeToString() for n in q_file.graph.node] == [
        n.SerializeToString() for n in q_mem.graph.node]
    mem = {t.name: numpy_helper.to_array(t) for t in q_mem.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in q_file.graph.initializer}
    assert got.keys() == mem.keys()
    for name, value in mem.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert [(e.name, e.bits, e.quantizer, e.correction) for e in report.layers] == [
        (e.name, e.bits, e.quantizer, e.correction) for e in report_mem.layers]
    assert report.fidelity == report_mem.fidelity


def _weights_as_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    large = [t for t in out.graph.initializer if len(t.raw_data) > LARGE_TENSOR_BYTES]
    assert large
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in large]
    for i in reversed([i for i, t in enumerate(out.graph.initializer) if t in large]):
        del out.graph.initializer[i]
    nodes += list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _saved(model: onnx.ModelProto, path, external: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:  # onnx.save_model moves the weights of the model it saves: save a copy
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(copy, str(path), save_as_external_data=True, location=f"{path.name}.data",
                        size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return path


def test_inspect_of_a_file_plans_what_inspect_of_the_model_plans(tmp_path):
    """inspect reads a file's large weights through a store in a temporary folder (removed
    after), and plans exactly what it plans for the same model in memory."""
    import tempfile

    from dfmpc_onnx.api import inspect_model

    model = conv_net(c=192, bn=True)
    src = _saved(model, tmp_path / "m.onnx")
    before = set(os.listdir(tempfile.gettempdir()))
    from_file = inspect_model(src, MEASURED)
    assert set(os.listdir(tempfile.gettempdir())) - before == set()
    in_memory = inspect_model(model, MEASURED)
    assert [(e.name, e.bits, e.quantizer, e.correction, e.sensitivity) for e in from_file.layers] == [
        (e.name, e.bits, e.quantizer, e.correction, e.sensitivity) for e in in_memory.layers]
    assert from_file.fidelity == in_memory.fidelity
