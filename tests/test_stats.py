"""Statistics propagation against seeded sampling of the same Gaussian assumptions."""

import numpy as np

from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer
from dfmpc_onnx.stats.tensor_stats import TensorStats, bivariate_diag, through_activation, through_linear

RELU = lambda v: np.maximum(v, 0.0)  # noqa: E731


def sample_streams(s: TensorStats, n: int, rng):
    """Draw (f, q) pairs per channel with the described means, variances and covariance."""
    out_f, out_q = [], []
    for j in range(s.channels):
        cov = [[s.var_f[j], s.cov_fq[j]], [s.cov_fq[j], s.var_q[j]]]
        v = rng.multivariate_normal([s.mean_f[j], s.mean_q[j]], cov, size=n)
        out_f.append(v[:, 0])
        out_q.append(v[:, 1])
    return np.array(out_f), np.array(out_q)


def test_through_activation_matches_sampling():
    rng = np.random.default_rng(0)
    s = TensorStats(np.array([0.0, 0.5, -1.0]), np.array([1.0, 2.0, 0.3]),
                    np.array([0.1, 0.4, -0.8]), np.array([1.2, 1.5, 0.4]),
                    np.array([0.9, 1.4, 0.2]))
    f, q = sample_streams(s, 400_000, rng)
    out = through_activation(RELU, s)
    hf, hq = RELU(f), RELU(q)
    np.testing.assert_allclose(out.mean_f, hf.mean(1), atol=5e-3)
    np.testing.assert_allclose(out.var_q, hq.var(1), rtol=3e-2, atol=3e-3)
    cov = ((hf - hf.mean(1, keepdims=True)) * (hq - hq.mean(1, keepdims=True))).mean(1)
    np.testing.assert_allclose(out.cov_fq, cov, rtol=3e-2, atol=3e-3)


def test_through_linear_grouped_matches_sampling():
    rng = np.random.default_rng(1)
    group, cin, out = 2, 4, 6
    w = rng.standard_normal((out, cin // group, 9))
    wq = get_quantizer("maxabs").quantize(w, 3, WeightLayout(0, 1)).dequantize()
    b = rng.standard_normal(out)
    s = TensorStats.gaussian(rng.standard_normal(cin), 0.5 + rng.random(cin))
    res = through_linear(w, wq, b, b, group, s)
    # Sample: each input channel and tap independent.
    n = 200_000
    x = s.mean_f[:, None, None] + np.sqrt(s.var_f)[:, None, None] * rng.standard_normal((cin, 9, n))
    y = np.zeros((out, n))
    yq = np.zeros((out, n))
    for o in range(out):
        g = o // (out // group)
        xs = x[g * (cin // group):(g + 1) * (cin // group)]
        y[o] = np.einsum("it,itn->n", w[o], xs) + b[o]
        yq[o] = np.einsum("it,itn->n", wq[o], xs) + b[o]
    np.testing.assert_allclose(res.mean_f, y.mean(1), atol=0.05)
    np.testing.assert_allclose(res.var_f, y.var(1), rtol=0.02)
    np.testing.assert_allclose(res.var_q, yq.var(1), rtol=0.02)
    cov = ((y - y.mean(1, keepdims=True)) * (yq - yq.mean(1, keepdims=True))).mean(1)
    np.testing.assert_allclose(res.cov_fq, cov, rtol=0.02)


def test_bivariate_diag_identity_is_covariance():
    ident = lambda v: v  # noqa: E731
    m = np.array([1.0, -2.0])
    e = bivariate_diag(ident, ident, m, np.array([1.0, 4.0]), m, np.array([2.0, 1.0]),
                       np.array([0.5, -1.0]))
    np.testing.assert_allclose(e, np.array([0.5, -1.0]) + m * m, rtol=1e-10)


def test_tap_coverage_counts_padding_by_brute_force():
    from dfmpc_onnx.stats.tensor_stats import tap_coverage

    for size, k, st, pad in [(3, 3, 1, 1), (6, 3, 2, 1), (8, 3, 1, 0), (5, 5, 2, 2)]:
        got = tap_coverage([size, size], [k, k], [st, st], [pad] * 4, [1, 1])
        hits = np.zeros((k, k))
        n = 0
        for oy in range(0, size + 2 * pad - k + 1, st):
            for ox in range(0, size + 2 * pad - k + 1, st):
                n += 1
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = oy + ky - pad, ox + kx - pad
                        hits[ky, kx] += 0 <= iy < size and 0 <= ix < size
        np.testing.assert_allclose(got, (hits / n).reshape(-1))


def test_bias_correction_keeps_each_output_channel_mean_by_sampling():
    """A padded 2-bit conv on inputs ~ N(0.7, 0.5^2): with bias correction, the quantized model's
    per-channel output mean (sampled, ONNX Runtime) equals the float model's; without, it does not."""
    import onnx
    from conftest import run
    from onnx import TensorProto, helper
    from tinymodels import make_model

    from dfmpc_onnx import ConvertOptions, convert

    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "b": (0.1 * rng.standard_normal(8)).astype(np.float32)}
    node = helper.make_node("Conv", ["input", "w", "b"], ["out"], name="conv", pads=[1] * 4)
    model = make_model([node], [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 5, 5])],
                       [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8, 5, 5])], inits)
    x = (0.7 + 0.5 * rng.standard_normal((4000, 3, 5, 5))).astype(np.float32)
    base = dict(low_bits=2, high_bits=2, input_mean=0.7, input_std=0.5, propagated_stats=True,
                correction="none")
    f = run(model, x).mean(axis=(0, 2, 3))
    with_bc, _ = convert(onnx.ModelProto.FromString(model.SerializeToString()),
                         ConvertOptions(bias_correction=True, **base))
    without, _ = convert(model, ConvertOptions(bias_correction=False, **base))
    err_bc = np.abs(run(with_bc, x).mean(axis=(0, 2, 3)) - f)
    err_plain = np.abs(run(without, x).mean(axis=(0, 2, 3)) - f)
    # Sampling error of a mean over 4000 x 25 outputs is ~0.005 here; rounding's shift is far larger.
    assert err_bc.max() < 0.02
    assert err_plain.max() > 5 * err_bc.max()
