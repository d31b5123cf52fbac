import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def run(model: onnx.ModelProto, x: np.ndarray, name: str = "input") -> np.ndarray:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {name: x})[0]


def assert_valid(model: onnx.ModelProto) -> None:
    """What every converted model must satisfy: the full checker and an ORT load."""
    onnx.checker.check_model(model, full_check=True)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture
def x8():
    return np.random.default_rng(7).standard_normal((16, 3, 8, 8)).astype(np.float32)
