"""Data-free statistics: every tensor is described per channel as a Gaussian, twice.

The float network (f) and the quantized network (q) see different tensors; we carry both means,
both variances and their covariance per channel (channels independent, spatial positions
independent). Carrying the quantized stream is what lets bias correction and compensation fix the
errors of *earlier* layers too (METHOD.md: local fixes computed on float statistics lost accuracy).

Expectations through an activation phi use Gauss-Hermite quadrature on the bivariate normal of
(float, quantized) values, vectorised over channels; no fake inputs are sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

Phi = Callable[[np.ndarray], np.ndarray]  # channel axis first
_EPS = 1e-12


def hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(xi)], xi ~ N(0, 1): sum(w * f(nodes)) (weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


@dataclass
class TensorStats:
    """Per-channel means, variances and float/quantized covariance; arrays of length C or 1."""

    mean_f: np.ndarray
    var_f: np.ndarray
    mean_q: np.ndarray
    var_q: np.ndarray
    cov_fq: np.ndarray
    source: str = "propagated"  # "bn" where kept BatchNormalization statistics anchored it

    @classmethod
    def gaussian(cls, mean, var, source: str = "assumed") -> TensorStats:
        """The same distribution in both streams (e.g. the model input)."""
        m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        v = np.atleast_1d(np.asarray(var, dtype=np.float64))
        m, v = np.broadcast_arrays(m, v)
        return cls(m.copy(), v.copy(), m.copy(), v.copy(), v.copy(), source)

    @property
    def channels(self) -> int:
        return len(self.mean_f)

    def expand(self, channels: int) -> TensorStats:
        """Broadcast a length-1 description to ``channels``; refuse a real mismatch."""
        if self.channels == channels:
            return self
        if self.channels != 1:
            raise ValueError(f"statistics have {self.channels} channels, layer expects {channels}")
        f = lambda a: np.repeat(a, channels)  # noqa: E731
        return TensorStats(f(self.mean_f), f(self.var_f), f(self.mean_q), f(self.var_q),
                           f(self.cov_fq), self.source)

    @property
    def trusted(self) -> bool:
        """Anchored by kept BatchNormalization statistics with no layer in between."""
        return self.source == "bn"

    def repeat(self, k: int) -> TensorStats:
        """Each channel repeated k times (Flatten of a C x H x W map into C*H*W features)."""
        f = lambda a: np.repeat(a, k)  # noqa: E731
        return TensorStats(f(self.mean_f), f(self.var_f), f(self.mean_q), f(self.var_q),
                           f(self.cov_fq), self.source)

    def anchored(self, mean: np.ndarray, std: np.ndarray) -> TensorStats:
        """Replace the float stream by known statistics (kept BN: N(beta, gamma^2)).

        The propagated description was off by a per-channel shift and scale; the quantized stream
        is assumed to be off by the same shift and scale, so their relation is kept.
        """
        c = len(mean)
        s = self.expand(c)
        # A weight of inf upstream makes both streams' statistics inf: the shift is then NaN,
        # which the consumers of statistics treat as unknown, not an error.
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.where(s.var_f > _EPS, np.abs(std) / np.sqrt(np.maximum(s.var_f, _EPS)), 1.0)
            shift = mean - s.mean_f
            var = std.astype(np.float64) ** 2
            dead = s.var_f <= _EPS
            var_q = np.where(dead, var, s.var_q * a * a)
            cov = np.where(dead, var, s.cov_fq * a * a)
            return TensorStats(mean.astype(np.float64), var, s.mean_q + shift, var_q, cov, "bn")


def _std_rho(var_a, var_b, cov):
    sa = np.sqrt(np.maximum(var_a, 0.0))
    sb = np.sqrt(np.maximum(var_b, 0.0))
    denom = sa * sb
    rho = np.where(denom > _EPS, cov / np.where(denom > _EPS, denom, 1.0), 0.0)
    return sa, sb, np.clip(rho, -1.0, 1.0)


def _finite(*arrays: np.ndarray) -> np.ndarray:
    """Channels whose every statistic is a finite number (broadcast over the arrays)."""
    ok = np.ones(np.broadcast_shapes(*(np.shape(a) for a in arrays)), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return ok


def _zero_where(ok: np.ndarray, a) -> np.ndarray:
    """``a`` with the channels outside ``ok`` replaced by 0; ``a`` itself when all are fine."""
    a = np.asarray(a, dtype=np.float64)
    return a if ok.all() else np.where(ok, a, 0.0)


def _zero_bad_channels(f: np.ndarray, lead: int) -> tuple[np.ndarray, np.ndarray | None]:
    """phi's values at the quadrature nodes, with every channel (indexed by the first ``lead``
    axes) holding a value that is not finite set to 0, and the mask of those channels (None when
    every value is finite, the usual case). phi is not finite at finite points only when the
    model's activation has Inf or NaN constants; summing such values would warn (inf - inf)."""
    finite = np.isfinite(f)
    if finite.all():
        return f, None
    bad = ~finite.reshape(f.shape[:lead] + (-1,)).all(-1)
    return np.where(bad.reshape(bad.shape + (1,) * (f.ndim - lead)), 0.0, f), bad


def bivariate_diag(phi_a: Phi, phi_b: Phi, mean_a, var_a, mean_b, var_b, cov,
                   points: int = 24) -> np.ndarray:
    """E[phi_a(u_j) phi_b(v_j)] per channel j for (u_j, v_j) jointly normal.

    A channel with a statistic that is not finite (an Inf or NaN bias or BN parameter upstream)
    has no meaningful expectation: it gets NaN, and phi is never evaluated at infinite points,
    where it would compute inf - inf or inf * 0. So does a channel where phi itself is not finite.
    Finite channels are computed exactly as before.
    """
    ok = _finite(mean_a, var_a, mean_b, var_b, cov)
    if not ok.all():
        mean_a, var_a, mean_b, var_b, cov = (_zero_where(ok, a)
                                             for a in (mean_a, var_a, mean_b, var_b, cov))
        out = bivariate_diag(phi_a, phi_b, mean_a, var_a, mean_b, var_b, cov, points)
        return np.where(ok, out, np.nan)
    x, w = hermite(points)
    sa, sb, rho = _std_rho(var_a, var_b, cov)
    u = mean_a[:, None, None] + sa[:, None, None] * x[None, :, None]
    r = rho[:, None, None]
    v = mean_b[:, None, None] + sb[:, None, None] * (
        r * x[None, :, None] + np.sqrt(1.0 - r * r) * x[None, None, :])
    fa, bad_a = _zero_bad_channels(phi_a(u), 1)
    fb, bad_b = _zero_bad_channels(phi_b(v), 1)
    out = np.einsum("cab,a,b->c", fa * fb, w, w)
    for bad in (bad_a, bad_b):
        if bad is not None:
            out[bad] = np.nan
    return out


def mean_diag(phi: Phi, mean, var, points: int = 48) -> np.ndarray:
    """E[phi(u_j)] per channel; NaN for a channel whose mean or variance, or phi's value at a
    node, is not finite (see ``bivariate_diag``)."""
    ok = _finite(mean, var)
    if not ok.all():
        out = mean_diag(phi, _zero_where(ok, mean), _zero_where(ok, var), points)
        return np.where(ok, out, np.nan)
    x, w = hermite(points)
    u = mean[:, None] + np.sqrt(np.maximum(var, 0.0))[:, None] * x[None, :]
    f, bad = _zero_bad_channels(phi(u), 1)
    out = f @ w
    if bad is not None:
        out[bad] = np.nan
    return out


def through_activation(phi: Phi, s: TensorStats, points: int = 24) -> TensorStats:
    """Statistics of (phi(u_f), phi(u_q)) from those of (u_f, u_q), per channel."""
    mf = mean_diag(phi, s.mean_f, s.var_f)
    mq = mean_diag(phi, s.mean_q, s.var_q)
    eff = bivariate_diag(phi, phi, s.mean_f, s.var_f, s.mean_f, s.var_f, s.var_f, points)
    eqq = bivariate_diag(phi, phi, s.mean_q, s.var_q, s.mean_q, s.var_q, s.var_q, points)
    efq = bivariate_diag(phi, phi, s.mean_f, s.var_f, s.mean_q, s.var_q, s.cov_fq, points)
    return TensorStats(mf, np.maximum(eff - mf * mf, 0.0), mq, np.maximum(eqq - mq * mq, 0.0),
                       efq - mf * mq, s.source)


def _contract(a: np.ndarray, b: np.ndarray | None, k: np.ndarray, v: np.ndarray,
              group: int) -> np.ndarray:
    """Per output o: the sum over o's input channels c and taps t of a[o,c,t] (b[o,c,t]) k[t] v[c].

    One einsum without intermediates: a VGG classifier layer is 100 M weights, and the plain
    elementwise form made several weight-sized float64 temporaries per statistic."""
    out, cing, taps = a.shape
    ag = a.reshape(group, out // group, cing, taps)
    vg = np.asarray(v, dtype=np.float64).reshape(group, cing)
    if b is None:
        return np.einsum("gock,k,gc->go", ag, k, vg).reshape(out)
    return np.einsum("gock,gock,k,gc->go", ag, b.reshape(ag.shape), k, vg).reshape(out)


def _cover(taps: int, coverage: np.ndarray | None) -> np.ndarray:
    return np.ones(taps) if coverage is None else coverage


def through_linear(w_f: np.ndarray, w_q: np.ndarray, b_f: np.ndarray, b_q: np.ndarray,
                   group: int, s: TensorStats, coverage: np.ndarray | None = None) -> TensorStats:
    """Statistics after a linear layer with canonical weights (out, in_per_group, taps).

    Inputs are independent across channels and taps, so variances add; the float stream goes
    through ``w_f`` and the quantized one through ``w_q``. ``coverage[t]`` is the fraction of
    output positions where tap t reads real input rather than zero padding (see tap_coverage):
    on small feature maps padding removes a large share of the taps.
    """
    out, cing, taps = w_f.shape
    k = _cover(taps, coverage)
    s = s.expand(cing * group)
    mean_f = _contract(w_f, None, k, s.mean_f, group) + b_f
    mean_q = _contract(w_q, None, k, s.mean_q, group) + b_q
    var_f = _contract(w_f, w_f, k, s.var_f, group)
    var_q = _contract(w_q, w_q, k, s.var_q, group)
    cov = _contract(w_f, w_q, k, s.cov_fq, group)
    return TensorStats(mean_f, var_f, mean_q, var_q, cov, "propagated")


def through_linear_by_blocks(blocks: Iterable[tuple[np.ndarray, np.ndarray]], b_f: np.ndarray,
                             bias_q: Callable[[np.ndarray, np.ndarray], np.ndarray],
                             s: TensorStats, coverage: np.ndarray | None = None
                             ) -> tuple[TensorStats, np.ndarray]:
    """``through_linear`` for a one-group layer given as blocks of output rows (canonical float64
    (rows, in, taps) of the float and quantized weight), so a layer of 100 M weights never holds
    two float64 copies of itself. Every statistic is per output channel, so the blocks are
    independent. ``bias_q(mean_f, mean_q)`` gives the quantized bias from ``output_means``'s two
    vectors (bias correction needs them before the quantized stream's mean). Returns the output
    statistics and that bias."""
    parts = []
    for w_f, w_q in blocks:
        k = _cover(w_f.shape[2], coverage)
        se = s.expand(w_f.shape[1])
        parts.append((_contract(w_f, None, k, se.mean_f, 1), _contract(w_q, None, k, se.mean_f, 1),
                      _contract(w_q, None, k, se.mean_q, 1), _contract(w_f, w_f, k, se.var_f, 1),
                      _contract(w_q, w_q, k, se.var_q, 1), _contract(w_f, w_q, k, se.cov_fq, 1)))
    f_at_f, q_at_f, q_at_q, var_f, var_q, cov = (np.concatenate(p) for p in zip(*parts, strict=True))
    b_q = bias_q(f_at_f, q_at_f)
    return TensorStats(f_at_f + b_f, var_f, q_at_q + b_q, var_q, cov, "propagated"), b_q


def output_means(w_f, w_q, group: int, s: TensorStats,
                 coverage: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """E[W x] and E[W^ x] without bias (averaged over output positions), both under the float
    stream's input mean: what bias correction compares.

    Only the layer's own rounding error is corrected (the classic bias correction of Nagel et al.
    2019). Correcting the drift of the quantized stream too (E[W^ x^]) was measured to hurt on every
    kept-BN example model (BENCHMARKS.md): that drift is a prediction through every earlier layer,
    and its errors compound."""
    out, cing, taps = w_f.shape
    k = _cover(taps, coverage)
    s = s.expand(cing * group)
    return _contract(w_f, None, k, s.mean_f, group), _contract(w_q, None, k, s.mean_f, group)


def tap_coverage(in_spatial: list[int], kernel: list[int], strides: list[int],
                 pads: list[int], dilations: list[int]) -> np.ndarray:
    """Per tap (row-major over the kernel), the fraction of output positions where the tap
    reads an input element instead of padding. Separable: the product of per-axis fractions."""
    d = len(kernel)
    per_axis = []
    for a in range(d):
        size, k, st, dil = in_spatial[a], kernel[a], strides[a], dilations[a]
        begin, end = pads[a], pads[a + d]
        out = (size + begin + end - dil * (k - 1) - 1) // st + 1
        pos = np.arange(max(out, 1))[:, None] * st - begin + np.arange(k)[None, :] * dil
        per_axis.append(((pos >= 0) & (pos < size)).mean(axis=0))
    cov = per_axis[0]
    for f in per_axis[1:]:
        cov = np.outer(cov, f).reshape(-1)
    return cov


@dataclass
class JointGaussian:
    """Means and full covariances of (z, z^) over the n output channels of a pair's first layer."""

    mean_f: np.ndarray
    mean_q: np.ndarray
    cov_ff: np.ndarray
    cov_qq: np.ndarray
    cov_fq: np.ndarray  # Cov(z_j, z^_k)

    def diagonal(self) -> TensorStats:
        return TensorStats(self.mean_f, np.diag(self.cov_ff).copy(), self.mean_q,
                           np.diag(self.cov_qq).copy(), np.diag(self.cov_fq).copy())

    def sliced(self, channels: slice) -> JointGaussian:
        """The statistics of some channels only (those a reader of the layer sees)."""
        c = channels
        return JointGaussian(self.mean_f[c], self.mean_q[c], self.cov_ff[c, c], self.cov_qq[c, c],
                             self.cov_fq[c, c])

    def anchored(self, mean: np.ndarray, std: np.ndarray) -> JointGaussian:
        """Same re-anchoring as TensorStats.anchored, applied to the full covariances."""
        d = self.diagonal()
        a = np.where(d.var_f > _EPS, np.abs(std) / np.sqrt(np.maximum(d.var_f, _EPS)), 1.0)
        scale = np.outer(a, a)
        shift = mean - self.mean_f
        cov_ff = self.cov_ff * scale
        dead = d.var_f <= _EPS
        idx = np.flatnonzero(dead)
        cov_ff[idx, idx] = std[idx] ** 2
        cov_qq = self.cov_qq * scale
        cov_qq[idx, idx] = std[idx] ** 2
        cov_fq = self.cov_fq * scale
        cov_fq[idx, idx] = std[idx] ** 2
        return JointGaussian(mean.astype(np.float64), self.mean_q + shift, cov_ff, cov_qq, cov_fq)


def joint_pre_activation(w_f_dense: np.ndarray, w_q_dense: np.ndarray, b_f: np.ndarray,
                         b_q: np.ndarray, s: TensorStats,
                         coverage: np.ndarray | None = None) -> JointGaussian:
    """(z, z^) = (W x + b, W^ x^ + b^) for dense weights (n, C_in, taps) and diagonal x stats."""
    n, cin, taps = w_f_dense.shape
    k = _cover(taps, coverage)
    w_f_dense, w_q_dense = w_f_dense * np.sqrt(k), w_q_dense * np.sqrt(k)
    s = s.expand(cin)
    wf = w_f_dense.reshape(n, -1)
    wq = w_q_dense.reshape(n, -1)
    rep = lambda a: np.repeat(a, taps)  # noqa: E731  (channel-major, matches reshape)
    mean_f = (w_f_dense * np.sqrt(k)).sum(2) @ s.mean_f + b_f
    mean_q = (w_q_dense * np.sqrt(k)).sum(2) @ s.mean_q + b_q
    cov_ff = (wf * rep(s.var_f)) @ wf.T
    cov_qq = (wq * rep(s.var_q)) @ wq.T
    cov_fq = (wf * rep(s.cov_fq)) @ wq.T
    return JointGaussian(mean_f, mean_q, cov_ff, cov_qq, cov_fq)


def bivariate_matrix(phi_a: Phi, phi_b: Phi, mean_a, cov_aa_diag, mean_b, cov_bb_diag,
                     cov_ab: np.ndarray, points: int = 32, block: int = 1 << 22) -> np.ndarray:
    """M[j, k] = E[phi_a(u_j) phi_b(v_k)] for jointly normal u, v with Cov(u_j, v_k) = cov_ab[j, k].

    u_j = mu_j + s_j x1 and v_k = mu_k + t_k (rho_jk x1 + sqrt(1 - rho_jk^2) x2), so phi_a is
    evaluated once per (j, node) and phi_b per (k, j, node, node), in blocks of k to bound memory.
    An entry involving a statistic, or a value of phi, that is not finite is NaN (see
    ``bivariate_diag``).
    """
    ok_a, ok_b = _finite(mean_a, cov_aa_diag), _finite(mean_b, cov_bb_diag)
    ok = ok_a[:, None] & ok_b[None, :] & np.isfinite(cov_ab)
    if not ok.all():
        out = bivariate_matrix(phi_a, phi_b, _zero_where(ok_a, mean_a), _zero_where(ok_a, cov_aa_diag),
                               _zero_where(ok_b, mean_b), _zero_where(ok_b, cov_bb_diag),
                               _zero_where(ok, cov_ab), points, block)
        return np.where(ok, out, np.nan)
    x, w = hermite(points)
    n_a, n_b = len(mean_a), len(mean_b)
    sa = np.sqrt(np.maximum(cov_aa_diag, 0.0))
    sb = np.sqrt(np.maximum(cov_bb_diag, 0.0))
    denom = np.outer(sa, sb)
    rho = np.clip(np.where(denom > _EPS, cov_ab / np.where(denom > _EPS, denom, 1.0), 0.0), -1, 1)
    fa, bad_a = _zero_bad_channels(phi_a(mean_a[:, None] + sa[:, None] * x[None, :]), 1)  # (j, a)
    fa_w = fa * w[None, :]
    out = np.empty((n_a, n_b))
    step = max(1, block // max(1, n_a * points * points))
    for k0 in range(0, n_b, step):
        k1 = min(n_b, k0 + step)
        r = rho[:, k0:k1].T[:, :, None, None]  # (k, j, 1, 1)
        v = mean_b[k0:k1, None, None, None] + sb[k0:k1, None, None, None] * (
            r * x[None, None, :, None] + np.sqrt(1.0 - r * r) * x[None, None, None, :])
        fb, bad_b = _zero_bad_channels(phi_b(v), 2)  # (k, j, a, b), channel k first
        out[:, k0:k1] = np.einsum("kjab,ja,b->jk", fb, fa_w, w)
        if bad_b is not None:
            out[:, k0:k1][bad_b.T] = np.nan
    if bad_a is not None:
        out[bad_a] = np.nan
    return out
