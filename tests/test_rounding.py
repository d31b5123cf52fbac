"""Balanced rounding (dfmpc_onnx/quant/rounding.py) against brute force and ONNX Runtime."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx import ConvertOptions, convert_file
from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.model.layers import LinearLayer
from dfmpc_onnx.options import LayerPlan
from dfmpc_onnx.quant.layer import quantize_layer
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer
from dfmpc_onnx.quant.rounding import balanced


def _brute_force_row(t: np.ndarray, lo: int, hi: int) -> float:
    """The least squared error of any rounding of ``t`` to a neighbouring grid point (floor or
    ceil, on the grid) whose errors sum to within half a step: every combination tried."""
    best = np.inf
    options = [sorted({int(np.clip(np.floor(v), lo, hi)), int(np.clip(np.ceil(v), lo, hi))})
               for v in t]
    for combo in itertools.product(*options):
        e = np.asarray(combo, dtype=np.float64) - t
        if abs(e.sum()) <= 0.5 + 1e-9:
            best = min(best, float((e ** 2).sum()))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_per_channel_rows_match_the_brute_force_optimum(seed):
    """One scale per output channel (max-abs, a MatMul's (in, out) weight): each channel's errors
    sum to within half a step, with the least squared error any such rounding has."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((9, 3)) * rng.uniform(0.2, 2.0, size=3)
    layout = WeightLayout(out_axis=1, in_axis=0)
    for bits in (2, 4):
        near = get_quantizer("maxabs").quantize(w, bits, layout)
        qt = balanced(w, near, layout)
        t = w / near.scale.reshape(1, -1)
        lo, hi = qt.grid
        assert qt.q.min() >= lo and qt.q.max() <= hi
        assert np.all(np.abs(qt.q - t) < 1.0)  # each weight still on a neighbouring grid point
        for j in range(w.shape[1]):
            e = qt.q[:, j] - t[:, j]
            assert abs(e.sum()) <= 0.5 + 1e-9
            assert float((e ** 2).sum()) == pytest.approx(_brute_force_row(t[:, j], lo, hi))


def test_conv_kernels_then_channels_balanced_and_scales_kept():
    """A Conv weight on a block grid: integers within a step of w/scale, scales and grid those of
    nearest rounding, and each output channel's error sum (weight units) within half its largest
    step, where nearest rounding's is larger."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 64, 3, 3)) + 0.3  # a shared offset: nearest rounding's errors add
    layout = WeightLayout(out_axis=0, in_axis=1)
    near = get_quantizer("block32").quantize(w, 4, layout)
    qt = balanced(w, near, layout)
    np.testing.assert_array_equal(qt.scale, near.scale)
    assert qt.grid == near.grid and qt.block_size == near.block_size
    step = np.broadcast_to(near._broadcast(near.scale), w.shape)
    assert np.all(np.abs(qt.q - w / step) < 1.0)
    sums = (qt.dequantize() - w).reshape(8, -1).sum(axis=1)
    assert np.all(np.abs(sums) <= 0.5 * step.reshape(8, -1).max(axis=1) + 1e-12)
    near_sums = (near.dequantize() - w).reshape(8, -1).sum(axis=1)
    assert np.abs(sums).sum() < np.abs(near_sums).sum()


def _conv_model(w: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[1], 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[0], 12, 12])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_balanced_rounding_moves_a_smooth_input_less_in_onnx_runtime(tmp_path):
    """What it is for: on an input whose neighbouring values are alike (a trained network's
    activations, here a smooth positive image), the 4-bit Conv written with balanced rounding errs
    less, in ONNX Runtime, than the same grid with nearest rounding; 8-bit layers are the same
    bytes either way."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    src = tmp_path / "conv.onnx"
    onnx.save(_conv_model(w), src)
    yy, xx = np.mgrid[0:12, 0:12] / 12.0
    x = (1.0 + 0.3 * np.sin(3 * xx + np.arange(8)[:, None, None]) * np.cos(2 * yy))[None]
    x = x.astype(np.float32)
    ref = _run(src, x)
    errs = {}
    for rounding in ("nearest", "balanced"):
        dst = tmp_path / f"{rounding}.onnx"
        convert_file(src, dst, ConvertOptions(method="pairs", low_bits=4, high_bits=4,
                                              correction="none", fidelity_samples=0,
                                              protect_first_last=False, rounding=rounding))
        errs[rounding] = float(np.linalg.norm(_run(dst, x) - ref))
    assert errs["balanced"] < 0.7 * errs["nearest"]
    for rounding in ("nearest", "balanced"):
        dst = tmp_path / f"{rounding}8.onnx"
        convert_file(src, dst, ConvertOptions(method="pairs", low_bits=8, high_bits=8,
                                              correction="none", fidelity_samples=0,
                                              rounding=rounding))
    inits = [{t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / f"{r}8.onnx").graph.initializer}
             for r in ("nearest", "balanced")]
    assert inits[0].keys() == inits[1].keys()
    for name, value in inits[0].items():
        np.testing.assert_array_equal(value, inits[1][name])


def test_quantize_layer_applies_it_only_where_asked():
    """--rounding nearest is the grid's own rounding; the paper's one-scale grid is never
    rebalanced; asymmetric grids (zero points) are left as they are."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4, 3, 3))
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    layer = LinearLayer(node, "w", None, 1, 0, w.shape)
    plain = get_quantizer("maxabs").quantize(w, 4, WeightLayout(0, 1))
    kept = quantize_layer(layer, w, LayerPlan(4, "maxabs", "none"), True, rounding="nearest")
    np.testing.assert_array_equal(kept.q, plain.q)
    moved = quantize_layer(layer, w, LayerPlan(4, "maxabs", "none"), True, rounding="balanced")
    assert not np.array_equal(moved.q, plain.q)
    asym = quantize_layer(layer, w, LayerPlan(4, "asym", "none"), True, rounding="balanced")
    np.testing.assert_array_equal(asym.q, get_quantizer("asym").quantize(w, 4, WeightLayout(0, 1)).q)


def test_unknown_rounding_is_refused():
    with pytest.raises(OptionsError, match="--rounding must be one of balanced, nearest"):
        ConvertOptions(rounding="stochastic")


def test_the_paper_method_rounds_as_published_whatever_the_rounding_option(tmp_path):
    """--method paper is the published algorithm: its TWN and DoReFa grids are written the same
    with --rounding balanced (the default) as with nearest."""
    rng = np.random.default_rng(2)
    src = tmp_path / "conv.onnx"
    onnx.save(_conv_model(rng.standard_normal((16, 8, 3, 3)).astype(np.float32)), src)
    inits = []
    for rounding in ("nearest", "balanced"):
        dst = tmp_path / f"paper_{rounding}.onnx"
        convert_file(src, dst, ConvertOptions(method="paper", low_bits=2, high_bits=4,
                                              fidelity_samples=0, protect_first_last=False,
                                              rounding=rounding))
        inits.append({t.name: numpy_helper.to_array(t) for t in onnx.load(dst).graph.initializer})
    assert inits[0].keys() == inits[1].keys()
    for name, value in inits[0].items():
        np.testing.assert_array_equal(value, inits[1][name])
