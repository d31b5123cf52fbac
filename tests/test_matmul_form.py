"""Weight-only MatMul/Gemm layers reach ONNX Runtime's MatMulNBits: the Gemm(transB=1) rewrite
keeps the product, and the optimised graph ORT runs shows the fusion (dfmpc_onnx.validate.fusion)."""

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.quant.matmul_form import fusable_linear_form
from dfmpc_onnx.validate.fusion import fused_nodes, summary

K, N, M = 64, 24, 5


# MatMulNBits computes in float from the integers at accuracy level 0; ORT's default, 4, first
# rounds the activations to int8 per block (faster, not the same numbers).
EXACT = {"session.qdq_matmulnbits_accuracy_level": "0"}


def _run(model: onnx.ModelProto, x: np.ndarray, optimise: bool = False,
         config: dict | None = None) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    if not optimise:  # the graph as written: no fusion, float DequantizeLinear then the product
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def dq_gemm(block: int | None, beta: float = 1.0, bias: bool = True, dtype=ml_dtypes.int4,
            trans_b: int = 1) -> onnx.ModelProto:
    """x[M, K] -> Gemm(transB) with B = DequantizeLinear(q[N, K]), per-channel or blocks along K."""
    rng = np.random.default_rng(block or 0)
    lo, hi = (-2, 2) if dtype == ml_dtypes.int2 else (-8, 8)
    q = rng.integers(lo, hi, size=(N, K) if trans_b else (K, N)).astype(dtype)
    if block is None:
        scale, attrs = rng.uniform(0.01, 0.1, N).astype(np.float32), {"axis": 0 if trans_b else 1}
    else:
        nb = -(-K // block)  # blocks along K: axis 1 of [N, K], axis 0 of [K, N]
        scale = rng.uniform(0.01, 0.1, (N, nb) if trans_b else (nb, N)).astype(np.float32)
        attrs = {"axis": trans_b, "block_size": block}
    inits = [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq", **attrs)]
    gemm_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "c"))
        gemm_in.append("c")
    nodes.append(helper.make_node("Gemm", gemm_in, ["y"], name="fc", transB=trans_b, beta=beta))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], inits)
    opset = 25 if dtype == ml_dtypes.int2 else 21  # INT2 from opset 25
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=11)


def _save(model: onnx.ModelProto, tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("block,beta,bias,dtype", [
    (None, 1.0, True, ml_dtypes.int4), (16, 1.0, True, ml_dtypes.int4),
    (32, 0.5, True, ml_dtypes.int4), (32, 1.0, False, np.int8), (None, 1.0, False, ml_dtypes.int2)])
def test_gemm_rewrite_keeps_the_product_and_fuses(block, beta, bias, dtype, tmp_path):
    model = dq_gemm(block, beta, bias, dtype)
    x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
    before = _run(model, x)
    assert fused_nodes(_save(model, tmp_path, "a.onnx"))["fused"] == {}  # Gemm(transB=1): no fusion
    after = onnx.ModelProto()
    after.CopyFrom(model)
    assert fusable_linear_form(after.graph) == ["fc"]
    onnx.checker.check_model(after, full_check=True)
    assert [n.op_type for n in after.graph.node] == ["DequantizeLinear", "Gemm"] + ["Add"] * bias
    assert all(a.i == 0 for a in after.graph.node[1].attribute if a.name == "transB")
    np.testing.assert_allclose(_run(after, x), before, rtol=1e-5, atol=1e-5)
    found = fused_nodes(_save(after, tmp_path, "b.onnx"))
    assert found["fused"] == {"MatMulNBits": 1} and found["weight_dequantize"] == []
    np.testing.assert_allclose(_run(after, x, optimise=True, config=EXACT), before, rtol=1e-4, atol=1e-4)
    assert "1 MatMulNBits" in summary(found)


def test_rewrite_leaves_other_gemms_alone():
    assert fusable_linear_form(dq_gemm(32, trans_b=0).graph) == []  # transB=0 fuses as it is
    alpha = dq_gemm(None)
    alpha.graph.node[-1].attribute.append(helper.make_attribute("alpha", 2.0))
    assert fusable_linear_form(alpha.graph) == []
    # An activation-quantized layer (A dequantized too) keeps its Gemm for ORT's QGemm fusion.
    act = dq_gemm(None)
    act.graph.initializer.extend([numpy_helper.from_array(np.array(0.1, np.float32), "xs"),
                                  numpy_helper.from_array(np.array(0, np.int8), "xz")])
    act.graph.node.insert(0, helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]))
    act.graph.node.insert(1, helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]))
    act.graph.node[-1].input[0] = "xd"
    assert fusable_linear_form(act.graph) == []
    assert [n.op_type for n in act.graph.node][-1] == "Gemm"


def test_fused_nodes_sees_what_is_left_and_what_the_options_change(tmp_path):
    path = _save(dq_gemm(32, trans_b=0), tmp_path, "m.onnx")
    assert fused_nodes(path)["fused"] == {"MatMulNBits": 1}
    folded = fused_nodes(path, {"session.disable_quant_qdq": "1"})
    assert folded["fused"] == {} and folded["ops"].get("Gemm") == 1
    odd = dq_gemm(8, trans_b=0)  # blocks of 8: below ORT's smallest MatMulNBits block (16)
    left = fused_nodes(_save(odd, tmp_path, "odd.onnx"))
    assert left["fused"] == {} and left["weight_dequantize"] == ["dq"]
    assert "1 weight DequantizeLinear" in summary(left)


def _linear_net(trans_b: int) -> onnx.ModelProto:
    """x -> Gemm/MatMul -> Relu -> Gemm/MatMul: two float layers of [64 -> 48 -> 32]."""
    rng = np.random.default_rng(7)
    inits, nodes, h = [], [], "x"
    for i, (a, b) in enumerate([(64, 48), (48, 32)]):
        w = (rng.standard_normal((b, a) if trans_b else (a, b)) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(b).astype(np.float32) * 0.1, f"b{i}")]
        out = f"h{i}"
        if trans_b:
            nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        else:
            nodes += [helper.make_node("MatMul", [h, f"w{i}"], [out + "m"], name=f"fc{i}"),
                      helper.make_node("Add", [out + "m", f"b{i}"], [out], name=f"fc{i}_add")]
        h = out
        if i == 0:
            nodes.append(helper.make_node("Relu", [h], ["r"], name="relu"))
            h = "r"
    graph = helper.make_graph(nodes, "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["n", 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("quantizer", ["maxabs", "block32"])
def test_converted_4bit_linear_layers_run_fused(trans_b, quantizer, tmp_path):
    """Both layers fuse: fc0 is followed by a Relu (MatMul+Add+Relu would become FusedGemm)."""
    model = _linear_net(trans_b)
    q, report = convert(model, ConvertOptions(method="pairs", low_bits=4, high_bits=4,
                                              quantizer=quantizer, correction="none"))
    found = fused_nodes(_save(q, tmp_path, "q.onnx"))
    assert found["fused"] == {"MatMulNBits": 2}, found
    assert sorted(n.split("/")[0] for n in found["fused_names"]) == ["fc0", "fc1"]
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    written = _run(q, x)  # the graph as written: float DequantizeLinear, then the products
    np.testing.assert_allclose(_run(q, x, optimise=True, config=EXACT), written, rtol=1e-4, atol=1e-4)
    # ORT's default accuracy level 4 rounds the activations to int8 inside MatMulNBits: close.
    assert np.abs(_run(q, x, optimise=True) - written).max() < 0.02 * np.abs(written).max()


def test_matmul_add_relu_misses_the_fusion_until_rewritten(tmp_path):
    """ORT's finding the MatMul rule rests on: 2-D DequantizeLinear -> MatMul -> Add -> Relu becomes
    FusedGemm on the float weight; as Gemm (no C) -> Add -> Relu it runs on MatMulNBits."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.integers(-8, 8, (K, N)).astype(ml_dtypes.int4), "q"),
             numpy_helper.from_array(rng.uniform(0.01, 0.1, N).astype(np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "g")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq", axis=1),
             helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["a"], name="fc_add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "g"], ["y"], name="after")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    model = onnx.shape_inference.infer_shapes(model)
    before = fused_nodes(_save(model, tmp_path, "a.onnx"))
    assert before["fused"] == {} and before["ops"].get("FusedGemm") == 1
    x = np.random.default_rng(4).standard_normal((M, K)).astype(np.float32)
    ref = _run(model, x)
    assert fusable_linear_form(model.graph) == ["fc"]
    assert fused_nodes(_save(model, tmp_path, "b.onnx"))["fused"] == {"MatMulNBits": 1}
    np.testing.assert_allclose(_run(model, x, optimise=True, config=EXACT), ref, rtol=1e-4, atol=1e-4)


def test_validate_times_fused_models_with_ort_defaults_and_says_what_fused(tmp_path):
    from tinymodels import conv_net

    from dfmpc_onnx.validate import format_table, validate

    fp = _save(_linear_net(1), tmp_path, "f.onnx")
    q, _ = convert(_linear_net(1), ConvertOptions(method="pairs", low_bits=4, high_bits=4,
                                                  correction="none"))
    result = validate(fp, _save(q, tmp_path, "q.onnx"), repeats=2)
    assert result.disable_quant_qdq is False and result.fused["fused"] == {"MatMulNBits": 2}
    assert "fused     2 MatMulNBits in ONNX Runtime's optimised graph" in format_table(result)
    # A Conv model: its weight DequantizeLinear would run at every call, so validate folds them.
    conv = conv_net(seed=2)
    cq, _ = convert(conv, ConvertOptions(method="pairs", low_bits=4, high_bits=8, correction="none"))
    result = validate(_save(conv, tmp_path, "cf.onnx"), _save(cq, tmp_path, "cq.onnx"), repeats=2)
    assert result.disable_quant_qdq is True and result.fused["weight_dequantize"] == []


@pytest.mark.parametrize("op,rank", [("MatMul", 2), ("MatMul", 3), ("Gemm", 2)])
def test_layer_without_bias_into_relu_gets_a_zero_bias_and_fuses(op, rank, tmp_path):
    """DequantizeLinear -> MatMul -> Relu does not fuse at all, a Gemm -> Relu becomes FusedGemm;
    with a zero-bias Add between (x + 0 = x) both run on MatMulNBits."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.integers(-8, 8, (K, N)).astype(ml_dtypes.int4), "q"),
             numpy_helper.from_array(rng.uniform(0.01, 0.1, N).astype(np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "g")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq", axis=1),
             helper.make_node(op, ["x", "w"], ["m"], name="fc"),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "g"], ["y"], name="after")]
    shape = ["n", K] if rank == 2 else ["n", 3, K]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10))
    assert fused_nodes(_save(model, tmp_path, "a.onnx"))["fused"] == {}
    x = np.random.default_rng(6).standard_normal([M] + ([K] if rank == 2 else [3, K])).astype(np.float32)
    ref = _run(model, x)
    assert fusable_linear_form(model.graph) == ["fc"]
    onnx.checker.check_model(model, full_check=True)
    assert fused_nodes(_save(model, tmp_path, "b.onnx"))["fused"] == {"MatMulNBits": 1}
    np.testing.assert_allclose(_run(model, x), ref, rtol=1e-6, atol=1e-6)  # as written: x + 0
    np.testing.assert_allclose(_run(model, x, optimise=True, config=EXACT), ref, rtol=1e-4, atol=1e-4)


def test_gemm_with_beta_and_no_c_into_relu():
    """beta scales a C that is absent: the zero bias stands alone (a fuzz case once failed here)."""
    model = dq_gemm(None, beta=0.5, bias=False)
    model.graph.node.append(helper.make_node("Relu", ["y"], ["z"], name="relu"))
    model.graph.output[0].name = "z"
    x = np.random.default_rng(8).standard_normal((M, K)).astype(np.float32)
    ref = _run(model, x)
    assert fusable_linear_form(model.graph) == ["fc"]
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(_run(model, x), ref, rtol=1e-5, atol=1e-5)
