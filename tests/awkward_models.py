"""Small models exported in awkward shapes, built with onnx.helper (see tests/test_corpus.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tinymodels import conv_net


def _model(nodes, inputs, outputs, inits, opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "awkward", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *[helper.make_opsetid(d, v) for d, v in extra_opsets]])
    model.ir_version = 8
    return model


def _w(rng, *shape):
    fan_in = int(np.prod(shape[1:])) or 1
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _out(rank=4, name="out"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank)


def _img(name="input", c=3, hw=8):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, hw, hw])


def conv_no_bias() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = {f"w{i}": _w(rng, 8, 3 if i == 0 else 8, 3, 3) for i in range(3)}
    nodes, x = [], "input"
    for i in range(3):
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        x = f"c{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    return _model(nodes, [_img()], [_out(4, x)], inits)


def conv_transpose() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "b0": np.zeros(8, np.float32),
             "wt": _w(rng, 8, 4, 2, 2) * 2,  # ConvTranspose weight: (in, out/group, kh, kw)
             "bt": (0.1 * rng.standard_normal(4)).astype(np.float32),
             "wtg": _w(rng, 4, 2, 3, 3),  # grouped ConvTranspose, group=2 -> 4 outputs
             "w2": _w(rng, 4, 4, 1, 1)}
    nodes = [helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("ConvTranspose", ["r0", "wt", "bt"], ["t1"], name="deconv1",
                              strides=[2, 2]),
             helper.make_node("Relu", ["t1"], ["r1"], name="relu1"),
             helper.make_node("ConvTranspose", ["r1", "wtg"], ["t2"], name="deconv2", group=2,
                              pads=[1] * 4),
             helper.make_node("Relu", ["t2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w2"], ["out"], name="conv3")]
    return _model(nodes, [_img()], [_out()],
                  inits)


def gemm_variants() -> onnx.ModelProto:
    """Gemm with transA=1, with alpha != 1, with beta != 1, and a plain one between them."""
    rng = np.random.default_rng(3)
    inits = {"wa": _w(rng, 16, 12), "ba": np.zeros(12, np.float32),
             "w1": _w(rng, 12, 12), "b1": np.ones(12, np.float32),
             "w2": _w(rng, 12, 12), "b2": np.ones(12, np.float32),
             "w3": _w(rng, 6, 12), "b3": np.zeros(6, np.float32)}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [16, "N"])  # transposed input
    nodes = [helper.make_node("Gemm", ["input", "wa", "ba"], ["g0"], name="gemm_transA", transA=1),
             helper.make_node("Relu", ["g0"], ["r0"], name="relu0"),
             helper.make_node("Gemm", ["r0", "w1", "b1"], ["g1"], name="gemm_alpha", alpha=0.5),
             helper.make_node("Relu", ["g1"], ["r1"], name="relu1"),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["g2"], name="gemm_beta", beta=2.0),
             helper.make_node("Relu", ["g2"], ["r2"], name="relu2"),
             helper.make_node("Gemm", ["r2", "w3", "b3"], ["out"], name="gemm_plain", transB=1)]
    return _model(nodes, [x], [_out(2)], inits)


def matmul_const_left() -> onnx.ModelProto:
    """y = W @ x (constant on the left), as some exporters write a transposed linear layer."""
    rng = np.random.default_rng(4)
    inits = {"wl": _w(rng, 12, 8), "w2": _w(rng, 6, 12)}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [8, "N"])
    nodes = [helper.make_node("MatMul", ["wl", "input"], ["m0"], name="matmul_left"),
             helper.make_node("Relu", ["m0"], ["r0"], name="relu0"),
             helper.make_node("MatMul", ["w2", "r0"], ["out"], name="matmul_left2")]
    return _model(nodes, [x], [_out(2)], inits)


def shared_weight() -> onnx.ModelProto:
    """One initializer read by two Conv layers (weight tying)."""
    rng = np.random.default_rng(5)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "shared": _w(rng, 8, 8, 3, 3),
             "shared_b": np.zeros(8, np.float32), "w3": _w(rng, 4, 8, 1, 1)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "shared", "shared_b"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "shared", "shared_b"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["out"], name="conv3")]
    return _model(nodes, [_img()], [_out()],
                  inits)


def float16_net() -> onnx.ModelProto:
    """conv_net with every float tensor in float16 (input, weights, output)."""
    model = conv_net(seed=6, c=8)
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


def with_if() -> onnx.ModelProto:
    """conv -> relu -> If(cond){conv1 on the outer tensor}{identity} -> relu -> conv."""
    rng = np.random.default_rng(7)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "w1": _w(rng, 8, 8, 3, 3), "w2": _w(rng, 4, 8, 1, 1),
             "cond": np.array(True)}
    then_g = helper.make_graph(
        [helper.make_node("Conv", ["r0", "w1"], ["then_out"], name="then_conv", pads=[1] * 4)],
        "then", [], [_out(4, "then_out")])
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["r0"], ["else_out"], name="else_id")],
        "else", [], [_out(4, "else_out")])
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("If", ["cond"], ["i1"], name="if1", then_branch=then_g,
                              else_branch=else_g),
             helper.make_node("Relu", ["i1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["out"], name="conv2")]
    return _model(nodes, [_img()], [_out()],
                  inits)


def custom_domain() -> onnx.ModelProto:
    """A com.example node between two layers: nothing can run it, so nothing can check it."""
    rng = np.random.default_rng(8)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "w1": _w(rng, 8, 8, 3, 3), "w2": _w(rng, 4, 8, 1, 1)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("MyAct", ["c0"], ["a0"], name="myact", domain="com.example"),
             helper.make_node("Conv", ["a0", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["out"], name="conv2")]
    return _model(nodes, [_img()], [_out()],
                  inits, extra_opsets=[("com.example", 1)])


def dynamic_batch() -> onnx.ModelProto:
    """conv_net with symbolic batch, height and width."""
    model = conv_net(seed=9, c=8)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return model


def grouped_depthwise() -> onnx.ModelProto:
    """A MobileNet-style block: grouped conv (group=2), depthwise conv (group=C), pointwise conv."""
    rng = np.random.default_rng(10)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "wg": _w(rng, 8, 4, 3, 3), "bg": np.zeros(8, np.float32),
             "wd": _w(rng, 8, 1, 3, 3), "bd": np.zeros(8, np.float32), "wp": _w(rng, 4, 8, 1, 1)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "wg", "bg"], ["c1"], name="grouped", group=2,
                              pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], name="depthwise", group=8,
                              pads=[1] * 4),
             helper.make_node("Clip", ["c2"], ["r2"], name="relu6", min=0.0, max=6.0),
             helper.make_node("Conv", ["r2", "wp"], ["out"], name="pointwise")]
    return _model(nodes, [_img()], [_out()], inits, opset=10)


def matmul_const_right() -> onnx.ModelProto:
    """A transformer-style MLP on (N, T, 16): MatMul + Add bias -> Gelu spelled with Erf -> MatMul."""
    rng = np.random.default_rng(11)
    inits = {"w1": _w(rng, 32, 16).T.copy(), "b1": np.zeros(32, np.float32),
             "w2": _w(rng, 8, 32).T.copy(), "sqrt2": np.array(np.sqrt(2.0), np.float32),
             "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T", 16])
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
             helper.make_node("Div", ["a1", "sqrt2"], ["g0"], name="gelu_div"),
             helper.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
             helper.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
             helper.make_node("Mul", ["a1", "g2"], ["g3"], name="gelu_mul"),
             helper.make_node("Mul", ["g3", "half"], ["g4"], name="gelu_half"),
             helper.make_node("MatMul", ["g4", "w2"], ["out"], name="fc2")]
    return _model(nodes, [x], [_out(3)], inits)


def with_loop() -> onnx.ModelProto:
    """conv -> relu -> Loop(3 times: state = Relu(Conv(state))) -> conv; the body's conv reads an
    outer-scope weight."""
    rng = np.random.default_rng(12)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "wl": _w(rng, 8, 8, 3, 3) * 0.5, "w2": _w(rng, 4, 8, 1, 1),
             "trips": np.array(3, np.int64), "cond": np.array(True)}
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Conv", ["state", "wl"], ["bc"], name="body_conv", pads=[1] * 4),
         helper.make_node("Relu", ["bc"], ["state_out"], name="body_relu")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Loop", ["trips", "cond", "r0"], ["l1"], name="loop1", body=body),
             helper.make_node("Conv", ["l1", "w2"], ["out"], name="conv2")]
    return _model(nodes, [_img()], [_out()], inits)


def split_activations() -> onnx.ModelProto:
    """conv_net whose activations are SiLU spelled as Sigmoid + Mul (as torch exports it)."""
    return conv_net(seed=13, c=8, act="SiLU")


def hardswish_spelled() -> onnx.ModelProto:
    """Conv -> x * Clip(x + 3, 0, 6) / 6 (HardSwish in five nodes, opset 11 Clip inputs) -> Conv."""
    rng = np.random.default_rng(14)
    inits = {"w0": _w(rng, 8, 3, 3, 3), "w1": _w(rng, 8, 8, 3, 3), "w2": _w(rng, 8, 8, 3, 3),
             "w3": _w(rng, 4, 8, 1, 1), "three": np.array(3.0, np.float32),
             "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Add", ["c1", "three"], ["h0"], name="hs_add"),
             helper.make_node("Clip", ["h0", "zero", "six"], ["h1"], name="hs_clip"),
             helper.make_node("Mul", ["c1", "h1"], ["h2"], name="hs_mul"),
             helper.make_node("Div", ["h2", "six"], ["h3"], name="hs_div"),
             helper.make_node("Conv", ["h3", "w2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["out"], name="conv3")]
    return _model(nodes, [_img()], [_out()], inits, opset=11)


def nothing_eligible() -> onnx.ModelProto:
    """Only layers that must stay float (constant-left MatMul, transA Gemm): the output must
    compute exactly what the input does."""
    rng = np.random.default_rng(15)
    inits = {"wl": _w(rng, 12, 8), "wa": _w(rng, 12, 6), "ba": np.zeros(6, np.float32)}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [8, 4])
    nodes = [helper.make_node("MatMul", ["wl", "input"], ["m0"], name="matmul_left"),
             helper.make_node("Relu", ["m0"], ["r0"], name="relu0"),
             helper.make_node("Gemm", ["r0", "wa", "ba"], ["out"], name="gemm_transA", transA=1)]
    return _model(nodes, [x], [_out(2)], inits)


def reshaped_weight() -> onnx.ModelProto:
    """Weights that reach their layer through Reshape / Transpose of a constant (legacy exports)."""
    rng = np.random.default_rng(16)
    inits = {"w0_flat": _w(rng, 16, 12).reshape(-1), "w0_shape": np.array([16, 12], np.int64),
             "w1_t": _w(rng, 6, 16).T.copy()}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 12])
    nodes = [helper.make_node("Reshape", ["w0_flat", "w0_shape"], ["w0"], name="w0_reshape"),
             helper.make_node("Gemm", ["input", "w0"], ["g0"], name="fc0", transB=1),
             helper.make_node("Relu", ["g0"], ["r0"], name="relu0"),
             helper.make_node("Transpose", ["w1_t"], ["w1"], name="w1_transpose", perm=[1, 0]),
             helper.make_node("Gemm", ["r0", "w1"], ["out"], name="fc1", transB=1)]
    return _model(nodes, [x], [_out(2)], inits)


AWKWARD = {
    "conv_no_bias": conv_no_bias, "conv_transpose": conv_transpose, "gemm_variants": gemm_variants,
    "matmul_const_left": matmul_const_left, "shared_weight": shared_weight,
    "float16": float16_net, "if_node": with_if, "custom_domain": custom_domain,
    "dynamic_batch": dynamic_batch, "grouped_depthwise": grouped_depthwise,
    "matmul_const_right": matmul_const_right, "loop_node": with_loop,
    "split_activations": split_activations, "hardswish_spelled": hardswish_spelled,
    "nothing_eligible": nothing_eligible, "reshaped_weight": reshaped_weight,
}


def all_inside_if() -> onnx.ModelProto:
    """Every layer inside the branches of a top-level If (as spox and some exporters write a
    model with a sample-rate switch): one Conv per branch on the outer input."""
    rng = np.random.default_rng(11)
    inits = {"wt": _w(rng, 4, 3, 3, 3), "we": _w(rng, 4, 3, 3, 3)}
    then_g = helper.make_graph(
        [helper.make_node("Conv", ["input", "wt"], ["t_out"], name="then_conv", pads=[1] * 4)],
        "then", [], [_out(4, "t_out")])
    else_g = helper.make_graph(
        [helper.make_node("Conv", ["input", "we"], ["e_out"], name="else_conv", pads=[1] * 4)],
        "else", [], [_out(4, "e_out")])
    cond = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    nodes = [helper.make_node("If", ["flag"], ["out"], name="if0", then_branch=then_g,
                              else_branch=else_g)]
    return _model(nodes, [_img(), cond], [_out()], inits)


def sample_rate_switch() -> onnx.ModelProto:
    """silero-vad's shape: ``If(sr == 16000)`` picks one of two networks, each two Convs whose
    weights are Constant nodes inside its branch; both branches name a constant ``w1`` (sibling
    scopes may reuse a name), so hoisting them to the main graph must rename one."""
    rng = np.random.default_rng(12)

    def branch(tag: str, k: int) -> onnx.GraphProto:
        w0, b0, w1 = _w(rng, 8, 3, k, k), (0.1 * rng.standard_normal(8)).astype(np.float32), \
            _w(rng, 4, 8, 1, 1)
        consts = [helper.make_node("Constant", [], [name], name=f"{tag}_const_{name}",
                                   value=numpy_helper.from_array(v, name))
                  for name, v in ((f"{tag}_w0", w0), (f"{tag}_b0", b0), ("w1", w1))]
        return helper.make_graph(
            consts + [
                helper.make_node("Conv", ["input", f"{tag}_w0", f"{tag}_b0"], [f"{tag}_c0"],
                                 name=f"{tag}_conv0", pads=[k // 2] * 4),
                helper.make_node("Relu", [f"{tag}_c0"], [f"{tag}_r0"], name=f"{tag}_relu"),
                helper.make_node("Conv", [f"{tag}_r0", "w1"], [f"{tag}_out"], name=f"{tag}_conv1")],
            tag, [], [_out(4, f"{tag}_out")])

    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    nodes = [helper.make_node("Constant", [], ["rate"], name="rate",
                              value=numpy_helper.from_array(np.array(16000, np.int64), "rate")),
             helper.make_node("Equal", ["sr", "rate"], ["is16k"], name="eq"),
             helper.make_node("If", ["is16k"], ["out"], name="switch",
                              then_branch=branch("k16", 3), else_branch=branch("k8", 5))]
    return _model(nodes, [_img(), sr], [_out()], {})
