"""ONNX Runtime sessions for ``validate`` and the benchmarks: provider names, loading, running.

Kept apart from inputs and metrics because how a model is loaded (providers, threads, the
``session.disable_quant_qdq`` entry) decides what the latency figures mean, and the benchmarks
time models through the very same function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import DfmpcError, ModelLoadError, OptionsError

# Short names accepted for --provider besides the full ORT names. "cpu" and "cuda" are the ones
# documented; any other ORT provider can be named as e.g. "tensorrt" or "TensorrtExecutionProvider".
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


def one_line(exc: BaseException) -> str:
    """ORT error texts can span lines; the CLI prints one line per error."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def resolve_providers(provider: str) -> list[str]:
    """Turn "cpu", "cuda" or a full ORT provider name into the provider list for a session.

    Non-CPU providers get CPUExecutionProvider appended, because ORT assigns nodes the accelerator
    cannot run to the next provider in the list; without CPU such a model would fail to load.
    Raises OptionsError, listing the available providers, when the provider is not usable here.
    """
    text = provider.strip()
    available = ort.get_available_providers()
    known = set(ort.get_all_providers()) | set(available)
    by_lower = {name.lower(): name for name in known}
    lower = text.lower()
    name = (
        _PROVIDER_ALIASES.get(lower)
        or by_lower.get(lower)
        or by_lower.get(lower + "executionprovider")
    )
    if name is None:
        raise OptionsError(
            f"unknown provider {provider!r}; use 'cpu', 'cuda' or one of the available ONNX "
            f"Runtime providers: {', '.join(available)}"
        )
    if name not in available:
        raise OptionsError(
            f"provider {provider!r} ({name}) is not available in this onnxruntime build; "
            f"available: {', '.join(available)}"
            + (" (install onnxruntime-gpu for CUDA)" if name == "CUDAExecutionProvider" else "")
        )
    if name == "CPUExecutionProvider":
        return [name]
    return [name, "CPUExecutionProvider"]


def has_activation_qdq(path: str | os.PathLike[str]) -> bool:
    """Whether the model quantizes activations (has QuantizeLinear nodes): such a model runs on
    integer kernels only when ORT keeps its Q/DQ nodes. False for an unreadable file (loading it
    then fails with a clear message)."""
    try:
        with open(path, "rb") as fh:
            model = onnx.load_model(fh, load_external_data=False)
    except Exception:  # noqa: BLE001 - make_session reports the real problem
        return False
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def make_session(
    path: str | os.PathLike[str],
    provider: str = "cpu",
    threads: int = 2,
    disable_quant_qdq: bool = True,
) -> ort.InferenceSession:
    """Load one model in ONNX Runtime the way ``validate`` and the benchmarks time it.

    The session is created from the path, not from bytes, so external data files next to the
    model are found. With ``disable_quant_qdq`` the config entry ``session.disable_quant_qdq=1``
    is set: ORT then constant-folds DequantizeLinear on constant weights at load time, so a
    weight-only quantized model runs at float speed instead of dequantizing on every call.
    Raises ModelLoadError naming the file when ORT cannot load it, and OptionsError when the
    requested provider is unavailable or ORT silently fell back to another one (timing the CPU
    while the user asked for CUDA would be misleading).
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise OptionsError(f"--threads must be an integer >= 0 (0 = ORT default), got {threads!r}")
    providers = resolve_providers(provider)
    model_path = Path(os.fspath(path))
    if not model_path.is_file():
        what = "is a directory, not" if model_path.is_dir() else "not found: no such"
        raise ModelLoadError(f"model {what} file {model_path}")
    if model_path.stat().st_size == 0:
        raise ModelLoadError(f"model file {model_path} is empty")

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings are noise in a CLI report
    if disable_quant_qdq:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types for every load failure
        raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {one_line(exc)}") from exc
    used = session.get_providers()
    if providers[0] not in used:
        raise OptionsError(
            f"ONNX Runtime could not use {providers[0]} for {model_path} and fell back to "
            f"{', '.join(used)}; check the GPU driver / CUDA / cuDNN installation or use "
            "--provider cpu"
        )
    return session


def run_outputs(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], path: Path
) -> dict[str, np.ndarray]:
    """Every output of one run by name; an ORT failure becomes one DfmpcError line naming the file."""
    names = [arg.name for arg in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as exc:  # shape/dtype errors surface here, as ORT pybind exceptions
        raise DfmpcError(f"ONNX Runtime failed to run {path}: {one_line(exc)}") from exc
    return dict(zip(names, values, strict=True))
