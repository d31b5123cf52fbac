"""Library arithmetic raises no RuntimeWarning (issue 12): setup.cfg turns one raised in
dfmpc_onnx's own modules into an error, and the edge cases that used to warn are checked here
against direct computations on the finite values."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

from dfmpc_onnx.model.activation import Activation
from dfmpc_onnx.stats.tensor_stats import (
    TensorStats,
    bivariate_diag,
    bivariate_matrix,
    mean_diag,
    through_activation,
)


def _probe(module: str) -> None:
    """numpy overflow raised from code whose module is ``module`` (warnings use the caller's
    module name, which is what the setup.cfg filter matches)."""
    exec(compile("np.exp(np.float64(1000.0))", "<probe>", "exec"), {"__name__": module, "np": np})


def test_runtime_warnings_from_the_library_are_errors() -> None:
    """The setup.cfg filter is in force: the same overflow is an error in dfmpc_onnx modules
    (the package and its passes) and a plain warning elsewhere."""
    for module in ("dfmpc_onnx.model.activation", "dfmpc_onnx.passes.quantize_compensate",
                   "dfmpc_onnx.stats.walk"):
        with pytest.raises(RuntimeWarning, match="overflow"):
            _probe(module)
    with pytest.warns(RuntimeWarning, match="overflow"):
        _probe("tests_elsewhere")


def _activation(*nodes: onnx.NodeProto) -> Activation:
    return Activation("x", nodes[-1].output[0], list(nodes), {})


SILU = _activation(helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"]))


def test_sigmoid_saturates_without_warning() -> None:
    x = np.array([[-1e4, -800.0, -30.0, 0.0, 30.0, 800.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = SILU(x)
    with np.errstate(over="ignore"):
        want = x * (1.0 / (1.0 + np.exp(-x)))  # the same formula, IEEE overflow allowed
    np.testing.assert_array_equal(y, want)
    assert y[0, 0] == 0.0 and y[0, -1] == 1e4


STATS_CASES = [np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("bad", STATS_CASES)
def test_statistics_of_non_finite_channels_are_nan_and_others_unchanged(bad: float) -> None:
    rng = np.random.default_rng(0)
    c = 5
    mean_f, mean_q = rng.standard_normal(c), rng.standard_normal(c)
    var_f, var_q = 0.5 + rng.random(c), 0.5 + rng.random(c)
    cov = 0.3 * np.sqrt(var_f * var_q)
    s = TensorStats(mean_f, var_f, mean_q, var_q, cov)
    want = through_activation(SILU, s)
    want_m = mean_diag(SILU, mean_f, var_f)
    want_b = bivariate_diag(SILU, SILU, mean_f, var_f, mean_q, var_q, cov)
    want_mat = bivariate_matrix(SILU, SILU, mean_f, var_f, mean_q, var_q, np.outer(cov, cov))
    for field, j in (("mean_f", 1), ("var_f", 2), ("mean_q", 3), ("cov_fq", 4)):
        arrays = {k: getattr(s, k).copy() for k in ("mean_f", "var_f", "mean_q", "var_q", "cov_fq")}
        arrays[field][j] = bad
        bad_s = TensorStats(**arrays)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = through_activation(SILU, bad_s)
            got_m = mean_diag(SILU, bad_s.mean_f, bad_s.var_f)
            got_b = bivariate_diag(SILU, SILU, bad_s.mean_f, bad_s.var_f, bad_s.mean_q,
                                   bad_s.var_q, bad_s.cov_fq)
            cov_ab = np.outer(bad_s.cov_fq, cov)
            got_mat = bivariate_matrix(SILU, SILU, bad_s.mean_f, bad_s.var_f, bad_s.mean_q,
                                       bad_s.var_q, cov_ab)
        keep = np.arange(c) != j
        assert np.isnan(got_b[j]) and np.array_equal(got_b[keep], want_b[keep])
        if field in ("mean_f", "var_f"):
            assert np.isnan(got_m[j]) and np.isnan(got.mean_f[j])
            assert np.array_equal(got_m[keep], want_m[keep])
        else:
            assert np.array_equal(got_m, want_m)
        for name in ("mean_f", "var_f", "mean_q", "var_q", "cov_fq"):
            np.testing.assert_array_equal(getattr(got, name)[keep], getattr(want, name)[keep])
        bad_rows = ~(np.isfinite(bad_s.mean_f) & np.isfinite(bad_s.var_f))
        bad_cols = ~(np.isfinite(bad_s.mean_q) & np.isfinite(bad_s.var_q))
        bad_entries = bad_rows[:, None] | bad_cols[None, :] | ~np.isfinite(cov_ab)
        assert np.isnan(got_mat[bad_entries]).all()
        np.testing.assert_array_equal(got_mat[~bad_entries], want_mat[~bad_entries])


def test_activation_with_non_finite_constant_gives_nan_statistics_quietly() -> None:
    """A model constant of Inf (as the fuzz writes) makes phi infinite at finite points: such a
    channel has no statistics (NaN); finite activations are unaffected."""
    relu_times = Activation("x", "y", [helper.make_node("Relu", ["x"], ["r"]),
                                       helper.make_node("Div", ["r", "c"], ["y"])],
                            {"c": np.array([1.0, 0.0, np.inf])})  # per channel: 1, 1/0, 1/inf
    mean, var = np.array([0.3, 0.3, 0.3]), np.array([1.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = mean_diag(relu_times, mean, var)
        s = through_activation(relu_times, TensorStats.gaussian(mean, var))
    relu = _activation(helper.make_node("Relu", ["x"], ["y"]))
    assert m[0] == pytest.approx(mean_diag(relu, mean[:1], var[:1])[0], rel=1e-14)
    assert np.isnan(m[1]) and m[2] == 0.0  # r / 0 is inf (or nan at r = 0); r / inf is 0
    assert np.isnan(s.var_f[1]) and np.isfinite(s.var_f[[0, 2]]).all()
