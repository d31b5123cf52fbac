"""The closed-form compensation against a brute-force reference: the least-squares minimiser of
the same objective estimated on seeded Monte-Carlo samples of tiny random layers."""

import numpy as np
import pytest
from tinymodels import add_activation

from dfmpc_onnx.model.activation import Activation
from dfmpc_onnx.quant.quantizers import WeightLayout, get_quantizer
from dfmpc_onnx.quant.solver import gram, gram_diag, ridge, solve_diag, solve_full
from dfmpc_onnx.stats.tensor_stats import (
    TensorStats,
    bivariate_matrix,
    joint_pre_activation,
    mean_diag,
    through_activation,
)


def phi_of(act: str, n: int) -> Activation:
    nodes, inits = [], {}
    out = add_activation(nodes, inits, "z", act, "act", n)
    consts = {k: np.asarray(v, np.float64).reshape(-1) if np.size(v) > 1 else np.asarray(v, float)
              for k, v in inits.items()}
    return Activation("z", out, nodes, consts)


def layer_problem(act: str, seed: int):
    """x ~ N(m, diag v) -> A (2-bit) -> phi -> B; returns analytic pieces and MC samples."""
    rng = np.random.default_rng(seed)
    cin, n, m = 5, 4, 6
    w_a = rng.standard_normal((n, cin, 1))
    b_a = 0.3 * rng.standard_normal(n)
    w_b = rng.standard_normal((m, n, 1))
    w_aq = get_quantizer("maxabs").quantize(w_a, 2, WeightLayout(0, 1)).dequantize()
    mean_x = 0.5 * rng.standard_normal(cin)
    var_x = 0.5 + rng.random(cin)
    x_stats = TensorStats.gaussian(mean_x, var_x)
    phi = phi_of(act, n)
    x = mean_x + np.sqrt(var_x) * rng.standard_normal((200_000, cin))
    z = x @ w_a[:, :, 0].T + b_a
    zq = x @ w_aq[:, :, 0].T + b_a
    h, hq = phi(z.T).T, phi(zq.T).T
    return dict(w_a=w_a, w_aq=w_aq, b_a=b_a, w_b=w_b, x_stats=x_stats, phi=phi, h=h, hq=hq)


def analytic_moments(p):
    joint = joint_pre_activation(p["w_a"], p["w_aq"], p["b_a"], p["b_a"], p["x_stats"])
    d = joint.diagonal()
    phi = p["phi"]
    mf, mq = mean_diag(phi, d.mean_f, d.var_f), mean_diag(phi, d.mean_q, d.var_q)
    a = bivariate_matrix(phi, phi, d.mean_f, d.var_f, d.mean_q, d.var_q, joint.cov_fq)
    q = bivariate_matrix(phi, phi, d.mean_q, d.var_q, d.mean_q, d.var_q, joint.cov_qq)
    return a - np.outer(mf, mq), q - np.outer(mq, mq), joint


def mc_minimiser(p, lam_abs: float, diagonal: bool) -> np.ndarray:
    """argmin_c mean_s ||W_B (h_s - c * hq_s)||^2 + lam ||c - 1||^2 by plain least squares."""
    h = p["h"] - p["h"].mean(0)
    hq = p["hq"] - p["hq"].mean(0)
    wb = p["w_b"][:, :, 0]
    s, n = hq.shape
    if diagonal:  # sum_j G_jj E[(h_j - c_j hq_j)^2]: independent 1-D problems
        g = (wb * wb).sum(0)
        return (g * (h * hq).mean(0) + lam_abs) / (g * (hq * hq).mean(0) + lam_abs)
    design = (wb[None, :, :] * hq[:, None, :]).reshape(-1, n) / np.sqrt(s)
    target = (h @ wb.T).reshape(-1) / np.sqrt(s)
    design = np.vstack([design, np.sqrt(lam_abs) * np.eye(n)])
    target = np.concatenate([target, np.sqrt(lam_abs) * np.ones(n)])
    return np.linalg.lstsq(design, target, rcond=None)[0]


def mc_objective(p, c: np.ndarray) -> float:
    h = p["h"] - p["h"].mean(0)
    hq = p["hq"] - p["hq"].mean(0)
    wb = p["w_b"][:, :, 0]
    return float((((h - c * hq) @ wb.T) ** 2).sum(1).mean())


@pytest.mark.parametrize("act", ["Relu", "SiLU", "ReLU6"])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_solution_matches_monte_carlo_minimiser(act, seed):
    p = layer_problem(act, seed)
    a, q, _ = analytic_moments(p)
    g = gram(p["w_b"])
    c = solve_full(g, a, q, lam=1e-3)
    lam_abs = ridge(1e-3, np.diag(g * q))
    c_mc = mc_minimiser(p, lam_abs, diagonal=False)
    np.testing.assert_allclose(c, c_mc, atol=0.03)
    assert mc_objective(p, c) <= mc_objective(p, np.ones_like(c)) + 1e-9


@pytest.mark.parametrize("act", ["Relu", "SiLU"])
def test_diag_solution_matches_monte_carlo_minimiser(act):
    p = layer_problem(act, 3)
    _, _, joint = analytic_moments(p)
    hs = through_activation(p["phi"], joint.diagonal())
    g = gram_diag(p["w_b"])
    c = solve_diag(g, hs.cov_fq, hs.var_q, lam=1e-3)
    c_mc = mc_minimiser(p, ridge(1e-3, g * hs.var_q), diagonal=True)
    np.testing.assert_allclose(c, c_mc, atol=0.03)
    assert mc_objective(p, c) <= mc_objective(p, np.ones_like(c)) * 1.001


def test_moments_match_samples():
    p = layer_problem("SiLU", 5)
    a, q, joint = analytic_moments(p)
    h = p["h"] - p["h"].mean(0)
    hq = p["hq"] - p["hq"].mean(0)
    scale = np.abs(q).max()
    np.testing.assert_allclose(a, h.T @ hq / len(h), atol=0.02 * scale)
    np.testing.assert_allclose(q, hq.T @ hq / len(h), atol=0.02 * scale)
    d = joint.diagonal()
    np.testing.assert_allclose(mean_diag(p["phi"], d.mean_f, d.var_f), p["h"].mean(0), atol=0.02)


def test_large_ridge_gives_no_compensation():
    p = layer_problem("Relu", 0)
    a, q, _ = analytic_moments(p)
    c = solve_full(gram(p["w_b"]), a, q, lam=1e9)
    np.testing.assert_allclose(c, 1.0, atol=1e-6)
