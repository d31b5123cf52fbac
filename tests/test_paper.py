"""--method paper is the DF-MPC paper's algorithm: checked against the equations written out here.

The reference keeps BatchNormalization in the graph, rounds the raw (unfolded) weights with the
paper's grids computed directly in this file, and folds c into BN's gamma and beta, as the paper
describes; the converter folds BN first and carries everything in per-channel scales. Both must
compute the same function.
"""

import numpy as np
import pytest
from conftest import assert_valid, run
from onnx import numpy_helper
from test_quant_emit import fold_bn_in_numpy
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.quant.corrections import paper_factor


def test_eq27_closed_form_is_the_argmin_of_its_objective():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 30))
    x_hat = np.sign(x) * (np.abs(x) > 0.6) * 0.9 + 0.05 * rng.standard_normal((5, 30))
    y, y_hat = rng.standard_normal(5), rng.standard_normal(5)
    for lam1, lam2 in ((0.5, 0.0), (0.0, 0.0), (2.0, 0.3)):
        c = paper_factor(x, x_hat, y, y_hat, lam1, lam2)
        grid = np.linspace(0, 3, 30001)
        for j in range(5):
            obj = (((grid[:, None] * x_hat[j] - x[j]) ** 2).sum(1)
                   + lam1 * (grid * y_hat[j] - y[j]) ** 2 + lam2 * grid ** 2)
            assert abs(c[j] - grid[np.argmin(obj)]) <= 1e-4 + 1e-3 * abs(c[j])


def _twn(w):
    a = np.abs(w)
    delta = 0.7 * a.mean()
    return np.sign(w) * (a > delta) * a[a > delta].mean()


def _dorefa(w, k):
    m = np.abs(w).max()
    n = 2 ** k - 1
    return m * (2 / n * np.round(n * (w / (2 * m) + 0.5)) - 1)


def paper_reference(model, bits, pair_a, compensate, lam1=0.5, lam2=0.0):
    """The paper on a BN-kept graph: grids on raw weights, c folded into the pair's BN."""
    ref = model.__class__()
    ref.CopyFrom(model)
    inits = {t.name: t for t in ref.graph.initializer}
    arr = {k: numpy_helper.to_array(t).astype(np.float64) for k, t in inits.items()}
    for t in ref.graph.initializer:
        if t.name.endswith(".weight"):
            layer = t.name.split(".")[0]
            w = arr[t.name]
            fq = _twn(w) if bits[layer] == 2 else _dorefa(w, bits[layer])
            arr[t.name] = fq
            t.CopyFrom(numpy_helper.from_array(fq.astype(np.float32), t.name))
    if compensate:
        i = pair_a[len("conv"):]
        names = [f"bn{i}.{k}" for k in "gbmv"]
        if names[0] in arr:
            g, b, mu, var = (arr[n] for n in names)
            k = g / np.sqrt(var + 1e-5)
            beta = b
        else:  # BN folded at export: gamma/sigma = 1, y = the folded bias
            k, mu, beta = np.ones(arr[f"{pair_a}.bias"].shape), 0.0, arr[f"{pair_a}.bias"]
        w_raw = numpy_helper.to_array(model.graph.initializer[[t.name for t in model.graph.initializer]
                                                              .index(f"{pair_a}.weight")])
        w_raw = w_raw.astype(np.float64).reshape(len(k), -1)
        w_hat = arr[f"{pair_a}.weight"].reshape(len(k), -1)
        y = beta + k * (arr[f"{pair_a}.bias"] - mu) if names[0] in arr else beta
        c = np.empty(len(k))
        for j in range(len(k)):
            xj, xh = k[j] * w_raw[j], k[j] * w_hat[j]
            c[j] = max(0.0, (xh @ xj + lam1 * y[j] * y[j]) / (xh @ xh + lam1 * y[j] ** 2 + lam2))
        if names[0] in arr:  # c_j gamma_j and c_j beta_j; the conv bias goes through BN's k
            for n, v in ((names[0], g * c), (names[1], b * c)):
                inits[n].CopyFrom(numpy_helper.from_array(v.astype(np.float32), n))
            inits[f"{pair_a}.bias"].CopyFrom(numpy_helper.from_array(
                arr[f"{pair_a}.bias"].astype(np.float32), f"{pair_a}.bias"))
        else:
            wname = f"{pair_a}.weight"
            shape = arr[wname].shape
            inits[wname].CopyFrom(numpy_helper.from_array(
                (arr[wname].reshape(len(c), -1) * c[:, None]).reshape(shape).astype(np.float32), wname))
            inits[f"{pair_a}.bias"].CopyFrom(numpy_helper.from_array(
                (arr[f"{pair_a}.bias"] * c).astype(np.float32), f"{pair_a}.bias"))
    return ref


@pytest.mark.parametrize("kept", [True, False], ids=["bn-kept", "bn-folded"])
@pytest.mark.parametrize("correction", ["paper", "none"])
@pytest.mark.parametrize(("low", "high"), [(2, 6), (3, 6), (2, 8)])
def test_paper_method_equals_the_equations(kept, correction, low, high, x8):
    model = conv_net(seed=4, c=12, bn=True)
    if not kept:
        model = fold_bn_in_numpy(model)
    q, report = convert(model, ConvertOptions(method="paper", correction=correction,
                                              low_bits=low, high_bits=high))
    assert_valid(q)
    assert report.pairs == [("conv1", "conv2")]
    bits = {e.name: e.bits for e in report.layers}
    assert bits["conv1"] == low and bits["conv2"] == high and bits["conv0"] == high
    ref = paper_reference(model, bits, "conv1", compensate=correction == "paper")
    expect = run(ref, x8)
    np.testing.assert_allclose(run(q, x8), expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())
    c = report.layer("conv1")
    assert (c.comp_min is not None) == (correction == "paper")
    assert not q.graph.initializer or all(not t.name.endswith("_bias_corrected") or
                                          t.name.startswith("conv1") for t in q.graph.initializer)
    if not kept and correction == "paper":
        assert any("gamma/sigma = 1" in n for n in report.notes)
