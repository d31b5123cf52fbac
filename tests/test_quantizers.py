"""Every weight quantizer against a direct computation, and through ONNX Runtime."""

import itertools

import numpy as np
import pytest
from conftest import assert_valid, run
from onnx import numpy_helper
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert, inspect_model
from dfmpc_onnx.quant.quantizers import QUANTIZERS, WeightLayout, get_quantizer
from dfmpc_onnx.quant.quantizers.paper import dorefa, twn_per_layer
from dfmpc_onnx.quant.rounding import applies, balanced

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 40, 3)) * RNG.uniform(0.2, 3.0, (6, 1, 1))
LAYOUT = WeightLayout(0, 1)


@pytest.mark.parametrize(("name", "bits"), list(itertools.product(sorted(QUANTIZERS), [2, 3, 4, 8])))
def test_integers_on_the_grid_and_dequantize_consistent(name, bits):
    qt = get_quantizer(name).quantize(W, bits, LAYOUT)
    lo, hi = qt.grid
    assert qt.q.min() >= lo and qt.q.max() <= hi
    assert qt.q.shape == W.shape and np.issubdtype(qt.q.dtype, np.integer)
    w = qt.dequantize()
    assert np.isfinite(w).all()
    assert np.linalg.norm(w - W) < np.linalg.norm(W)  # better than all zeros
    assert qt.ideal_bytes() >= W.size * qt.container_bits() / 8


def test_twn_threshold_and_alpha_per_channel_equal_direct_computation():
    qt = get_quantizer("twn").quantize(W, 2, LAYOUT)
    for c in range(W.shape[0]):
        a = np.abs(W[c])
        delta = 0.7 * a.mean()
        keep = a > delta
        np.testing.assert_array_equal(qt.q[c], np.sign(W[c]) * keep)
        np.testing.assert_allclose(qt.scale[c], a[keep].mean())


def test_mse_ternary_is_optimal_against_brute_force_thresholds():
    qt = get_quantizer("mse-ternary").quantize(W, 2, LAYOUT)
    for c in range(W.shape[0]):
        row = W[c].ravel()
        best = np.inf
        for t in np.concatenate([[0.0], np.abs(row)]):  # every distinct support, brute force
            keep = np.abs(row) > t
            if not keep.any():
                continue
            alpha = np.abs(row[keep]).mean()
            best = min(best, ((np.sign(row) * keep * alpha - row) ** 2).sum())
        err = ((qt.dequantize()[c].ravel() - row) ** 2).sum()
        assert err <= best * (1 + 1e-9)


def test_mse_clipping_beats_maxabs_on_weight_error_and_is_near_a_dense_search():
    mse, maxabs = get_quantizer("mse"), get_quantizer("maxabs")
    for bits in (3, 4):
        e_mse = ((mse.quantize(W, bits, LAYOUT).dequantize() - W) ** 2).sum(axis=(1, 2))
        e_max = ((maxabs.quantize(W, bits, LAYOUT).dequantize() - W) ** 2).sum(axis=(1, 2))
        assert (e_mse <= e_max + 1e-12).all()
        m = 2 ** (bits - 1) - 1
        for c in range(W.shape[0]):
            row = W[c].ravel()
            dense = min(((np.clip(np.rint(row / (r / m)), -m, m) * (r / m) - row) ** 2).sum()
                        for r in np.linspace(0.05, 1, 400) * np.abs(row).max())
            assert e_mse[c] <= dense * 1.02


def test_asymmetric_zero_point_keeps_zero_exact_and_uses_the_range():
    w = W + 1.5  # far from symmetric
    qt = get_quantizer("asym").quantize(w, 4, LAYOUT)
    assert qt.zero_point is not None and qt.container_bits() == 4 and not qt.signed
    wz = w.copy()
    wz[:, 0, 0] = 0.0
    assert (get_quantizer("asym").quantize(wz, 4, LAYOUT).dequantize()[:, 0, 0] == 0).all()
    sym = get_quantizer("maxabs").quantize(w, 4, LAYOUT)
    assert np.linalg.norm(qt.dequantize() - w) < np.linalg.norm(sym.dequantize() - w)


def test_block_scales_are_the_max_of_each_block_along_the_input_axis():
    qt = get_quantizer("block32").quantize(W, 4, LAYOUT)
    assert qt.block_size == 32 and qt.axis == 1 and qt.scale.shape == (6, 2, 3)
    np.testing.assert_allclose(qt.scale[:, 0], np.abs(W[:, :32]).max(axis=1) / 7)
    np.testing.assert_allclose(qt.scale[:, 1], np.abs(W[:, 32:]).max(axis=1) / 7)
    assert qt.min_opset() == 21


def test_paper_grids_equal_equations_3_4_and_6():
    t = twn_per_layer(W)
    a = np.abs(W)
    delta = 0.7 * a.mean()  # one threshold for the whole layer
    np.testing.assert_array_equal(t.q, np.sign(W) * (a > delta))
    np.testing.assert_allclose(t.scale, a[a > delta].mean())
    for k in (2, 3, 6, 8):
        d = dorefa(W, k)
        m = np.abs(W).max()
        n = 2 ** k - 1
        eq6 = m * (2 / n * np.round(n * (W / (2 * m) + 0.5)) - 1)
        np.testing.assert_allclose(d.dequantize(), eq6, rtol=0, atol=1e-12 * m)
        assert len(np.unique(d.q)) <= 2 ** k and 0 not in d.q  # 2^k levels, no zero
        assert d.container_bits() == {2: 4, 3: 4, 6: 8, 8: 16}[k]


@pytest.mark.parametrize("name", [n for n in sorted(QUANTIZERS) if n != "paper"])
@pytest.mark.parametrize("fmt", ["packed", "int8"])
@pytest.mark.parametrize("low_bits", [2, 3])
def test_emitted_graph_equals_numpy_fake_quantisation(name, fmt, low_bits, x8):
    model = conv_net(seed=5, c=40)
    q, report = convert(model, ConvertOptions(quantizer=name, correction="none", format=fmt,
                                              low_bits=low_bits))
    assert_valid(q)
    ref = model.__class__()
    ref.CopyFrom(model)
    quantizer = get_quantizer(name)
    for t in ref.graph.initializer:
        if t.name.endswith(".weight"):
            layer = t.name.split(".")[0]
            w = numpy_helper.to_array(t).astype(np.float64)
            out_axis = 0  # Conv, and Gemm with transB=1
            fq = quantizer.quantize(w, report.layer(layer).bits, WeightLayout(out_axis, 1))
            if applies(fq):  # --rounding balanced, the default: 4 bits and fewer, nearest grids
                fq = balanced(w, fq, WeightLayout(out_axis, 1))
            t.CopyFrom(numpy_helper.from_array(fq.dequantize().astype(np.float32), t.name))
    expect = run(ref, x8)
    np.testing.assert_allclose(run(q, x8), expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())


@pytest.mark.parametrize("options", [ConvertOptions(), ConvertOptions(quantizer="block32"),
                                     ConvertOptions(method="paper"),
                                     ConvertOptions(quantizer="asym", format="int8")])
def test_inspect_and_convert_count_the_same_ideal_size(options):
    model = conv_net(seed=2, c=40, bn=True)
    _, report = convert(model, options)
    assert inspect_model(model, options).ideal_weight_bytes == report.ideal_weight_bytes
    # and the ideal is the written initializers' size to within the packing of odd counts
    assert abs(report.quant_weight_bytes - report.ideal_weight_bytes) <= 8 * len(report.layers)


@pytest.mark.parametrize("block", [32, 64, 128])
def test_block_stored_bits_are_the_container_plus_one_float32_scale_per_block(block):
    # 4-bit integers plus 32 bits of scale per ``block`` weights: block-32 4-bit costs 5 stored
    # bits per weight, so it cannot fill a 5-bit budget; block-64 4.5, block-128 4.25.
    w = RNG.standard_normal((8, 256))
    qt = get_quantizer(f"block{block}").quantize(w, 4, WeightLayout(0, 1))
    assert qt.ideal_bytes("packed", 4) * 8 / w.size == pytest.approx(4 + 32 / block)
    assert qt.scale.size == 8 * 256 // block
