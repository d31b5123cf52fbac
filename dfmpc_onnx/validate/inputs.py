"""Model inputs for ``validate``: ``--input-shape`` parsing, seeded random data, ``.npz`` files, labels.

Every check here runs before ONNX Runtime sees the data, so a user whose file or shape does not
fit the model gets one message naming the input and both shapes instead of an ORT error mid-run.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx.measure.synthetic import parse_input_shapes

from ..errors import OptionsError
from .sessions import one_line

# ORT type strings of tensor inputs -> NumPy dtypes we can generate or check npz data against.
ORT_DTYPES: dict[str, np.dtype] = {
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


def parse_shape_option(text: str | Iterable[str]) -> dict[str, tuple[int | None, ...]]:
    """``--input-shape`` values (``input=1x3x32x32``, ``input=1,3,32,32``, Polygraphy's
    ``input:[1,3,32,32]``; N or ? for the model's own dimension): the parser convert and inspect
    use (dfmpc_onnx.measure.synthetic.parse_input_shapes), so the three commands read one syntax."""
    return parse_input_shapes(text)


def fmt_dims(shape: Sequence[object]) -> str:
    return "x".join(str(dim) for dim in shape) if shape else "(scalar)"


def declared_shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def is_fixed(dim: object) -> bool:
    return isinstance(dim, int) and dim >= 0


def _input_dtype(arg: ort.NodeArg, purpose: str) -> np.dtype:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise OptionsError(
            f"input {arg.name!r} has type {arg.type}, which {purpose} does not support"
        )
    return dtype


def graph_header(model_path: str | os.PathLike[str]) -> Callable[[], onnx.ModelProto]:
    """The model's graph without its external weights, read from ``model_path`` when first
    asked and kept: validate's shape rule and integer ranges both need it, and a large model is
    not parsed twice (or at all where neither does)."""
    kept: list[onnx.ModelProto] = []

    def header() -> onnx.ModelProto:
        if not kept:
            kept.append(onnx.load(os.fspath(model_path), load_external_data=False))
        return kept[0]

    return header


def resolved_shapes(header: Callable[[], onnx.ModelProto], session: ort.InferenceSession,
                    shapes: Shapes | None, batch: int) -> tuple[Shapes | None, str | None]:
    """``shapes`` completed for random inputs: every symbolic dimension other than the batch
    that ``shapes`` leaves open is set by the rule ``convert`` measures with
    (``dfmpc_onnx.measure.input_spec.resolve_shapes``), each try run in the float ``session``,
    so a model convert handled without --input-shape is validated without it too. Returns the
    shapes (axis 0 left to --batch where the model leaves it free, an RNN state's batch axis
    set to ``batch``) and a note saying which were
    set by rule (None when none was needed). Raises OptionsError naming the input when no rule
    gives a shape ONNX Runtime runs. ``header``: ``graph_header`` of the float model."""
    from dfmpc_onnx.measure.input_spec import ort_check, resolve_shapes

    _check_shapes_names(session, shapes)
    given = dict(shapes or {})
    open_inputs = [arg for arg in session.get_inputs() if arg.name not in given
                   and any(not is_fixed(d) for d in list(arg.shape)[1:])]
    if not open_inputs:
        return shapes, None
    model = header()
    spec = resolve_shapes(model, {k: tuple(v) for k, v in given.items()},
                          check=ort_check(model, session=session))
    out: dict[str, Sequence[int | None]] = dict(given)
    shown = []
    for arg in open_inputs:
        shape = spec.shapes[arg.name]
        first = list(arg.shape)[0] if len(arg.shape) else None
        dims = [None if not is_fixed(first) else shape[0]] + list(shape[1:])
        if arg.name in spec.batch_axes:  # an RNN state's batch: as many as the other inputs'
            dims[spec.batch_axes[arg.name]] = batch
        out[arg.name] = tuple(dims)
        shown.append(f"{arg.name} {fmt_dims(['N' if d is None else d for d in out[arg.name]])} "
                     f"({spec.rules.get(arg.name, 'declared')}"
                     + (f"; here --batch {batch}" if arg.name in spec.batch_axes else "") + ")")
    return out, ("symbolic dimensions set by the rule convert measures with (--input-shape "
                 "overrides): " + "; ".join(shown))


def drawn_ranges(header: Callable[[], onnx.ModelProto],
                 session: ort.InferenceSession) -> dict[str, tuple[int, int]]:
    """[low, high) of each integer input as convert draws it (``synthetic.integer_ranges``), so
    validate runs the branch convert measured (silero-vad: ``sr`` = 16000, its 16 kHz network);
    nothing read where the model has no integer input."""
    from dfmpc_onnx.measure.synthetic import integer_ranges

    if not any(arg.type.startswith(("tensor(int", "tensor(uint")) for arg in session.get_inputs()):
        return {}
    return integer_ranges(header())


def _check_shapes_names(session: ort.InferenceSession, shapes: Shapes | None) -> None:
    if not shapes:
        return
    names = [arg.name for arg in session.get_inputs()]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise OptionsError(
            f"--input-shape names unknown input(s) {', '.join(map(repr, unknown))}; "
            f"the model's inputs are {', '.join(map(repr, names))}"
        )


def _resolve_shape(
    arg: ort.NodeArg, batch: int, override: Sequence[int | None] | None
) -> tuple[int, ...]:
    """Concrete shape for one input: an override wins (its N/? dims: the model's own, axis 0 the
    batch), else the first free dim becomes batch."""
    declared = list(arg.shape)
    if override is not None:
        override = tuple(None if dim is None else int(dim) for dim in override)
        shown = fmt_dims(["N" if d is None else d for d in override])
        if len(override) != len(declared):
            raise OptionsError(
                f"--input-shape {arg.name}={shown} has rank {len(override)}, but the "
                f"model declares {arg.name!r} with shape {declared_shape(declared)} "
                f"(rank {len(declared)})"
            )
        dims: list[int] = []
        for axis, (dim, given) in enumerate(zip(declared, override, strict=True)):
            if given is None:
                if is_fixed(dim):
                    dims.append(int(dim))
                elif axis == 0:
                    dims.append(batch)
                else:
                    raise OptionsError(
                        f"--input-shape {arg.name}={shown}: dimension {axis} is symbolic in the "
                        f"model ({dim!r}); give it a number")
                continue
            if is_fixed(dim) and dim != given:
                raise OptionsError(
                    f"--input-shape {arg.name}={shown} sets dimension {axis} to {given}, "
                    f"but the model fixes it to {dim} (shape {declared_shape(declared)})"
                )
            dims.append(given)
        return tuple(dims)
    dims = []
    for axis, dim in enumerate(declared):
        if axis == 0 and is_fixed(dim) and 0 < dim < batch:
            # A batch fixed at export (often 1): --batch samples all the same, in whole runs
            # that validate feeds one after another.
            dims.append(-(-batch // int(dim)) * int(dim))
        elif is_fixed(dim):
            dims.append(int(dim))
        elif axis == 0:
            dims.append(batch)
        else:
            hint = ",".join(
                str(d) if is_fixed(d) else ("N" if i == 0 else f"<{d or '?'}>")
                for i, d in enumerate(declared)
            )
            raise OptionsError(
                f"input {arg.name!r} has symbolic dimension {axis} ({dim!r}) in shape "
                f"{declared_shape(declared)}; give its full shape with --input-shape "
                f"{arg.name}={hint}"
            )
    return tuple(dims)


def random_inputs(
    session: ort.InferenceSession,
    batch: int,
    seed: int,
    shapes: Shapes | None = None,
    ranges: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random data for every graph input of ``session``.

    Float inputs get standard normal values in the input's own dtype (float16 stays float16).
    Integer inputs get values in ``ranges`` [low, high) where given (convert's rule,
    ``synthetic.integer_ranges``: a sample rate the graph branches on is that rate), else 0/1:
    those are valid token ids, attention masks, segment ids and
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
            lo, hi = (ranges or {}).get(arg.name, (0, 2))
            feeds[arg.name] = rng.integers(lo, hi, size=shape).astype(dtype)
    return feeds


LABEL_NAMES = ("label", "labels")
"""Arrays of an ``.npz`` read as class labels (when they are not model inputs), in this order."""


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, or OptionsError naming the file when it is not one."""
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
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise OptionsError(f"cannot read --inputs {npz_path} as .npz: {one_line(exc)}") from exc


def load_inputs(
    path: str | os.PathLike[str],
    session: ort.InferenceSession,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Read model inputs from an ``.npz`` file whose keys are the graph input names; other arrays
    in the file (e.g. ``label``) are ignored.

    Checks names (listing missing and extra ones), ranks and fixed dimensions against the model
    up front, so the user gets one clear message rather than an ORT shape error mid-run. Arrays
    are cast to the input dtype when the cast is within the same kind (float64 data for a
    float32 input is the common case from NumPy). ``arrays``: the file's content when the caller
    has already read it with ``read_npz`` (``path`` then only names it in messages).
    """
    npz_path = Path(os.fspath(path))
    if arrays is None:
        arrays = read_npz(npz_path)

    args = session.get_inputs()
    names = [arg.name for arg in args]
    missing = [name for name in names if name not in arrays]
    extra = sorted(set(arrays) - set(names))
    # Extra arrays (labels saved beside the inputs, say) are ignored once every input is there;
    # they are listed only to explain a missing name (a typo shows up as one missing, one extra).
    if missing:
        detail = [f"missing {', '.join(map(repr, missing))}"]
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
        # A fixed batch (axis 0) takes any whole number of runs: validate runs them in turn.
        if array.ndim != len(declared) or any(
            is_fixed(dim) and dim != got and not (axis == 0 and dim > 0 and got % dim == 0)
            for axis, (dim, got) in enumerate(zip(declared, array.shape, strict=False))
        ):
            raise OptionsError(
                f"--inputs {npz_path}: array {arg.name!r} has shape "
                f"{fmt_dims(array.shape)}, but the model declares {declared_shape(declared)}"
            )
        dtype = ORT_DTYPES.get(arg.type)
        if dtype is not None and array.dtype != dtype:
            if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                raise OptionsError(
                    f"--inputs {npz_path}: array {arg.name!r} has dtype {array.dtype}, which "
                    f"cannot be used for the model's {arg.type} input"
                )
            array = array.astype(dtype)
        feeds[arg.name] = array
    return feeds


def feeds_for(session: ort.InferenceSession, data: Mapping[str, np.ndarray]) -> dict:
    """Cast shared input data to this session's declared dtypes.

    The quantized model may declare e.g. float16 inputs where the float one has float32;
    the values are the same, only the container differs.
    """
    feeds = {}
    for arg in session.get_inputs():
        array = data[arg.name]
        dtype = ORT_DTYPES.get(arg.type)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        feeds[arg.name] = array
    return feeds


def sample_count(feeds: Mapping[str, np.ndarray]) -> int:
    for array in feeds.values():
        if array.ndim >= 1:
            return int(array.shape[0])
    return 1



def load_labels(
    arrays: Mapping[str, np.ndarray], samples: int, input_names: Iterable[str] = ()
) -> tuple[str, np.ndarray] | None:
    """The class labels an ``.npz`` carries beside the inputs, as (array name, int64 labels).

    An array named ``label`` or ``labels`` counts when it is not itself a model input, holds
    integers, and has one entry per sample (shape (N,) or (N, 1)); anything else is left alone,
    because without labels ``validate`` still measures agreement, just not accuracy.
    """
    inputs = set(input_names)
    for name in LABEL_NAMES:
        if name in inputs or name not in arrays:
            continue
        array = np.asarray(arrays[name])
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 1 and array.shape[0] == samples and array.dtype.kind in "iu":
            return name, array.astype(np.int64)
    return None
