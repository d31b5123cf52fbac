"""Pairs where real networks put them: one low-bit layer compensated by every layer that reads its
channels, through Concat, Split, branches and a kept BatchNormalization (pre-activation layouts).
Tiny graphs built here; numerics checked against ONNX Runtime and a NumPy reference."""

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_valid, run
from onnx import TensorProto, helper, numpy_helper
from test_paper import paper_reference
from tinymodels import make_model

from dfmpc_onnx import ConvertOptions, convert, inspect_model

PAIRS = ConvertOptions(method="pairs", fidelity_samples=0)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _conv_w(rng, cout, cin, k=1):
    return (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)


def caffe2_bn_net(seed=0, c=8):
    """Conv -> Mul(Unsqueeze(scale)) -> Add(Unsqueeze(shift)) -> Relu -> Conv: Caffe2's spelling
    of BN + ReLU in onnx's light DenseNet-121 and Inception v2 (opset 9, axes attribute)."""
    rng = np.random.default_rng(seed)
    inits = {"w0": _conv_w(rng, c, 3), "w1": _conv_w(rng, c, c, 3), "w2": _conv_w(rng, c, c),
             "w3": _conv_w(rng, 4, c), "s": (0.5 + rng.random(c)).astype(np.float32),
             "b": (0.1 * rng.standard_normal(c)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Unsqueeze", ["s"], ["s3"], name="us", axes=[1, 2]),
             helper.make_node("Mul", ["c1", "s3"], ["m1"], name="mul1"),
             helper.make_node("Unsqueeze", ["b"], ["b3"], name="ub", axes=[1, 2]),
             helper.make_node("Add", ["m1", "b3"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["out"], name="conv3")]
    return make_model(nodes, [_vi("input", [1, 3, 8, 8])], [_vi("out", [1, 4, 8, 8])], inits,
                      opset=9)


def test_unsqueezed_bn_constants_are_folded_so_the_pair_is_found():
    rep = inspect_model(caffe2_bn_net(), PAIRS)
    assert rep.pairs == [("conv1", "conv2")]
    assert rep.layer("conv1").activation == "Mul+Add+Relu"


class Net:
    """A few lines per graph: conv(x, cout) adds a 1x1 (or kxk) Conv with bias named conv<i>."""

    def __init__(self, seed=0, cin=3):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], {}, 0
        self.cin = cin

    def conv(self, x, cin, cout, k=1, name=None, w=None, b=None):
        name = name or f"conv{self.n}"
        self.n += 1
        self.inits[f"{name}.weight"] = _conv_w(self.rng, cout, cin, k) if w is None else w
        self.inits[f"{name}.bias"] = ((0.1 * self.rng.standard_normal(cout)).astype(np.float32)
                                      if b is None else b)
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"],
                                           [f"{name}_out"], name=name, pads=[k // 2] * 4))
        return f"{name}_out"

    def op(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    def model(self, out, cout):
        self.nodes[-1].output[0] = "out"
        for n in self.nodes:  # the renamed output, wherever it was read
            n.input[:] = ["out" if i == out else i for i in n.input]
        return make_model(self.nodes, [_vi("input", ["N", self.cin, 8, 8])],
                          [_vi("out", ["N", cout, 8, 8])], self.inits)


def branch_net(seed=0, duplicate=False, act="Relu"):
    """stem -> relu -> conv1 -> act -> (conv2a, conv2b) -> relu -> Concat -> head (SqueezeNet's
    fire module). duplicate=True: two identical copies of conv1, one per branch (old pairs)."""
    g = Net(seed)
    x = g.op("Relu", [g.conv("input", 3, 8, name="stem")], "relu0")
    w1, b1 = _conv_w(g.rng, 6, 8), (0.1 * g.rng.standard_normal(6)).astype(np.float32)
    ins = []
    for k, name in enumerate(("conv2a", "conv2b")):
        if duplicate or k == 0:
            h = g.conv(x, 8, 6, w=w1, b=b1, name=f"conv1{'ab'[k] if duplicate else ''}")
            h = g.op(act, [h], f"act1{k}")
        ins.append(g.op("Relu", [g.conv(h, 6, 5, k=3, name=name)], f"relu2{k}"))
    cat = g.op("Concat", ins, "cat", axis=1)
    return g.model(g.conv(cat, 10, 4, name="head"), 4)


def split_net(seed=0, two_producers=False):
    """stem -> relu -> conv1 (8 channels) -> relu -> Split 3/5 -> convx, convy -> Add -> head.
    two_producers=True: conv1's rows 0:3 and 3:8 as two layers, each read whole (old pairs)."""
    g = Net(seed)
    x = g.op("Relu", [g.conv("input", 3, 8, name="stem")], "relu0")
    w1, b1 = _conv_w(g.rng, 8, 8), (0.1 * g.rng.standard_normal(8)).astype(np.float32)
    if two_producers:
        parts = [g.op("Relu", [g.conv(x, 8, n, w=w1[s], b=b1[s], name=f"conv1{k}")], f"r1{k}")
                 for k, (n, s) in enumerate(((3, slice(0, 3)), (5, slice(3, 8))))]
    else:
        h = g.op("Relu", [g.conv(x, 8, 8, w=w1, b=b1, name="conv1")], "r1")
        g.inits["split"] = np.array([3, 5], np.int64)
        g.nodes.append(helper.make_node("Split", [h, "split"], ["s0", "s1"], name="split",
                                        axis=1))
        parts = ["s0", "s1"]
    ys = [g.conv(p, n, 6, k=3, name=name)
          for p, n, name in zip(parts, (3, 5), ("convx", "convy"), strict=True)]
    y = g.op("Relu", [g.op("Add", ys, "add")], "relu3")
    return g.model(g.conv(y, 6, 4, name="head"), 4)


def concat_net(seed=0, bn=False, sub=False):
    """stem -> relu -> conv1 -> relu -> Concat[stem's relu, it] -> [BN ->] relu -> conv2 -> head
    (DenseNet's pre-activation layout with bn=True). sub=True: conv2 reads conv1's part only, with
    its columns of conv2's weight (the old pair, for comparison)."""
    g = Net(seed)
    r0 = g.op("Relu", [g.conv("input", 3, 4, name="stem")], "relu0")
    h = g.op("Relu", [g.conv(r0, 4, 6, k=3, name="conv1")], "relu1")
    w2 = _conv_w(g.rng, 8, 10, 3)
    b2 = (0.1 * g.rng.standard_normal(8)).astype(np.float32)
    if sub:
        x, w2 = h, w2[:, 4:]
    else:
        x = g.op("Concat", [r0, h], "cat", axis=1)
    if bn:
        n = 6 if sub else 10
        bn_ = {k: v[-n:].astype(np.float32) for k, v in {
            "g": 0.5 + g.rng.random(10), "b": 0.2 * g.rng.standard_normal(10),
            "m": 0.3 * g.rng.standard_normal(10), "v": 0.5 + g.rng.random(10)}.items()}
        g.inits.update({f"bn.{k}": v for k, v in bn_.items()})
        x = g.op("Relu", [g.op("BatchNormalization", [x] + [f"bn.{k}" for k in "gbmv"], "bn")],
                 "relu_bn")
    y = g.op("Relu", [g.conv(x, w2.shape[1], 8, k=3, name="conv2", w=w2, b=b2)], "relu2")
    return g.model(g.conv(y, 8, 4, name="head"), 4)


def _convert(model, **kw):
    options = dict(method="pairs", fidelity_samples=0, propagated_stats=True)
    return convert(model, ConvertOptions(**{**options, **kw}))


@pytest.mark.parametrize("correction", ["energy", "ls-diag", "ls-full"])
def test_branch_into_two_convs_equals_one_producer_per_branch(correction, x8):
    """conv1 -> relu -> (conv2a, conv2b): both compensated, each by its own factors, exactly as if
    each branch had its own copy of conv1 (two pairs of the paper's kind)."""
    q, rep = _convert(branch_net(), correction=correction, bias_correction=False)
    assert rep.pairs == [("conv1", "conv2a"), ("conv1", "conv2b")]
    assert rep.layer("conv1").partner == "conv2a, conv2b" and rep.layer("conv2b").role == "B"
    assert rep.layer("conv2a").comp_min is not None and rep.layer("conv2b").comp_min is not None
    assert any(line.startswith("conv1 ") and line.endswith("  conv2a, conv2b")
               for line in rep.format().splitlines())
    ref, ref_rep = _convert(branch_net(duplicate=True), correction=correction,
                            bias_correction=False)
    assert ref_rep.pairs == [("conv1a", "conv2a"), ("conv1b", "conv2b")]
    assert_valid(q)
    np.testing.assert_allclose(run(q, x8), run(ref, x8), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("correction", ["energy", "ls-full"])
def test_split_compensates_each_reader_on_its_part(correction, x8):
    """conv1 -> relu -> Split 3/5 -> convx, convy: the same as conv1's rows 0:3 and 3:8 as two
    layers, each read whole: each reader's factors come from its own part of conv1."""
    q, rep = _convert(split_net(), correction=correction, bias_correction=False)
    assert rep.pairs == [("conv1", "convx"), ("conv1", "convy")]
    assert rep.layer("conv1").activation == "Relu+Split"
    ref, ref_rep = _convert(split_net(two_producers=True), correction=correction,
                            bias_correction=False)
    assert ref_rep.pairs == [("conv10", "convx"), ("conv11", "convy")]
    assert_valid(q)
    np.testing.assert_allclose(run(q, x8), run(ref, x8), rtol=1e-5, atol=1e-5)


def _dequantized(q, layer):
    """A converted layer's weight as its DequantizeLinear computes it (per-channel, axis 0)."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    node = next(n for n in q.graph.node if n.name == layer)
    dq = next(n for n in q.graph.node if n.output[0] == node.input[1])
    v, s = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
    return v * s.reshape((-1,) + (1,) * (v.ndim - 1))


def _column_gain(q, model, layer):
    """Per input channel: norm of the converted weight's column over the float one's (the
    compensation factor, up to 8-bit rounding)."""
    w = numpy_helper.to_array(next(t for t in model.graph.initializer
                                   if t.name == f"{layer}.weight")).astype(np.float64)
    return np.sqrt((_dequantized(q, layer) ** 2).sum(axis=(0, 2, 3)) / (w ** 2).sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("bn", [False, True], ids=["concat", "concat-bn-relu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_concat_compensates_the_producers_channels_only(bn, seed):
    """Concat[stem's relu (4), conv1's relu (6)] -> [BN -> relu ->] conv2: conv2's input channels
    4:10 get the factors conv2 would get reading conv1 alone (its columns 4:10 as a layer), its
    channels 0:4 none."""
    options = dict(correction="ls-diag")
    q, rep = _convert(concat_net(seed, bn=bn), **options)
    label = "Relu+Concat" + ("+BatchNormalization+Relu" if bn else "")
    assert rep.pairs == [("conv1", "conv2")] and rep.layer("conv1").activation == label
    sub, sub_rep = _convert(concat_net(seed, bn=bn, sub=True), **options)
    assert sub_rep.pairs == [("conv1", "conv2")]
    gain = _column_gain(q, concat_net(seed, bn=bn), "conv2")
    gain_sub = _column_gain(sub, concat_net(seed, bn=bn, sub=True), "conv2")
    assert np.abs(gain_sub - 1).max() > 0.2  # the factors are far from 1 ...
    np.testing.assert_allclose(gain[4:], gain_sub, atol=5e-3)  # ... and land on conv1's channels
    np.testing.assert_allclose(gain[:4], 1.0, atol=5e-3)


def test_concat_compensation_beats_rounding(x8):
    """Through a Concat (no BN between) the compensated model is closer to the float one than the
    same plan with bias correction only, on each of three seeds."""
    for seed in range(3):
        model = concat_net(seed)
        f = run(model, x8)
        err = [np.linalg.norm(run(_convert(model, correction=c)[0], x8) - f)
               for c in ("ls-diag", "bias")]
        assert err[0] <= err[1], (seed, err)


@pytest.mark.parametrize("build", [concat_net, branch_net], ids=["concat", "branches"])
def test_paper_through_concat_and_branches_equals_the_equations(build, x8):
    """--method paper: c (Eq. 27) is folded into the low-bit layer's own output channels, so every
    reader sees it; the readers stay on their high-bit grids. Same NumPy reference as test_paper."""
    model = build()
    q, rep = convert(model, ConvertOptions(method="paper", low_bits=2, high_bits=6))
    assert {a for a, _ in rep.pairs} == {"conv1"} and len(rep.pairs) == (1 if build is concat_net
                                                                        else 2)
    bits = {e.name: e.bits for e in rep.layers}
    assert bits["conv1"] == 2 and all(bits[b] == 6 for _, b in rep.pairs)
    expect = run(paper_reference(model, bits, "conv1", compensate=True), x8)
    np.testing.assert_allclose(run(q, x8), expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())


def refused_net(kind):
    """stem -> relu -> conv1 -> relu -> (something that passes no per-channel factor) -> conv2."""
    g = Net(3)
    r0 = g.op("Relu", [g.conv("input", 3, 6, name="stem")], "relu0")
    h = g.op("Relu", [g.conv(r0, 6, 6, name="conv1")], "relu1")
    if kind == "residual":
        x = g.op("Add", [h, r0], "add")
    elif kind == "gate":  # squeeze-excitation's x * gate(x)
        x = g.op("Mul", [h, g.op("Sigmoid", [g.op("GlobalAveragePool", [h], "gap")], "sig")], "mul")
    elif kind == "pool":
        x = g.op("MaxPool", [h], "pool", kernel_shape=[3, 3], pads=[1] * 4)
    elif kind == "spatial_concat":
        x = g.op("MaxPool", [g.op("Concat", [h, r0], "cat", axis=2)], "pool", kernel_shape=[2, 1],
                 strides=[2, 1])
    else:  # one branch to a layer, one to a graph output through a Concat
        x = g.op("Concat", [h, r0], "cat", axis=1)
        model = g.model(g.conv(h, 6, 4, name="conv2"), 4)
        model.graph.output.append(_vi("cat_out", ["N", 12, 8, 8]))
        return model
    return g.model(g.conv(x, 6, 4, name="conv2"), 4)


@pytest.mark.parametrize(("kind", "why"), [
    ("residual", "reaches Add 'add', which mixes in another tensor"),
    ("gate", "reaches GlobalAveragePool 'gap', which passes no per-channel factor on"),
    ("pool", "reaches MaxPool 'pool', which passes no per-channel factor on"),
    ("spatial_concat", "reaches Concat 'cat', which passes no per-channel factor on"),
    ("graph_output", "reaches a graph output"),
])
def test_no_pair_where_a_reader_cannot_take_the_factor(kind, why):
    rep = inspect_model(refused_net(kind), ConvertOptions(method="pairs", fidelity_samples=0,
                                                          correction="none"))
    assert rep.pairs == []
    assert why in rep.layer("conv1").reason


def test_old_rule_on_request():
    """--no-pair-through: the paper's rule, one reader of the whole activated output."""
    options = ConvertOptions(method="pairs", fidelity_samples=0, pair_through=False,
                             correction="none")
    rep = inspect_model(branch_net(), options)
    assert rep.pairs == [] and "feeds 2 nodes (Conv)" in rep.layer("conv1").reason
    assert inspect_model(split_net(), options).pairs == []
    assert ("conv1", "conv2") not in inspect_model(concat_net(), options).pairs
    assert inspect_model(concat_net(sub=True), options).pairs == [("conv1", "conv2")]


def _equalized(model):
    from dfmpc_onnx.passes import Context, analysis_passes, run_passes

    ctx = Context(ConvertOptions(method="pairs", fidelity_samples=0, equalize=True))
    out = model.__class__()
    out.CopyFrom(model)
    run_passes(analysis_passes(ctx.options), out, ctx)
    return out, ctx


@pytest.mark.parametrize("build", [branch_net, split_net, concat_net],
                         ids=["branches", "split", "concat"])
def test_equalization_over_every_reader_keeps_the_float_model(build, x8):
    model = build()
    eq, ctx = _equalized(model)
    assert not any(n.startswith("equalize: skipped") for n in ctx.report.notes)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in eq.graph.initializer}
    assert not np.allclose(before["conv1.weight"], after["conv1.weight"])
    want = run(model, x8)
    np.testing.assert_allclose(run(eq, x8), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize(("model", "why"), [
    (branch_net(act="Elu"), "not positive-homogeneous"),
    (concat_net(bn=True), "a BatchNormalization between"),
])
def test_equalization_refuses_paths_scales_do_not_pass(model, why, x8):
    eq, ctx = _equalized(model)
    assert any(n.startswith("equalize: skipped pair conv1 -> ") and why in n
               for n in ctx.report.notes)
    np.testing.assert_array_equal(run(eq, x8), run(model, x8))


ZOO = Path(__file__).parent / "data" / "zoo"


def test_zoo_fixtures_pair_coverage():
    """benchmarks.pair_coverage on the tiny real-architecture fixtures: Inception's branches pair
    with the layer reading their Concat; elsewhere the pairs stay those of the paper's rule."""
    from dfmpc_onnx.api import pair_coverage as coverage

    inception = ZOO / "inception_block.ts13-folded.onnx"
    old, new = coverage(inception, False), coverage(inception, True)
    assert (old.layers, old.low_bit, old.pairs) == (10, 2, 2)
    assert (new.low_bit, new.pairs) == (5, 5) and new.weight_share > old.weight_share + 0.3
    rep = inspect_model(inception, PAIRS)
    assert rep.layer("/mix/mix.0/Conv").partner == (
        "/b1/b1.0/Conv, /b3/b3.2/b3.2.0/Conv, /b4/b4.1/b4.1.0/Conv")
    for name in ("densenet_block.ts17-kept", "mbv3_block.ts17-folded", "unet_block.ts11-folded"):
        assert coverage(ZOO / f"{name}.onnx", True) == coverage(ZOO / f"{name}.onnx", False)


class Seq(Net):
    """Transformer-style graphs on (N, T, C) inputs: linear(x) is MatMul + Add(bias)."""

    bias = True

    def linear(self, x, cin, cout, name):
        self.inits[f"{name}.weight"] = (self.rng.standard_normal((cin, cout))
                                        / np.sqrt(cin)).astype(np.float32)
        self.nodes.append(helper.make_node("MatMul", [x, f"{name}.weight"], [f"{name}_mm"],
                                           name=name))
        if not self.bias:
            return f"{name}_mm"
        self.inits[f"{name}.bias"] = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        return self.op("Add", [f"{name}_mm", f"{name}.bias"], f"{name}_add")

    def model(self, out, cout, cin=8, t=4):
        self.nodes[-1].output[0] = "out"
        return make_model(self.nodes, [_vi("input", ["N", t, cin])], [_vi("out", ["N", t, cout])],
                          self.inits)


def swiglu_net(seed=0, bias=True):
    """x -> in_proj -> down(up(x) * silu(gate(x))) -> head: the gated MLP of LLaMA-style blocks."""
    g = Seq(seed)
    g.bias = bias
    x = g.linear("input", 8, 8, "in_proj")
    up, gate = g.linear(x, 8, 16, "up"), g.linear(x, 8, 16, "gate")
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], "sig")], "silu")
    h = g.op("Mul", [up, silu], "glu")
    return g.model(g.linear(g.linear(h, 16, 8, "down"), 8, 5, "head"), 5)


def attention_net(seed=0, heads=2, bias=True):
    """x -> in_proj -> q, k, v projections -> 2 heads of softmax(q k^T / sqrt(d)) v ->
    out_proj -> head (a BERT-style export, one projection each)."""
    g = Seq(seed)
    g.bias = bias
    x = g.linear("input", 8, 8, "in_proj")
    g.inits["heads_shape"] = np.array([0, 0, heads, 8 // heads], np.int64)
    g.inits["merge_shape"] = np.array([0, 0, 8], np.int64)
    g.inits["scale"] = np.array(1 / np.sqrt(8 // heads), np.float32)
    split = {}
    for name in ("q", "k", "v"):
        r = g.op("Reshape", [g.linear(x, 8, 8, name), "heads_shape"], f"{name}_heads")
        split[name] = g.op("Transpose", [r], f"{name}_t", perm=[0, 2, 1, 3])
    kt = g.op("Transpose", [split["k"]], "kt", perm=[0, 1, 3, 2])
    scores = g.op("Mul", [g.op("MatMul", [split["q"], kt], "qk"), "scale"], "scaled")
    ctx = g.op("MatMul", [g.op("Softmax", [scores], "softmax", axis=-1), split["v"]], "pv")
    merged = g.op("Reshape", [g.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3]),
                              "merge_shape"], "merge")
    return g.model(g.linear(g.linear(merged, 8, 8, "out_proj"), 8, 5, "head"), 5)


@pytest.mark.parametrize(("build", "pairs", "label"), [
    (swiglu_net, [("up", "down"), ("gate", "down")], "Mul"),
    (attention_net, [("v", "out_proj")], "attention"),
])
def test_transformer_pairs_where_a_factor_passes_exactly(build, pairs, label):
    """The gated MLP's up (and gate) and the V projection pair with the layer after the gate or
    the attention: a positive factor on their channels reaches it unchanged. Our statistical
    compensations do not model a gate or attention: those B fall back to bias correction."""
    rep = inspect_model(build(), ConvertOptions(method="pairs", fidelity_samples=0,
                                                correction="ls-diag"))
    assert rep.pairs == pairs
    assert rep.layer(pairs[0][0]).activation.endswith(label)
    assert rep.layer(pairs[0][1]).correction == "bias"
    q, _ = _convert(build(), correction="ls-diag")
    assert_valid(q)


@pytest.mark.parametrize("build", [swiglu_net, attention_net])
def test_equalization_through_gate_and_attention_keeps_the_float_model(build):
    """Bias-free projections (LLaMA): a bias Add after a MatMul is a shift no scale passes."""
    x = np.random.default_rng(3).standard_normal((3, 4, 8)).astype(np.float32)
    model = build(bias=False)
    eq, ctx = _equalized(model)
    first = "up" if build is swiglu_net else "v"
    assert not any(f"skipped pair {first} " in n for n in ctx.report.notes)
    if build is swiglu_net:  # gate's factor would have to pass SiLU
        assert any("skipped pair gate -> down (activation is not positive-homogeneous)" in n
                   for n in ctx.report.notes)
    w = {t.name: numpy_helper.to_array(t) for t in eq.graph.initializer}
    assert not np.allclose(w[f"{first}.weight"], numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == f"{first}.weight")))
    want = run(model, x)
    np.testing.assert_allclose(run(eq, x), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_fused_qkv_does_not_pair():
    """One projection for q, k and v: its q and k channels meet in q k^T, which no factor
    passes, so the projection has no pair (the real export in tests/data/zoo: the same)."""
    rep = inspect_model(ZOO / "encoder_block.ts17-folded.onnx", PAIRS)
    assert rep.layer("/qkv/MatMul").role == "single"


LIGHT = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data" / "light"


@pytest.mark.skipif(not LIGHT.exists(), reason="onnx's light test models are not installed")
def test_light_architectures_that_had_no_pairs():
    """onnx's light SqueezeNet pairs each squeeze with both its expands; Caffe2's DenseNet-121
    and Inception v2 (BN spelled Mul/Add of unsqueezed constants) pair as ResNets do."""
    from dfmpc_onnx.api import pair_coverage as coverage

    squeeze = coverage(LIGHT / "light_squeezenet.onnx", True)
    assert (squeeze.low_bit, squeeze.pairs) == (8, 16)
    assert coverage(LIGHT / "light_squeezenet.onnx", False).pairs == 0
    assert coverage(LIGHT / "light_densenet121.onnx", True).pairs == 58
    assert coverage(LIGHT / "light_inception_v2.onnx", True).pairs == 21


def slice_net(seed=0, opset=17, axis=1):
    """split_net with each part taken by a Slice (``x[:, 0:3]``, ``x[:, 3:]``, as exporters
    write Python slicing) instead of one Split: stem -> relu -> conv1 (8) -> relu -> Slice 0:3,
    Slice 3:8 -> convx, convy -> Add -> head. axis=2 slices rows instead (no channel map)."""
    g = Net(seed)
    x = g.op("Relu", [g.conv("input", 3, 8, name="stem")], "relu0")
    w1, b1 = _conv_w(g.rng, 8, 8), (0.1 * g.rng.standard_normal(8)).astype(np.float32)
    h = g.op("Relu", [g.conv(x, 8, 8, w=w1, b=b1, name="conv1")], "r1")
    parts = []
    for k, (start, end) in enumerate(((0, 3), (3, 2**62))):  # an open end, as exporters write it
        if axis == 2:
            start, end = (0, 4) if k == 0 else (4, 8)
        if opset >= 10:
            for what, v in (("starts", start), ("ends", end), ("axes", axis)):
                g.inits[f"slice{k}.{what}"] = np.array([v], np.int64)
            g.nodes.append(helper.make_node(
                "Slice", [h] + [f"slice{k}.{w}" for w in ("starts", "ends", "axes")], [f"s{k}"],
                name=f"slice{k}"))
        else:
            g.nodes.append(helper.make_node("Slice", [h], [f"s{k}"], name=f"slice{k}",
                                            starts=[start], ends=[end], axes=[axis]))
        parts.append(f"s{k}")
    if axis == 2:
        ys = [g.conv(p, 8, 6, k=3, name=name) for p, name in zip(parts, ("convx", "convy"),
                                                                    strict=True)]
        y = g.op("Relu", [g.op("Concat", ys, "rows", axis=2)], "relu3")
    else:
        ys = [g.conv(p, n, 6, k=3, name=name)
              for p, n, name in zip(parts, (3, 5), ("convx", "convy"), strict=True)]
        y = g.op("Relu", [g.op("Add", ys, "add")], "relu3")
    model = g.model(g.conv(y, 6, 4, name="head"), 4)
    model.opset_import[0].version = opset
    return model


@pytest.mark.parametrize("correction", ["energy", "ls-full"])
def test_slice_compensates_each_reader_on_its_part(correction, x8):
    """conv1 -> relu -> Slice 0:3, Slice 3:8 -> convx, convy: exactly Split's pairs (the same
    as conv1's rows 0:3 and 3:8 as two layers, each read whole). GhostNet's ghost modules end in
    ``cat([x1, x2], 1)[:, :oup]``: 62 of its 96 layers were in no pair for want of this."""
    q, rep = _convert(slice_net(), correction=correction, bias_correction=False)
    assert rep.pairs == [("conv1", "convx"), ("conv1", "convy")]
    assert rep.layer("conv1").activation == "Relu+Slice"
    ref, ref_rep = _convert(split_net(two_producers=True), correction=correction,
                            bias_correction=False)
    assert ref_rep.pairs == [("conv10", "convx"), ("conv11", "convy")]
    assert_valid(q)
    np.testing.assert_allclose(run(q, x8), run(ref, x8), rtol=1e-5, atol=1e-5)


def test_slice_bounds_as_attributes_and_slices_of_other_axes():
    options = ConvertOptions(method="pairs", fidelity_samples=0, correction="none")
    assert inspect_model(slice_net(opset=9), options).pairs == [("conv1", "convx"), ("conv1", "convy")]
    rep = inspect_model(slice_net(axis=2), options)
    assert ("conv1", "convx") not in rep.pairs
    assert "reaches Slice 'slice0', which slices other axes than the channels" in rep.layer("conv1").reason


def ghost_net(seed=0):
    """GhostNet's ghost module: conv1 (primary, 4) -> relu, a depthwise 3x3 'cheap' conv on it ->
    relu, Concat of both (8), Slice [:, :6] -> conv2 -> head."""
    g = Net(seed)
    x = g.op("Relu", [g.conv("input", 3, 8, name="stem")], "relu0")
    r1 = g.op("Relu", [g.conv(x, 8, 4, name="conv1")], "r1")
    g.inits["cheap.weight"] = _conv_w(g.rng, 4, 1, 3)
    g.nodes.append(helper.make_node("Conv", [r1, "cheap.weight"], ["cheap_out"], name="cheap",
                                    pads=[1] * 4, group=4))
    cat = g.op("Concat", [r1, g.op("Relu", ["cheap_out"], "r2")], "cat", axis=1)
    for what, v in (("starts", 0), ("ends", 6), ("axes", 1)):
        g.inits[f"slice.{what}"] = np.array([v], np.int64)
    g.nodes.append(helper.make_node("Slice", [cat, "slice.starts", "slice.ends", "slice.axes"],
                                    ["sl"], name="slice"))
    y = g.op("Relu", [g.conv("sl", 6, 6, k=3, name="conv2")], "r3")
    return g.model(g.conv(y, 6, 4, name="head"), 4)


def test_ghost_module_pairs_through_concat_and_slice(x8):
    rep = inspect_model(ghost_net(), ConvertOptions(method="pairs", fidelity_samples=0,
                                                    correction="none"))
    assert set(rep.pairs) == {("conv1", "cheap"), ("conv1", "conv2")}
    assert rep.layer("conv1").activation == "Relu, Relu+Concat+Slice"
    # cheap compensates conv1's channels, so it is no low-bit layer itself
    assert rep.layer("cheap").role == "B" and rep.layer("conv2").role == "B"
    q, _ = _convert(ghost_net(), correction="ls-full")
    assert_valid(q)
    assert np.isfinite(run(q, x8)).all()
