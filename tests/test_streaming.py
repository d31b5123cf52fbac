"""Large layers are rounded and measured a block of output channels at a time, to bound memory:
the blocks must give exactly what the whole-array code gives (which the other tests check)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_pairs import mlp_model
from tinymodels import conv_net

import dfmpc_onnx.stats.walk as qc
from dfmpc_onnx.api import convert
from dfmpc_onnx.options import ConvertOptions
from dfmpc_onnx.quant import quantizers
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer
from dfmpc_onnx.quant.quantizers.base import slices_of


@pytest.mark.parametrize("shape,axis,elements", [((7, 3, 2), 0, 5), ((7, 3, 2), 1, 1),
                                                  ((4, 9), 1, 100), ((5,), 0, 2), ((3, 4), 0, 0)])
def test_slices_cover_every_index_once(shape, axis, elements):
    hits = np.zeros(shape, int)
    for part in slices_of(shape, axis, elements):
        hits[part] += 1
    assert (hits == 1).all()


@pytest.mark.parametrize("name,per_channel,axis", [("maxabs", True, 0), ("maxabs", False, 0),
                                                   ("maxabs", True, 1), ("asym", True, 0),
                                                   ("block32", True, 0), ("mse", True, 1)])
def test_dequantize_part_equals_a_slice_of_dequantize(name, per_channel, axis):
    w = np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)
    qt = get_quantizer(name).quantize(w, 4, WeightLayout(axis, 1 - axis), per_channel)
    whole = qt.dequantize()
    for part in slices_of(w.shape, axis, 64):
        np.testing.assert_array_equal(qt.dequantize_part(part), whole[part])


@pytest.mark.parametrize("shape,axis", [((5, 4, 3, 3), 0), ((6, 5), 1)])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_blockwise_rounding_equals_the_formula(monkeypatch, shape, axis, per_channel, bits):
    """Max-abs rounding in blocks of 3 elements against rint(w / scale) on the whole array."""
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    monkeypatch.setattr(quantizers.base, "BLOCK_ELEMENTS", 3)
    qt = get_quantizer("maxabs").quantize(w, bits, WeightLayout(axis, None), per_channel)
    m = 2 ** (bits - 1) - 1
    w64 = w.astype(np.float64)
    amax = np.moveaxis(np.abs(w64), axis, 0).reshape(shape[axis], -1).max(1)
    scale = amax / m if per_channel else np.asarray(amax.max() / m)
    div = np.expand_dims(scale, tuple(d for d in range(w.ndim) if d != axis)) if per_channel else scale
    np.testing.assert_array_equal(qt.q, np.clip(np.rint(w64 / div), -m, m))
    np.testing.assert_array_equal(qt.scale, scale)


def _converted(monkeypatch, model: onnx.ModelProto, options: ConvertOptions, stream: bool):
    monkeypatch.setattr(qc, "STREAM_ELEMENTS", 0 if stream else 1 << 60)
    monkeypatch.setattr(quantizers.base, "BLOCK_ELEMENTS", 7)  # several blocks per tiny layer
    q, report = convert(model, options)
    return {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}, report


@pytest.mark.parametrize("model,options,corrects", [
    (conv_net(bn=True), ConvertOptions(method="pairs", low_bits=4, correction="bias"), True),
    (conv_net(bn=False), ConvertOptions(method="pairs", low_bits=3, correction="bias",
                                        propagated_stats=True), True),
    (mlp_model("gemm"), ConvertOptions(method="pairs", low_bits=4, correction="bias",
                                       propagated_stats=True, protect_first_last=False), True),
    (mlp_model("matmul"), ConvertOptions(method="pairs", low_bits=4, correction="bias",
                                         propagated_stats=True), False),  # no bias input
    (conv_net(bn=True), ConvertOptions(method="pairs", low_bits=2, correction="bias",
                                       quantizer="mse-ternary"), True),
    (mlp_model("gemm"), ConvertOptions(method="pairs", low_bits=4, correction="bias",
                                       quantizer="block32", propagated_stats=True), True),
], ids=["conv-bn-kept", "conv-propagated", "gemm-transB0", "matmul", "mse-ternary", "block32"])
def test_streamed_layers_convert_to_the_same_model(monkeypatch, model, options, corrects):
    """Every layer streamed vs none: the same integers and scales, biases equal to rounding, and
    the same statistics downstream (bias correction of later layers reads them)."""
    streamed, rep_s = _converted(monkeypatch, model, options, stream=True)
    whole, rep_w = _converted(monkeypatch, model, options, stream=False)
    assert streamed.keys() == whole.keys()
    assert any(k.endswith("_bias_corrected") for k in whole) == corrects
    for name, value in whole.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(streamed[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(streamed[name], value, err_msg=name)
    assert [e.reason for e in rep_s.layers] == [e.reason for e in rep_w.layers]


def test_streaming_applies_only_where_it_is_exact(monkeypatch):
    """Per-tensor grids other than max-abs, the paper's grids and compensated pairs keep the
    whole-array path."""
    monkeypatch.setattr(qc, "STREAM_ELEMENTS", 0)
    seen = []
    real = qc.Walker._streamed_layer
    monkeypatch.setattr(qc.Walker, "_streamed_layer",
                        lambda self, node: (seen.append(node.name), real(self, node)))
    convert(conv_net(bn=True), ConvertOptions(method="pairs", low_bits=4, correction="ls-full",
                                              quantizer="maxabs"))
    assert seen and not {"conv1", "conv2"} & set(seen)  # the compensated pair
    seen.clear()
    convert(conv_net(bn=True), ConvertOptions(method="pairs", low_bits=4, correction="none",
                                              quantizer="mse", granularity="tensor"))
    assert seen == []  # a per-tensor MSE clip level is not a per-block one
    convert(conv_net(bn=True), ConvertOptions(method="paper", low_bits=3, correction="none"))
    assert seen == []  # the paper's grids: one scale per layer


@pytest.mark.parametrize("name", ["maxabs", "asym", "block32"])
@pytest.mark.parametrize("shape,layout", [((6, 64), WeightLayout(0, 1)),
                                          ((70, 5), WeightLayout(1, 0))])  # cut across blocks
def test_blockwise_dequantize_and_error_equal_the_whole_array(monkeypatch, name, shape, layout):
    monkeypatch.setattr(quantizers.base, "BLOCK_ELEMENTS", 5)
    w = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    qt = get_quantizer(name).quantize(w, 3, layout, True)
    np.testing.assert_array_equal(qt.dequantize_as(np.float32), qt.dequantize().astype(np.float32))
    expected = float(np.sum((qt.dequantize() - w.astype(np.float64)) ** 2))
    assert qt.squared_error(w) == pytest.approx(expected, rel=1e-12)


def test_mse_clipping_search_in_row_blocks_equals_all_rows_at_once(monkeypatch):
    from dfmpc_onnx.quant.quantizers import mse

    w = np.random.default_rng(3).standard_normal((9, 40)).astype(np.float32)
    whole = get_quantizer("mse").quantize(w, 3, WeightLayout(0, 1), True)
    monkeypatch.setattr(mse, "BLOCK_ELEMENTS", 50)  # one row of 40 a block
    blocks = get_quantizer("mse").quantize(w, 3, WeightLayout(0, 1), True)
    np.testing.assert_array_equal(blocks.q, whole.q)
    np.testing.assert_array_equal(blocks.scale, whole.scale)


@pytest.mark.parametrize("name", sorted(set(quantizers.QUANTIZERS) - {"paper"}))
@pytest.mark.parametrize("shape,layout", [((6, 8, 3, 3), WeightLayout(0, 1)),
                                          ((64, 6), WeightLayout(1, 0))])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_every_per_channel_grid_quantizes_the_same_by_rows(name, shape, layout, bits):
    from dfmpc_onnx.quant.quantizers.base import quantize_by_rows

    quantizer = get_quantizer(name)
    if not quantizer.supports(bits):
        pytest.skip(f"{name} has no {bits}-bit grid")
    # float64, as the converter hands these grids their weights: sums along a channel may then
    # differ from the whole array's by rounding alone (1e-16), never the integers.
    w = np.random.default_rng(4).standard_normal(shape)
    w[tuple(slice(0, 1) if d == layout.out_axis else slice(None) for d in range(w.ndim))] *= 9
    whole = quantizer.quantize(w, bits, layout, True)
    rows = quantize_by_rows(quantizer, w, bits, layout, elements=1)  # one channel a block
    for field in ("q", "scale", "zero_point"):
        a, b = getattr(rows, field), getattr(whole, field)
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, field
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=field)
    assert (rows.grid, rows.axis, rows.block_size, rows.bits) == (
        whole.grid, whole.axis, whole.block_size, whole.bits)


@pytest.mark.parametrize("model", [conv_net(bn=True), mlp_model("gemm"), mlp_model("matmul")],
                         ids=["conv-bn-kept", "gemm-transB0", "matmul"])
def test_the_float_walk_gives_the_same_statistics_streamed(monkeypatch, model):
    """The statistics walk the measurement uses (nothing quantized) a block of output channels at
    a time equals the whole-array walk: every layer's input statistics, as bias correction reads
    them."""
    from dfmpc_onnx.passes import Context, analysis_passes, run_passes

    def inputs(stream: bool):
        monkeypatch.setattr(qc, "STREAM_ELEMENTS", 0 if stream else 1 << 60)
        monkeypatch.setattr(quantizers.base, "BLOCK_ELEMENTS", 7)
        m = onnx.ModelProto()
        m.CopyFrom(model)
        ctx = Context(ConvertOptions(method="pairs", low_bits=4, fidelity_samples=0,
                                     propagated_stats=True))
        run_passes(analysis_passes()[:6], m, ctx)
        return qc.layer_inputs(m.graph, ctx)

    calls = []
    real = qc.through_linear_by_blocks
    monkeypatch.setattr(qc, "through_linear_by_blocks", lambda *a, **k: calls.append(1) or real(*a, **k))
    streamed = inputs(True)
    assert calls  # the streamed path ran
    whole = inputs(False)
    assert streamed.keys() == whole.keys() and len(whole) >= 3
    for name, w in whole.items():
        s = streamed[name]
        for field in ("mean_f", "var_f", "mean_q", "var_q", "cov_fq"):
            np.testing.assert_allclose(getattr(s.stats, field), getattr(w.stats, field),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{name} {field}")


def test_measured_bias_corrections_by_rows_equal_the_whole_layer(monkeypatch):
    """Measuring a bias-corrected candidate of a large layer computes the corrected bias a block
    of output channels at a time: the same candidates, divergences and plan as the whole-array
    correction (kept BN: corrections are candidates)."""
    import dfmpc_onnx.passes.measure as measure

    calls = []
    real = measure._corrected_bias_by_rows
    monkeypatch.setattr(measure, "_corrected_bias_by_rows",
                        lambda *a: (calls.append(a[0].name), real(*a))[1])
    options = ConvertOptions(fidelity_samples=4)
    streamed, rep_s = _converted(monkeypatch, conv_net(bn=True), options, stream=True)
    assert calls  # the block-wise correction ran
    calls.clear()
    whole, rep_w = _converted(monkeypatch, conv_net(bn=True), options, stream=False)
    assert not calls
    assert [(e.name, e.bits, e.quantizer, e.correction) for e in rep_s.layers] == [
        (e.name, e.bits, e.quantizer, e.correction) for e in rep_w.layers]
    for s, w in zip(rep_s.layers, rep_w.layers, strict=True):
        assert (s.sensitivity or {}).keys() == (w.sensitivity or {}).keys()
        for bits, value in (w.sensitivity or {}).items():
            assert s.sensitivity[bits] == pytest.approx(value, rel=1e-5, abs=1e-12), (s.name, bits)
    assert rep_s.fidelity["score"] == pytest.approx(rep_w.fidelity["score"], rel=1e-5, abs=1e-12)
    for name, value in whole.items():
        np.testing.assert_allclose(streamed[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
