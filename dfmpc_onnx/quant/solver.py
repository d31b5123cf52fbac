"""The closed-form compensation of METHOD.md.

Objective over the per-channel factors c that scale the second layer's input channels:

    L(c) = sum_jk G_jk E[d_j d_k] + lam ||c - 1||^2,   d_j = h_j - c_j h^_j (centred)

with G = sum over outputs and taps of W_B^T W_B. Setting the gradient to zero gives

    (G o Q + lam I) c = (G o A)^T 1 + lam 1,   A_jk = Cov(h_j, h^_k), Q_jk = Cov(h^_j, h^_k)

("full"), or its diagonal ("diag"). Moments are centred because the second layer's bias is
corrected afterwards, which removes the mean error exactly; pass raw second moments instead to get
the paper's uncentred form. ``lam`` is relative to the mean of diag(G o Q) so it is scale-free.
"""

from __future__ import annotations

import numpy as np


def gram(w_dense: np.ndarray) -> np.ndarray:
    """G_jk = sum over outputs o and taps t of W[o, j, t] W[o, k, t] (dense canonical weight)."""
    return np.einsum("ojt,okt->jk", w_dense, w_dense)


def gram_diag(w_dense: np.ndarray) -> np.ndarray:
    return np.einsum("ojt,ojt->j", w_dense, w_dense)


def ridge(lam: float, gq_diag: np.ndarray) -> float:
    scale = float(np.mean(gq_diag)) if gq_diag.size else 0.0
    return lam * scale if scale > 0 else lam


def solve_full(G: np.ndarray, A: np.ndarray, Q: np.ndarray, lam: float) -> np.ndarray:
    """Minimiser of the full quadratic objective (lam relative, see module doc)."""
    gq = G * Q
    r = ridge(lam, np.diag(gq))
    n = len(G)
    lhs = gq + r * np.eye(n)
    rhs = (G * A).sum(axis=0) + r
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def solve_diag(g: np.ndarray, a: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    """c_k = (G_kk A_kk + lam) / (G_kk Q_kk + lam): the objective with cross-channel terms dropped."""
    gq = g * q
    r = ridge(lam, gq)
    denom = gq + r
    return np.where(denom > 0, (g * a + r) / np.where(denom > 0, denom, 1.0), 1.0)


def objective_full(G, H, A, Q, c, lam: float = 0.0) -> float:
    """L(c) with full matrices (H_jk = Cov(h_j, h_k)); lam relative as in the solvers."""
    r = ridge(lam, np.diag(G * Q))
    val = np.sum(G * (H - A * c[None, :] - A.T * c[:, None] + Q * np.outer(c, c)))
    return float(val + r * np.sum((c - 1) ** 2))


def objective_diag(g, h, a, q, c, lam: float = 0.0) -> float:
    """The diagonal objective: sum_j G_jj E[d_j^2] + lam ||c - 1||^2."""
    r = ridge(lam, g * q)
    return float(np.sum(g * (h - 2 * c * a + c * c * q)) + r * np.sum((c - 1) ** 2))
