"""Synthetic inputs: seeded, in the requested range, shaped by the model's signature."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.synthetic import KINDS, parse_input_shapes, spatial_axes, synthetic_inputs


def _model(*inputs: onnx.ValueInfoProto) -> onnx.ModelProto:
    """Identity per input: only the signature matters here."""
    nodes = [helper.make_node("Identity", [vi.name], [vi.name + "_out"]) for vi in inputs]
    outs = [helper.make_tensor_value_info(vi.name + "_out", vi.type.tensor_type.elem_type, None)
            for vi in inputs]
    g = helper.make_graph(nodes, "sig", list(inputs), outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


IMAGE = _model(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16]))


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed_and_different_across_seeds(kind):
    a = synthetic_inputs(IMAGE, n=6, kind=kind, seed=3)["x"]
    b = synthetic_inputs(IMAGE, n=6, kind=kind, seed=3)["x"]
    c = synthetic_inputs(IMAGE, n=6, kind=kind, seed=4)["x"]
    assert a.shape == (6, 3, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ("gaussian", "uniform", "smooth"))
def test_mean_and_std_are_the_requested_ones(kind):
    x = synthetic_inputs(IMAGE, n=64, kind=kind, mean=0.5, std=2.0)["x"].astype(np.float64)
    assert abs(x.mean() - 0.5) < 0.05
    assert abs(x.std() - 2.0) < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_value_range_bounds_every_value(kind):
    x = synthetic_inputs(IMAGE, n=16, kind=kind, value_range=(0.0, 1.0))["x"]
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.std() > 0.1  # spread over the range, not collapsed to its middle


def _neighbour_correlation(x: np.ndarray) -> float:
    a, b = x[..., :, :-1].ravel(), x[..., :, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_smooth_noise_is_low_pass_and_white_noise_is_not():
    white = synthetic_inputs(IMAGE, n=8, kind="gaussian")["x"]
    smooth = synthetic_inputs(IMAGE, n=8, kind="smooth")["x"]
    assert abs(_neighbour_correlation(white)) < 0.1
    assert _neighbour_correlation(smooth) > 0.5


def test_smooth_without_spatial_axes_is_gaussian_noise():
    m = _model(helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 32]))
    assert spatial_axes((4, 32)) == ()
    np.testing.assert_array_equal(synthetic_inputs(m, n=4, kind="smooth")["v"],
                                  synthetic_inputs(m, n=4, kind="gaussian")["v"])


def test_nhwc_images_are_smoothed_over_height_and_width():
    assert spatial_axes((2, 32, 32, 3)) == (1, 2)
    assert spatial_axes((2, 3, 32, 32)) == (2, 3)


def test_mixed_splits_the_batch_among_the_kinds():
    mixed = synthetic_inputs(IMAGE, n=7, kind="mixed", value_range=(-1.0, 1.0))["x"]
    assert mixed.shape[0] == 7
    # the uniform third fills the range evenly; the gaussian and smooth thirds are clipped normals
    assert np.mean(np.abs(mixed[3:5]) > 0.5) > np.mean(np.abs(mixed[:3]) > 0.5)


def test_dtypes_integer_inputs_get_zeros_and_ones_and_float16_stays():
    m = _model(helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5]),
               helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 5]),
               helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["N", 4]))
    x = synthetic_inputs(m, n=10)
    assert x["ids"].dtype == np.int64 and set(np.unique(x["ids"])) <= {0, 1}
    assert x["mask"].dtype == np.bool_
    assert x["h"].dtype == np.float16 and x["h"].shape == (10, 4)


def test_fixed_batch_stacks_whole_runs():
    m = _model(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]))
    assert synthetic_inputs(m, n=5)["x"].shape == (5, 3, 8, 8)
    m2 = _model(helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3]))
    assert synthetic_inputs(m2, n=5)["x"].shape == (8, 3)


def test_other_dynamic_dims_need_input_shape():
    m = _model(helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "seq", 8]))
    with pytest.raises(OptionsError, match=r"'tokens'.*'seq'.*--input-shape tokens="):
        synthetic_inputs(m, n=2)
    x = synthetic_inputs(m, n=4, shapes={"tokens": (2, 7, 8)})["tokens"]
    assert x.shape == (4, 7, 8)
    with pytest.raises(OptionsError, match="rank 3"):
        synthetic_inputs(m, n=2, shapes={"tokens": (2, 7)})


def test_initializers_listed_as_inputs_get_no_values():
    m = IMAGE.__deepcopy__()
    m.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2]))
    m.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0]))
    assert set(synthetic_inputs(m, n=2)) == {"x"}


def test_bad_options_are_options_errors():
    with pytest.raises(OptionsError, match="unknown synthetic input kind"):
        synthetic_inputs(IMAGE, kind="pink")
    with pytest.raises(OptionsError, match="LOW < HIGH"):
        synthetic_inputs(IMAGE, value_range=(1.0, 0.0))
    with pytest.raises(OptionsError, match="at least 1"):
        synthetic_inputs(IMAGE, n=0)


def test_input_shape_option_parses_and_refuses_nonsense():
    assert parse_input_shapes(["tokens=2,7,8", "x=1x3x8x8"]) == {"tokens": (2, 7, 8), "x": (1, 3, 8, 8)}
    for bad in ("tokens", "=1,2", "x=1,a", "x=0,3"):
        with pytest.raises(OptionsError, match="--input-shape"):
            parse_input_shapes([bad])
