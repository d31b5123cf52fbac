"""Packed containers and the emitted QDQ graph, checked against NumPy and ONNX Runtime."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_valid, run
from onnx import numpy_helper
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.passes.emit_qdq import qdq_initializers
from dfmpc_onnx.quant.quantizers import QuantizedTensor, WeightLayout, get_quantizer


@pytest.mark.parametrize("bits,per_byte", [(2, 4), (3, 2), (4, 2), (8, 1)])
def test_packed_initializers_decode_to_the_intended_integers(bits, per_byte):
    rng = np.random.default_rng(bits)
    m = 2 ** (bits - 1) - 1
    q = rng.integers(-m, m + 1, size=(7, 3, 3)).astype(np.int8)  # 63 values: odd, needs padding
    qt = QuantizedTensor(q, np.ones(7), None, 0, None, (-m, m), bits, "maxabs")
    t = qdq_initializers(qt, "w", np.float32, "packed")[0][0]
    assert len(t.raw_data) == -(-q.size // per_byte)
    back = numpy_helper.to_array(t)
    assert back.dtype in (np.dtype(ml_dtypes.int2), np.dtype(ml_dtypes.int4), np.dtype(np.int8))
    np.testing.assert_array_equal(back.astype(np.int64), q.astype(np.int64))


def test_quantize_grid_and_scale():
    w = np.array([[0.9, -0.3, 0.1], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.4]])
    maxabs = get_quantizer("maxabs")
    qw = maxabs.quantize(w, 2, WeightLayout(0, 1))
    np.testing.assert_array_equal(qw.q, [[1, 0, 0], [0, 0, 0], [-1, 0, 0]])
    np.testing.assert_allclose(qw.scale, [0.9, 1.0, 2.0])
    qt = maxabs.quantize(w, 4, WeightLayout(0, 1), per_channel=False)
    assert qt.q.max() <= 7 and qt.q.min() >= -7 and qt.scale.shape == ()


def fake_quant(w: np.ndarray, bits: int, axis) -> np.ndarray:
    """Independent reference: symmetric max-abs rounding written out the obvious way."""
    m = 2 ** (bits - 1) - 1
    if axis is None:
        s = np.abs(w).max() / m
        return np.clip(np.round(w / s), -m, m) * s
    out = np.empty_like(w, dtype=np.float64)
    for c in range(w.shape[axis]):
        sl = [slice(None)] * w.ndim
        sl[axis] = c
        s = np.abs(w[tuple(sl)]).max() / m
        out[tuple(sl)] = np.clip(np.round(w[tuple(sl)] / s), -m, m) * s
    return out


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("fmt", ["packed", "int8"])
def test_emitted_graph_equals_numpy_fake_quantisation(granularity, fmt, x8):
    model = conv_net(seed=3)
    q, report = convert(model, ConvertOptions(method="pairs", correction="none",
                                              granularity=granularity, format=fmt,
                                              rounding="nearest"))  # fake_quant rounds so
    assert_valid(q)
    ref = model.__class__()
    ref.CopyFrom(model)
    for t in ref.graph.initializer:
        if t.name.endswith(".weight"):
            layer = t.name.split(".")[0]
            bits = report.layer(layer).bits
            w = numpy_helper.to_array(t)
            axis = None if granularity == "tensor" else (0 if layer.startswith("conv") else 0)
            t.CopyFrom(numpy_helper.from_array(fake_quant(w, bits, axis).astype(np.float32), t.name))
    np.testing.assert_allclose(run(q, x8), run(ref, x8), rtol=1e-5, atol=1e-5 * np.abs(run(ref, x8)).max())
    kinds = {t.data_type for t in q.graph.initializer if t.name.endswith("_W_q")}
    assert kinds == ({26, 3} if fmt == "packed" else {3})  # INT2 for conv1, INT8 elsewhere


def fold_bn_in_numpy(model):
    """Test-local BN folding (the exporters' way), independent of the normalise pass."""
    m = model.__class__()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    nodes = []
    for node in m.graph.node:
        if node.op_type != "BatchNormalization":
            nodes.append(node)
            continue
        conv = [n for n in nodes if n.output[0] == node.input[0]][0]
        g, b, mu, var = (inits[n] for n in node.input[1:5])
        k = g / np.sqrt(var + 1e-5)
        inits[conv.input[1]] = inits[conv.input[1]] * k[:, None, None, None]
        inits[conv.input[2]] = (inits[conv.input[2]] - mu) * k + b
        conv.output[0] = node.output[0]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    del m.graph.initializer[:]
    m.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k)
                               for k, v in inits.items() if k in used)
    return m


@pytest.mark.parametrize("correction", ["none", "bias", "energy", "ls-full", "paper"])
def test_bn_kept_and_folded_both_convert_and_agree(correction, x8):
    kept = conv_net(seed=1, bn=True)
    folded = fold_bn_in_numpy(kept)
    np.testing.assert_allclose(run(kept, x8), run(folded, x8), rtol=1e-4, atol=1e-4)
    outs = {}
    for name, m in (("kept", kept), ("folded", folded)):
        q8, _ = convert(m, ConvertOptions(correction=correction, low_bits=8, high_bits=8,
                                          method="paper" if correction == "paper" else "pairs"))
        assert_valid(q8)
        ref, out = run(m, x8), run(q8, x8)
        sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())
        assert sqnr > 30, (name, sqnr)
        q2, rep = convert(m, ConvertOptions(correction=correction, low_bits=2,
                                          method="paper" if correction == "paper" else "pairs"))
        assert_valid(q2)
        assert rep.pairs == [("conv1", "conv2")]
        outs[name] = (run(q2, x8), rep)
    # Kept BN carries statistics the folded export lost: the two conversions may differ,
    # but each must be a usable approximation of the same float function.
    for name, (out, _rep) in outs.items():
        ref = run(kept, x8)
        cos = (ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out)
        assert cos > 0.8, (name, cos)
    # Kept BN anchors the statistics, so its layers get corrected; folded ones stay plain.
    assert outs["kept"][1].layer("conv1").stats == "bn"
    assert outs["folded"][1].layer("conv1").stats == "propagated"


def test_input_model_is_not_modified():
    model = conv_net(seed=2, bn=True)
    before = model.SerializeToString()
    convert(model, ConvertOptions(method="pairs"))
    assert model.SerializeToString() == before


def test_conversion_is_deterministic():
    model = conv_net(seed=4, act="SiLU")
    opts = ConvertOptions(method="pairs", correction="ls-full", propagated_stats=True)
    a, _ = convert(model, opts)
    b, _ = convert(model, opts)
    assert a.SerializeToString() == b.SerializeToString()
