"""Pair finding and bit planning on the spellings exporters produce."""

import numpy as np
import onnx
import pytest
from conftest import assert_valid, run
from onnx import TensorProto, helper
from tinymodels import conv_net, make_model

from dfmpc_onnx import ConvertOptions, convert, inspect_model
from dfmpc_onnx.errors import OptionsError


@pytest.mark.parametrize("act,label", [("Relu", "Relu"), ("SiLU", "Sigmoid+Mul"),
                                       ("ReLU6", "Clip"), ("PRelu", "PRelu"),
                                       ("HardSwish", "HardSwish"), ("Identity", "identity")])
def test_pairs_through_activation_spellings(act, label, x8):
    model = conv_net(seed=0, act=act)
    rep = inspect_model(model, ConvertOptions(method="pairs"))
    assert rep.pairs == [("conv1", "conv2")]
    assert rep.layer("conv1").activation == label
    assert rep.layer("conv1").bits == 2 and rep.layer("conv2").bits == 8
    assert rep.layer("conv0").role == "single"  # first layer protected
    for correction in ("energy", "ls-full"):
        q, rep = convert(model, ConvertOptions(method="pairs", correction=correction,
                                               propagated_stats=True))
        assert_valid(q)
        assert np.isfinite(run(q, x8)).all()
        assert rep.layer("conv2").comp_min is not None


def test_paper_method_refuses_our_corrections():
    with pytest.raises(OptionsError, match="--method paper takes --correction paper"):
        ConvertOptions(method="paper", correction="ls-full")


def test_first_layer_pairs_when_not_protected():
    rep = inspect_model(conv_net(), ConvertOptions(method="pairs", protect_first_last=False))
    assert rep.pairs == [("conv0", "conv1"), ("conv2", "conv3")]


def test_plan_overrides_and_unknown_names():
    rep = inspect_model(conv_net(), ConvertOptions(method="pairs", plan={"conv1": 4, "fc": None}))
    assert rep.layer("conv1").bits == 4
    assert rep.layer("fc").role == "float" and rep.layer("fc").bits is None
    with pytest.raises(OptionsError, match="conv9"):
        inspect_model(conv_net(), ConvertOptions(method="pairs", plan={"conv9": 4}))


def test_activation_with_second_consumer_is_not_a_pair():
    model = conv_net()
    # conv1's activation output also goes to a graph output: B is no longer its only reader.
    model.graph.output.append(helper.make_tensor_value_info("act1_out", TensorProto.FLOAT, None))
    rep = inspect_model(model)
    assert ("conv1", "conv2") not in rep.pairs


def depthwise_model(seed=0, c=8):
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.standard_normal((c, 3, 1, 1)).astype(np.float32),
        "w1": (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
        "w2": (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32),
        "w3": (rng.standard_normal((4, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["a0"], name="stem"),
        helper.make_node("Relu", ["a0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["a1"], name="expand"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["a2"], name="dw", group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["logits"], name="project"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                            ["N", 3, 8, 8])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                     ["N", 4, 8, 8])], inits)


@pytest.mark.parametrize("correction", ["energy", "ls-diag", "ls-full"])
def test_depthwise_pairs_convert(correction, x8):
    model = depthwise_model()
    q, rep = convert(model, ConvertOptions(method="pairs", correction=correction,
                                           propagated_stats=True))
    assert rep.pairs == [("expand", "dw")]
    assert_valid(q)
    ref, out = run(model, x8), run(q, x8)
    assert (ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out) > 0.5


def mlp_model(kind: str, seed=0):
    """Gemm(transB=0|1) or MatMul+Add MLP: input(N,16) -> fc0 -> relu -> fc1 -> relu -> fc2."""
    rng = np.random.default_rng(seed)
    dims = [16, 32, 32, 5]
    nodes, inits, x = [], {}, "input"
    for i in range(3):
        w = rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])
        b = 0.1 * rng.standard_normal(dims[i + 1])
        if kind == "gemm_t":
            inits[f"w{i}"] = w.T.astype(np.float32)
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"y{i}"], name=f"fc{i}",
                                          transB=1))
        elif kind == "gemm":
            inits[f"w{i}"] = w.astype(np.float32)
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"y{i}"], name=f"fc{i}"))
        else:
            inits[f"w{i}"] = w.astype(np.float32)
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"))
            nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"], name=f"add{i}"))
        inits[f"b{i}"] = b.astype(np.float32)
        x = f"y{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    nodes[-1].output[0] = "logits"
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)


@pytest.mark.parametrize("kind", ["gemm", "gemm_t"])
def test_gemm_pairs_and_layouts(kind):
    model = mlp_model(kind)
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    q, rep = convert(model, ConvertOptions(method="pairs", protect_first_last=False,
                                           correction="ls-full",
                                           propagated_stats=True))
    assert rep.pairs == [("fc0", "fc1")]
    assert_valid(q)
    q8, _ = convert(model, ConvertOptions(method="pairs", low_bits=8, correction="none"))
    ref, out = run(model, x), run(q8, x)
    assert np.abs(ref - out).max() < 0.02 * np.abs(ref).max()


def test_matmul_layers_quantize():
    model = mlp_model("matmul")
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    q, rep = convert(model, ConvertOptions(method="pairs", protect_first_last=False))
    assert rep.layer("fc0").role == "A"
    assert_valid(q)
    assert onnx.numpy_helper  # keep import used
    assert np.isfinite(run(q, x)).all()


def test_corrections_follow_trusted_statistics():
    """BN-kept layers are corrected; BN-folded ones only with propagated_stats."""
    from test_quant_emit import fold_bn_in_numpy

    kept = conv_net(seed=5, bn=True)
    diag = ConvertOptions(method="pairs", correction="energy")
    _, rep = convert(kept, diag)
    assert rep.layer("conv2").comp_min is not None
    bias = ConvertOptions(method="pairs", correction="bias")
    _, rep = convert(kept, bias)  # means corrected, no compensation
    assert rep.layer("conv2").comp_min is None and rep.layer("conv1").reason == ""
    assert not any("no layer was bias-corrected" in n for n in rep.notes)
    _, rep = convert(fold_bn_in_numpy(kept), bias)  # folded: the report says why nothing was corrected
    assert any("no layer was bias-corrected" in n and "BN folded" in n for n in rep.notes)
    _, rep = convert(fold_bn_in_numpy(kept), diag)
    assert rep.layer("conv2").comp_min is None
    assert "no BN statistics" in rep.layer("conv1").reason
    _, rep = convert(fold_bn_in_numpy(kept), ConvertOptions(method="pairs", correction="energy",
                                                            propagated_stats=True))
    assert rep.layer("conv2").comp_min is not None


def basic_block_net(seed=0, c=8, opset=17):
    """ResNet-18's shape as the TorchScript exporter writes it at opset 17 (BN folded): stem conv
    -> Relu, two basic blocks (conv -> Relu -> conv -> Add(skip) -> Relu), the second with a 1x1
    downsample conv on its skip, GlobalAveragePool -> Flatten -> Gemm. ZOO.md's resnet18
    ts17-folded row read "0 pairs, 16x no reason given" (a row written when the zoo counted the
    measured plan's report, which drops every pair and leaves no reason)."""
    rng = np.random.default_rng(seed)
    inits, nodes = {}, []

    def conv(x, name, cin, cout, k=3):
        inits[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k))
                                   * np.sqrt(2 / (cin * k * k))).astype(np.float32)
        inits[f"{name}.bias"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}_out"],
                                      name=name, pads=[k // 2] * 4))
        return f"{name}_out"

    def relu(x, name):
        nodes.append(helper.make_node("Relu", [x], [f"{name}_out"], name=name))
        return f"{name}_out"

    x = relu(conv("input", "stem", 3, c), "stem_relu")
    for b, down in (("b1", False), ("b2", True)):
        h = conv(relu(conv(x, f"{b}.conv1", c, c), f"{b}.relu1"), f"{b}.conv2", c, c)
        skip = conv(x, f"{b}.down", c, c, k=1) if down else x
        nodes.append(helper.make_node("Add", [h, skip], [f"{b}_add"], name=f"{b}.add"))
        x = relu(f"{b}_add", f"{b}.relu2")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits["fc.weight"] = (rng.standard_normal((10, c)) / np.sqrt(c)).astype(np.float32)
    inits["fc.bias"] = np.zeros(10, np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc",
                                  transB=1))
    return make_model(
        nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, opset)


@pytest.mark.parametrize("pair_through", [True, False])
@pytest.mark.parametrize("opset", [11, 17])
def test_basic_blocks_pair_and_every_unpaired_layer_says_why(pair_through, opset):
    """The 8/8 pair plan (what the zoo counts) pairs each block's conv1 with its conv2 at every
    opset, and every layer in no pair has a reason: the protected first and last layer too."""
    rep = inspect_model(basic_block_net(opset=opset),
                        ConvertOptions(low_bits=8, high_bits=8, fidelity_samples=0,
                                       correction="none", pair_through=pair_through))
    assert rep.pairs == [("b1.conv1", "b1.conv2"), ("b2.conv1", "b2.conv2")]
    singles = {e.name: e.reason for e in rep.layers if e.role not in ("A", "B")}
    assert set(singles) == {"stem", "b2.down", "fc"}
    assert all(singles.values()), singles
    assert "first/last layer" in singles["stem"] and "first/last layer" in singles["fc"]
    assert "Add" in singles["b2.down"]


def test_partner_kept_float_by_the_plan_is_no_partner():
    """A plan keeping B in float: A is in no pair and says why (it had no reason at all when the
    pair was formed and then dropped by plan-bits)."""
    rep = inspect_model(conv_net(), ConvertOptions(method="pairs", fidelity_samples=0,
                                                   correction="none", plan={"conv2": None}))
    assert rep.pairs == []
    assert rep.layer("conv1").role == "single"
    assert rep.layer("conv1").reason == "partner 'conv2' is kept in float by the plan"
    assert rep.layer("conv2").role == "float"
