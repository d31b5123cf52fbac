"""The peer baselines (benchmarks/peers.py) on tiny models: they run, or say why not, and never raise.

aimet itself is not needed: its peer is only tested for the "venv missing" row.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from conftest import assert_valid
from onnx import TensorProto, helper
from tinymodels import conv_net, make_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402


def test_module_imports_without_torch_or_ort_quantization():
    code = ("import sys; import benchmarks.peers; "
            "print('torch' in sys.modules, 'onnxruntime.quantization' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_ort_static_int8_writes_a_valid_qdq_model(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    r = peers.ort_static_int8(src, tmp_path / "q.onnx", per_channel=True, n_calib=2)
    assert r.path is not None, r.note
    assert not r.weight_only and r.avg_bits == 8.0
    q = onnx.load(str(r.path))
    assert_valid(q)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)


def test_ort_int4_on_conv_net_says_nothing_to_quantize(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    r = peers.ort_int4_weights(src, tmp_path / "q4.onnx")
    assert r.path is None and "0 of" in r.note and "4 Conv, 1 Gemm" in r.note


def test_aimet_without_venv_is_a_row_not_an_error(tmp_path, monkeypatch):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    monkeypatch.setenv(peers.AIMET_PYTHON_ENV, str(tmp_path / "no-such-python"))
    r = peers.aimet_equalize(src, tmp_path / "a.onnx", low_bits=2, high_bits=8)
    assert r.path is None and "no aimet venv" in r.note


def test_weight_bits_counts_dequantized_and_float_weights():
    w8 = np.ones((4, 4), np.int8)
    wf = np.ones((4, 2), np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["w8", "s"], ["w8f"]),
             helper.make_node("MatMul", ["x", "w8f"], ["h"]),
             helper.make_node("MatMul", ["h", "wf"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                   {"w8": w8, "s": np.float32(0.1), "wf": wf})
    avg, by_bits = peers.weight_bits(m)
    assert by_bits == {8: 16, 32: 8}
    assert avg == (8 * 16 + 32 * 8) / 24


def test_aimet_missing_from_the_interpreter_is_a_row_not_an_error(tmp_path, monkeypatch):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    monkeypatch.setenv(peers.AIMET_PYTHON_ENV, sys.executable)  # this env has no aimet_onnx
    r = peers.aimet_equalize(src, tmp_path / "a.onnx", low_bits=2, high_bits=8)
    assert r.path is None and "aimet_onnx" in r.note, r.note
