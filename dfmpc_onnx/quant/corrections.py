"""Corrections of a quantized layer's error, one function each, looked up by name.

- ``bias``: bias correction (Nagel et al. 2019): shift the bias so the layer's output mean under
  its float input statistics is unchanged (``stats.output_means``). Applied per layer.
- ``paper``: the DF-MPC paper's factor c (Eq. 27), one per output channel of a pair's low-bit
  layer, fitted in weight space from BN parameters alone, folded into that layer's scales and bias.
- ``energy``, ``ls-diag``, ``ls-full``: our own compensation in a pair's high-bit second layer
  (not the paper's): a factor per input channel of that layer, from the two-stream statistics of
  the low-bit layer's output through the activation: energy restores each channel's variance;
  ls-* minimise the expected squared output error (diagonal or full cross-channel system).
- ``none``: nothing.

Each compensation returns (c, predicted objective ratio L(c)/L(1)) or just c for the paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dfmpc_onnx.quant.solver import gram, gram_diag, objective_diag, objective_full, solve_diag, solve_full
from dfmpc_onnx.stats.tensor_stats import (
    JointGaussian,
    bivariate_matrix,
    mean_diag,
    through_activation,
)


def paper_factor(x: np.ndarray, x_hat: np.ndarray, y: np.ndarray, y_hat: np.ndarray,
                 lambda1: float, lambda2: float) -> np.ndarray:
    """Eq. 27 per channel j: argmin over c >= 0 of
    ``||c X^_j - X_j||^2 + lambda1 (c y^_j - y_j)^2 + lambda2 c^2``, i.e.
    ``c_j = (X^_j . X_j + lambda1 y^_j y_j) / (X^_j . X^_j + lambda1 y^_j^2 + lambda2)``.

    x, x_hat: (C, n) rows ``gamma_j w_j / sigma_j`` of the float and the quantized low-bit layer;
    y, y_hat: (C,) BN shifts ``beta_j - gamma_j mu_j / sigma_j``. A channel whose denominator is 0
    (its quantized row and shift vanish) keeps c = 1. The unconstrained optimum is clipped at 0
    (the paper's c >= 0; ReLU's positive homogeneity needs it).
    """
    num = np.einsum("cn,cn->c", x_hat, x) + lambda1 * y_hat * y
    den = np.einsum("cn,cn->c", x_hat, x_hat) + lambda1 * y_hat * y_hat + lambda2
    c = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return np.maximum(c, 0.0)


@dataclass
class PairInput:
    """What a pair's second layer B needs from its first layer A for our compensation."""

    joint: JointGaussian  # (z, z^) of A's output channels
    activation: Callable[[np.ndarray], np.ndarray]


def energy(p: PairInput, dense_b: np.ndarray, lam: float, centred: bool) -> tuple[np.ndarray, float]:
    """c_j restoring the variance of channel j after the activation (ours)."""
    hs = through_activation(p.activation, p.joint.diagonal())
    c = np.sqrt(np.maximum(np.where(hs.var_q > 1e-12, hs.var_f / np.maximum(hs.var_q, 1e-12), 1.0), 0.0))
    g = gram_diag(dense_b)
    ones = np.ones(len(c))
    base = objective_diag(g, hs.var_f, hs.cov_fq, hs.var_q, ones)
    ratio = objective_diag(g, hs.var_f, hs.cov_fq, hs.var_q, c) / base if base > 0 else 1.0
    return c, float(ratio)


def ls_diag(p: PairInput, dense_b: np.ndarray, lam: float, centred: bool) -> tuple[np.ndarray, float]:
    """Least-squares c, cross-channel terms dropped (ours). Centred moments when B's bias is
    corrected afterwards (the mean error is removed exactly then); raw second moments otherwise."""
    hs = through_activation(p.activation, p.joint.diagonal())
    keep = 0.0 if centred else 1.0
    m_f, m_q = hs.mean_f * keep, hs.mean_q * keep
    h, a, q = hs.var_f + m_f * m_f, hs.cov_fq + m_f * m_q, hs.var_q + m_q * m_q
    g = gram_diag(dense_b)
    c = solve_diag(g, a, q, lam)
    ones = np.ones(len(c))
    base = objective_diag(g, h, a, q, ones)
    return c, float(objective_diag(g, h, a, q, c) / base if base > 0 else 1.0)


def ls_full(p: PairInput, dense_b: np.ndarray, lam: float, centred: bool) -> tuple[np.ndarray, float]:
    """Least-squares c with the full n x n cross-channel system (ours)."""
    d = p.joint.diagonal()
    phi = p.activation
    keep = 1.0 if centred else 0.0
    mh_f = mean_diag(phi, d.mean_f, d.var_f) * keep
    mh_q = mean_diag(phi, d.mean_q, d.var_q) * keep
    cross = bivariate_matrix(phi, phi, d.mean_f, d.var_f, d.mean_q, d.var_q, p.joint.cov_fq)
    qq = bivariate_matrix(phi, phi, d.mean_q, d.var_q, d.mean_q, d.var_q, p.joint.cov_qq)
    ff = bivariate_matrix(phi, phi, d.mean_f, d.var_f, d.mean_f, d.var_f, p.joint.cov_ff)
    a = cross - np.outer(mh_f, mh_q)
    q = qq - np.outer(mh_q, mh_q)
    h = ff - np.outer(mh_f, mh_f)
    g = gram(dense_b)
    c = solve_full(g, a, q, lam)
    ones = np.ones(len(c))
    base = objective_full(g, h, a, q, ones)
    return c, float(objective_full(g, h, a, q, c) / base if base > 0 else 1.0)


# Our compensations of a pair's second layer, by correction name.
COMPENSATIONS = {"energy": energy, "ls-diag": ls_diag, "ls-full": ls_full}


def bias_shift(mean_f: np.ndarray, mean_q: np.ndarray) -> np.ndarray:
    """What bias correction adds to the bias: the float output mean minus the quantized one."""
    return mean_f - mean_q


__all__ = ["COMPENSATIONS", "PairInput", "bias_shift", "energy", "ls_diag",
           "ls_full", "paper_factor"]
