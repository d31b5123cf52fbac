"""Compare a float ONNX model with its quantized version: per-output error, size and latency.

This is the engine of ``dfmpc-onnx validate FLOAT QUANT``. Both models are run by ONNX Runtime on
the same inputs (an ``.npz`` file or seeded random data), and the differences are reduced to a few
numbers per output that are easy to read and to paste into an issue, in the spirit of
``polygraphy run model.onnx --onnxrt``.

Everything that can go wrong because of the user's files or options is raised as a
:class:`~dfmpc_onnx.errors.DfmpcError` subclass with a one-line message naming the file or input,
so the CLI never has to show a raw traceback.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .errors import DfmpcError, ModelLoadError, OptionsError

__all__ = [
    "OutputStats",
    "ValidationResult",
    "validate",
    "format_table",
    "make_session",
    "resolve_providers",
    "random_inputs",
    "load_inputs",
    "parse_shape_option",
    "output_stats",
    "measure_latency",
    "model_size_bytes",
]

WARMUP_RUNS = 3
"""Untimed runs before timing: the first calls allocate arenas and pick kernels."""

# Short names accepted for --provider besides the full ORT names. "cpu" and "cuda" are the ones
# documented; any other ORT provider can be named as e.g. "tensorrt" or "TensorrtExecutionProvider".
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}

# ORT type strings of tensor inputs -> NumPy dtypes we can generate or check npz data against.
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

Shapes = Mapping[str, Sequence[int]]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class OutputStats:
    """Agreement of one model output between the float and the quantized model.

    cosine: cosine similarity of the flattened outputs (1 = same direction).
    sqnr_db: 10*log10(sum(ref^2) / sum((ref - quant)^2)); +inf when the outputs are identical.
    max_abs_error / mean_abs_error: of ref - quant, over every element of the batch.
    top1_agreement: fraction of rows whose argmax over the last axis agrees; None unless the
        output is 2-D (batch, classes) with more than one class, where "top-1" means something.
    """

    name: str
    cosine: float
    sqnr_db: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None


@dataclass
class ValidationResult:
    """Everything ``validate`` measured; ``to_dict`` gives a JSON-able form for scripts.

    Sizes include external data files referenced by the model, because a model saved with
    external data is a small ``.onnx`` file plus the weights next to it.
    latency_ratio is quant / float (below 1 means the quantized model is faster).
    The last three fields record how latency was measured, so pasted numbers can be reproduced.
    """

    outputs: list[OutputStats]
    float_size_bytes: int
    quant_size_bytes: int
    float_latency_ms: float
    quant_latency_ms: float
    latency_ratio: float
    provider: str
    samples: int
    input_source: str
    repeats: int = 0
    threads: int = 0
    disable_quant_qdq: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``json.dumps``; non-finite floats become "inf"/"-inf"/"nan" strings.

        Strings rather than floats, because ``Infinity``/``NaN`` are not valid JSON and strict
        parsers (jq, JavaScript) reject them; identical outputs legitimately give an infinite SQNR.
        """
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
    """ORT error texts can span lines; the CLI prints one line per error."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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
        raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {_one_line(exc)}") from exc
    used = session.get_providers()
    if providers[0] not in used:
        raise OptionsError(
            f"ONNX Runtime could not use {providers[0]} for {model_path} and fell back to "
            f"{', '.join(used)}; check the GPU driver / CUDA / cuDNN installation or use "
            "--provider cpu"
        )
    return session


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def parse_shape_option(text: str | Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``--shape`` values such as ``input=1x3x32x32`` into ``{"input": (1, 3, 32, 32)}``.

    Accepts one string with comma-separated entries (``a=1x3,b=1x7``) or an iterable of such
    strings (a repeated click option). The name is split at the last "=", so names containing
    ":" or "/" (common in converted models) work. Every dimension must be a positive integer.
    """
    parts = [text] if isinstance(text, str) else list(text)
    result: dict[str, tuple[int, ...]] = {}
    for part in parts:
        if not isinstance(part, str):
            raise OptionsError(f"--shape expects text like input=1x3x224x224, got {part!r}")
        for entry in part.split(","):
            entry = entry.strip()
            if not entry:
                continue
            name, sep, dims_text = entry.rpartition("=")
            name, dims_text = name.strip(), dims_text.strip().lower()
            if not sep or not name or not dims_text:
                raise OptionsError(
                    f"bad --shape {entry!r}: expected NAME=DIMS, e.g. input=1x3x224x224"
                )
            dims: list[int] = []
            for dim in dims_text.split("x"):
                dim = dim.strip()
                if not dim.isdigit() or int(dim) <= 0:
                    raise OptionsError(
                        f"bad --shape {entry!r}: dimension {dim!r} is not a positive integer "
                        "(expected e.g. input=1x3x224x224)"
                    )
                dims.append(int(dim))
            shape = tuple(dims)
            if name in result and result[name] != shape:
                raise OptionsError(
                    f"--shape gives input {name!r} two different shapes: "
                    f"{_fmt_dims(result[name])} and {_fmt_dims(shape)}"
                )
            result[name] = shape
    if not result:
        raise OptionsError("empty --shape: expected NAME=DIMS, e.g. input=1x3x224x224")
    return result


def _fmt_dims(shape: Sequence[object]) -> str:
    return "x".join(str(dim) for dim in shape) if shape else "(scalar)"


def _declared(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def _is_fixed(dim: object) -> bool:
    return isinstance(dim, int) and dim >= 0


def _input_dtype(arg: ort.NodeArg, purpose: str) -> np.dtype:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise OptionsError(
            f"input {arg.name!r} has type {arg.type}, which {purpose} does not support"
        )
    return dtype


def _check_shapes_names(session: ort.InferenceSession, shapes: Shapes | None) -> None:
    if not shapes:
        return
    names = [arg.name for arg in session.get_inputs()]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise OptionsError(
            f"--shape names unknown input(s) {', '.join(map(repr, unknown))}; "
            f"the model's inputs are {', '.join(map(repr, names))}"
        )


def _resolve_shape(
    arg: ort.NodeArg, batch: int, override: Sequence[int] | None
) -> tuple[int, ...]:
    """Concrete shape for one input: an override wins, else the first free dim becomes batch."""
    declared = list(arg.shape)
    if override is not None:
        override = tuple(int(dim) for dim in override)
        if len(override) != len(declared):
            raise OptionsError(
                f"--shape {arg.name}={_fmt_dims(override)} has rank {len(override)}, but the "
                f"model declares {arg.name!r} with shape {_declared(declared)} "
                f"(rank {len(declared)})"
            )
        for axis, (dim, given) in enumerate(zip(declared, override, strict=True)):
            if _is_fixed(dim) and dim != given:
                raise OptionsError(
                    f"--shape {arg.name}={_fmt_dims(override)} sets dimension {axis} to {given}, "
                    f"but the model fixes it to {dim} (shape {_declared(declared)})"
                )
        return override
    dims: list[int] = []
    for axis, dim in enumerate(declared):
        if _is_fixed(dim):
            dims.append(int(dim))
        elif axis == 0:
            dims.append(batch)
        else:
            hint = "x".join(
                str(d) if _is_fixed(d) else (str(batch) if i == 0 else f"<{d or '?'}>")
                for i, d in enumerate(declared)
            )
            raise OptionsError(
                f"input {arg.name!r} has symbolic dimension {axis} ({dim!r}) in shape "
                f"{_declared(declared)}; give its full shape with --shape {arg.name}={hint} "
                "(for example --shape input=1x3x224x224)"
            )
    return tuple(dims)


def random_inputs(
    session: ort.InferenceSession,
    batch: int,
    seed: int,
    shapes: Shapes | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random data for every graph input of ``session``.

    Float inputs get standard normal values in the input's own dtype (float16 stays float16).
    Integer inputs get 0/1 values: those are valid token ids, attention masks, segment ids and
    indices into any table with two or more rows, so index-driven graphs do not fail on them.
    Bool inputs get random booleans. The first symbolic dimension becomes ``batch``; every other
    symbolic dimension needs an entry in ``shapes`` (raises OptionsError saying which).
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise OptionsError(f"--batch must be a positive integer, got {batch!r}")
    _check_shapes_names(session, shapes)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = _input_dtype(arg, "random input generation (pass --inputs data.npz)")
        shape = _resolve_shape(arg, batch, (shapes or {}).get(arg.name))
        if dtype.kind == "f":
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[arg.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            feeds[arg.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def load_inputs(
    path: str | os.PathLike[str], session: ort.InferenceSession
) -> dict[str, np.ndarray]:
    """Read model inputs from an ``.npz`` file whose keys are the graph input names; other arrays
    in the file (e.g. ``label``) are ignored.

    Checks names (listing missing and extra ones), ranks and fixed dimensions against the model
    up front, so the user gets one clear message rather than an ORT shape error mid-run. Arrays
    are cast to the input dtype when the cast is within the same kind (float64 data for a
    float32 input is the common case from NumPy).
    """
    npz_path = Path(os.fspath(path))
    if not npz_path.is_file():
        raise OptionsError(f"--inputs file not found: {npz_path}")
    try:
        data = np.load(npz_path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # np.load gives a bare array for a .npy file
            raise OptionsError(
                f"--inputs {npz_path} holds a single array, not named arrays; save the inputs "
                "with np.savez(path, input_name=array, ...)"
            )
        with data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise OptionsError(f"cannot read --inputs {npz_path} as .npz: {_one_line(exc)}") from exc

    args = session.get_inputs()
    names = [arg.name for arg in args]
    missing = [name for name in names if name not in arrays]
    extra = sorted(set(arrays) - set(names))
    # Extra arrays (labels saved beside the inputs, say) are ignored once every input is there;
    # they are listed only to explain a missing name (a typo shows up as one missing, one extra).
    if missing:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            detail.append(f"unexpected {', '.join(map(repr, extra))}")
        raise OptionsError(
            f"--inputs {npz_path} does not match the model inputs: {'; '.join(detail)} "
            f"(the model's inputs are {', '.join(map(repr, names))})"
        )

    feeds: dict[str, np.ndarray] = {}
    for arg in args:
        array = arrays[arg.name]
        declared = list(arg.shape)
        if array.ndim != len(declared) or any(
            _is_fixed(dim) and dim != got for dim, got in zip(declared, array.shape, strict=False)
        ):
            raise OptionsError(
                f"--inputs {npz_path}: array {arg.name!r} has shape "
                f"{_fmt_dims(array.shape)}, but the model declares {_declared(declared)}"
            )
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is not None and array.dtype != dtype:
            if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                raise OptionsError(
                    f"--inputs {npz_path}: array {arg.name!r} has dtype {array.dtype}, which "
                    f"cannot be used for the model's {arg.type} input"
                )
            array = array.astype(dtype)
        feeds[arg.name] = array
    return feeds


def _feeds_for(session: ort.InferenceSession, data: Mapping[str, np.ndarray]) -> dict:
    """Cast shared input data to this session's declared dtypes.

    The quantized model may declare e.g. float16 inputs where the float one has float32;
    the values are the same, only the container differs.
    """
    feeds = {}
    for arg in session.get_inputs():
        array = data[arg.name]
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        feeds[arg.name] = array
    return feeds


def _samples(feeds: Mapping[str, np.ndarray]) -> int:
    for array in feeds.values():
        if array.ndim >= 1:
            return int(array.shape[0])
    return 1


# --------------------------------------------------------------------------------------------
# Metrics, latency, sizes
# --------------------------------------------------------------------------------------------


def output_stats(name: str, reference: np.ndarray, quantized: np.ndarray) -> OutputStats:
    """Error statistics of one output, computed in float64 over the whole batch.

    float64 so that the statistics themselves add no error to what is being measured, even for
    float16 outputs.
    """
    ref = np.asarray(reference, dtype=np.float64)
    quant = np.asarray(quantized, dtype=np.float64)
    if ref.shape != quant.shape:
        raise DfmpcError(
            f"output {name!r} has shape {_fmt_dims(ref.shape)} in the float model but "
            f"{_fmt_dims(quant.shape)} in the quantized model"
        )
    if ref.size == 0:
        return OutputStats(name, 1.0, math.inf, 0.0, 0.0, None)
    a, b = ref.ravel(), quant.ravel()
    diff = a - b
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        cosine = 1.0 if norm_a == norm_b else 0.0  # both zero is agreement; one zero is not
    else:
        cosine = float(np.dot(a, b) / (norm_a * norm_b))
    signal = float(np.dot(a, a))
    noise = float(np.dot(diff, diff))
    if noise == 0.0:
        sqnr = math.inf
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)
    abs_err = np.abs(diff)
    top1: float | None = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(quant, axis=-1)))
    return OutputStats(
        name=name,
        cosine=cosine,
        sqnr_db=sqnr,
        max_abs_error=float(abs_err.max()),
        mean_abs_error=float(abs_err.mean()),
        top1_agreement=top1,
    )


def measure_latency(
    sessions: Sequence[ort.InferenceSession],
    feeds: Sequence[Mapping[str, np.ndarray]],
    repeats: int = 20,
    warmup: int = WARMUP_RUNS,
) -> list[float]:
    """Median wall time in ms of ``session.run`` for each session, after ``warmup`` runs.

    The timed runs of the sessions are interleaved (A, B, A, B, ...) so that frequency scaling or
    a noisy neighbour affects both models alike and the ratio stays meaningful. The median
    ignores the occasional outlier. Inputs are NumPy arrays, so on CUDA the host-device copies
    are included, as in any end-to-end ORT call.
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise OptionsError(f"--repeats must be a positive integer, got {repeats!r}")
    for _ in range(warmup):
        for session, feed in zip(sessions, feeds, strict=True):
            session.run(None, dict(feed))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for index, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            session.run(None, dict(feed))
            times[index].append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]


def _iter_graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _iter_node_tensors(node)


def _iter_node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _iter_graph_tensors(attr.g)
        for subgraph in attr.graphs:
            yield from _iter_graph_tensors(subgraph)


def model_size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a model: the ``.onnx`` file plus every external data file it references.

    Only the protobuf is parsed (external data is not loaded), so this is cheap for large models.
    A file referenced by several tensors is counted once.
    """
    model_path = Path(os.fspath(path))
    total = model_path.stat().st_size
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # unparsable here but ORT loaded it: report the file size alone
        return total
    tensors = list(_iter_graph_tensors(model.graph))
    for function in model.functions:
        for node in function.node:
            tensors.extend(_iter_node_tensors(node))
    locations: set[str] = set()
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    seen = {model_path.resolve()}
    for location in sorted(locations):
        data_path = (model_path.parent / location).resolve()
        if data_path not in seen and data_path.is_file():
            seen.add(data_path)
            total += data_path.stat().st_size
    return total


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def _check_same_interface(
    float_session: ort.InferenceSession,
    quant_session: ort.InferenceSession,
    float_path: Path,
    quant_path: Path,
) -> None:
    """The models must be interchangeable: same input and output names (order may differ)."""
    problems = []
    for kind, f_args, q_args in (
        ("inputs", float_session.get_inputs(), quant_session.get_inputs()),
        ("outputs", float_session.get_outputs(), quant_session.get_outputs()),
    ):
        f_names = {arg.name for arg in f_args}
        q_names = {arg.name for arg in q_args}
        if f_names != q_names:
            only_f = ", ".join(map(repr, sorted(f_names - q_names))) or "none"
            only_q = ", ".join(map(repr, sorted(q_names - f_names))) or "none"
            problems.append(
                f"{kind} only in the float model: {only_f}; only in the quantized model: {only_q}"
            )
    if problems:
        raise DfmpcError(
            f"{float_path} and {quant_path} have different interfaces: {' | '.join(problems)}"
        )


def _run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], path: Path) -> dict:
    names = [arg.name for arg in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as exc:  # shape/dtype errors surface here, as ORT pybind exceptions
        raise DfmpcError(f"ONNX Runtime failed to run {path}: {_one_line(exc)}") from exc
    return dict(zip(names, values, strict=True))


def validate(
    float_model: str | os.PathLike[str],
    quant_model: str | os.PathLike[str],
    *,
    inputs: str | os.PathLike[str] | None = None,
    provider: str = "cpu",
    batch: int = 8,
    seed: int = 0,
    repeats: int = 20,
    threads: int = 2,
    shapes: Shapes | None = None,
    disable_quant_qdq: bool = True,
) -> ValidationResult:
    """Run both models on the same inputs and measure output agreement, size and latency.

    inputs: an ``.npz`` whose keys are the input names; without it, seeded random data of
        ``batch`` rows (see ``random_inputs``), with ``shapes`` fixing other symbolic dims.
    Raises ModelLoadError for an unloadable model, OptionsError for bad options or inputs, and
    DfmpcError when the two models' interfaces differ or a run fails.
    """
    float_path = Path(os.fspath(float_model))
    quant_path = Path(os.fspath(quant_model))
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise OptionsError(f"--batch must be a positive integer, got {batch!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise OptionsError(f"--repeats must be a positive integer, got {repeats!r}")
    if inputs is not None and shapes:
        raise OptionsError("--shape applies to random inputs only; with --inputs the npz arrays "
                           "give the shapes")

    sessions = []
    for role, path in (("float", float_path), ("quantized", quant_path)):
        try:
            sessions.append(make_session(path, provider, threads, disable_quant_qdq))
        except ModelLoadError as exc:
            raise ModelLoadError(f"{role} model: {exc}") from exc
    float_session, quant_session = sessions
    _check_same_interface(float_session, quant_session, float_path, quant_path)

    if inputs is not None:
        data = load_inputs(inputs, float_session)
        source = os.fspath(inputs)
    else:
        data = random_inputs(float_session, batch, seed, shapes)
        source = f"random(seed={seed})"
    float_feeds = _feeds_for(float_session, data)
    quant_feeds = _feeds_for(quant_session, data)

    reference = _run(float_session, float_feeds, float_path)
    quantized = _run(quant_session, quant_feeds, quant_path)
    outputs = [output_stats(name, reference[name], quantized[name]) for name in reference]

    float_ms, quant_ms = measure_latency(
        [float_session, quant_session], [float_feeds, quant_feeds], repeats=repeats
    )
    return ValidationResult(
        outputs=outputs,
        float_size_bytes=model_size_bytes(float_path),
        quant_size_bytes=model_size_bytes(quant_path),
        float_latency_ms=float_ms,
        quant_latency_ms=quant_ms,
        latency_ratio=quant_ms / float_ms if float_ms > 0 else math.nan,
        provider=quant_session.get_providers()[0],
        samples=_samples(data),
        input_source=source,
        repeats=repeats,
        threads=threads,
        disable_quant_qdq=disable_quant_qdq,
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

_NAME_MAX = 32


def _short_name(name: str) -> str:
    """Keep long tensor names to one column: the start and the (usually telling) end."""
    if len(name) <= _NAME_MAX:
        return name
    head = (_NAME_MAX - 3) // 2
    return name[:head] + "..." + name[-(_NAME_MAX - 3 - head):]


def _fmt_float(value: float, spec: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def _fmt_size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} B"


def format_table(result: ValidationResult) -> str:
    """Fixed-width plain-text report (under 90 columns) to print or paste into an issue.

    One row per output, then size, latency, provider and input lines. Infinite SQNR (identical
    outputs) prints as "inf"; top-1 prints "-" for outputs that are not (batch, classes).
    """
    width = max([len("output")] + [len(_short_name(o.name)) for o in result.outputs])
    header = (
        f"{'output':<{width}}  {'cosine':>9}  {'SQNR dB':>8}  {'max |err|':>10}  "
        f"{'mean |err|':>10}  {'top-1':>7}"
    )
    lines = [header, "-" * len(header)]
    for stats in result.outputs:
        top1 = "-" if stats.top1_agreement is None else f"{stats.top1_agreement * 100:.2f}%"
        lines.append(
            f"{_short_name(stats.name):<{width}}  {_fmt_float(stats.cosine, '.6f'):>9}  "
            f"{_fmt_float(stats.sqnr_db, '.2f'):>8}  {_fmt_float(stats.max_abs_error, '.3e'):>10}  "
            f"{_fmt_float(stats.mean_abs_error, '.3e'):>10}  {top1:>7}"
        )
    lines.append("")
    if result.quant_size_bytes > 0:
        compression = f"{result.float_size_bytes / result.quant_size_bytes:.2f}x smaller"
    else:
        compression = "n/a"
    lines.append(
        f"{'size':<9} float {_fmt_size(result.float_size_bytes):>10}   "
        f"quant {_fmt_size(result.quant_size_bytes):>10}   ({compression})"
    )
    runs = f"median of {result.repeats} runs, " if result.repeats else ""
    lines.append(
        f"{'latency':<9} float {result.float_latency_ms:>7.3f} ms   "
        f"quant {result.quant_latency_ms:>7.3f} ms   "
        f"(quant/float {_fmt_float(result.latency_ratio, '.2f')}x; "
        f"{runs}batch {result.samples})"
    )
    settings = []
    if result.threads:
        settings.append(f"{result.threads} threads")
    settings.append(f"session.disable_quant_qdq={int(result.disable_quant_qdq)}")
    lines.append(f"{'provider':<9} {result.provider} ({', '.join(settings)})")
    lines.append(f"{'inputs':<9} {result.input_source}, {result.samples} samples")
    return "\n".join(lines)
