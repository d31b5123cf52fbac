"""Where a large model's weights live while it is converted: in a file, not in the protobuf.

A protobuf holding the float weights costs their size for the whole conversion (upb's arena never
shrinks), and every ONNX Runtime session built from it costs that again, so a conversion that
measures held the weights three or four times (benchmarks/memory.py). Instead, ``convert_file``
gives the conversion a ``WeightStore``: one file in a working folder beside the output. Loading
moves every large initializer there (copied from the input's external data, or written out of an
inline model, never modifying the input), and the model the passes see holds *stubs*: initializers
with ``data_location = EXTERNAL`` whose location is the absolute path of that file. Values are read
when a pass asks for them (``read``: ``GraphIndex.array`` does) and dropped when it is done;
weights a pass rewrites go back to the store (``set_array``); the probe's ONNX Runtime sessions map
the file instead of copying it (``relative_stub``, offsets page-aligned for that); and the writer
streams stubs into the output's external data (``dfmpc_onnx.model.modelio``). Only plain numeric types
are stored; others, and tensors up to ``LARGE_TENSOR_BYTES``, stay inline.

Without a store (``convert`` on an in-memory model) the same passes see ordinary initializers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from dfmpc_onnx.model.proto import LARGE_TENSOR_BYTES, copy_fields, tensor_bytes

# Offsets in the store are multiples of this, so that ONNX Runtime maps a tensor from the file
# (it does where the offset is a multiple of the allocation granularity: 4 KiB on Linux, 64 KiB on
# Windows) instead of reading a copy into memory.
ALIGN = 1 << 16
_COPY_CHUNK = 64 << 20
_PLAIN = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8,
          TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
          TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64}


class ExternalDataError(ValueError):
    """The input's external data is missing or shorter than its tensors say."""


class WeightStore:
    """An append-only file of tensor values in ``folder`` (created by the caller, removed with it)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / "weights.bin"
        self._fh = open(self.path, "wb")
        self._end = 0
        self._files = 0

    def close(self) -> None:
        self._fh.close()

    def _append(self, chunks) -> tuple[int, int]:
        """Write ``chunks`` (bytes-like) at the next aligned offset; returns (offset, length)."""
        offset = -(-self._end // ALIGN) * ALIGN
        if offset > self._end:
            self._fh.write(b"\0" * (offset - self._end))
        length = 0
        for chunk in chunks:
            self._fh.write(chunk)
            length += len(chunk)
        self._fh.flush()
        self._end = offset + length
        return offset, length

    def _stub(self, name: str, data_type: int, dims, offset: int, length: int) -> TensorProto:
        t = TensorProto(name=name, data_type=data_type, dims=list(dims),
                        data_location=TensorProto.EXTERNAL)
        for key, value in (("location", str(self.path)), ("offset", str(offset)),
                           ("length", str(length))):
            t.external_data.add(key=key, value=value)
        return t

    def put(self, name: str, value: np.ndarray) -> TensorProto:
        """A stub holding ``value`` (written now, little-endian)."""
        value = np.ascontiguousarray(value)
        data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        raw = value.astype(value.dtype.newbyteorder("<"), copy=False)
        offset, length = self._append([memoryview(raw.reshape(-1)).cast("B")])
        return self._stub(name, data_type, value.shape, offset, length)

    def take(self, t: TensorProto, source_dir: Path | None = None) -> TensorProto:
        """The stub for ``t`` if it is worth storing (large, plain type), else ``t`` itself.

        Inline values are written out of the tensor; external ones are copied from the input's
        data file in chunks (never whole in memory), after checking it holds them."""
        if t.data_type not in _PLAIN or tensor_bytes(t) <= LARGE_TENSOR_BYTES:
            return t
        if t.data_location == TensorProto.EXTERNAL:
            path, start, length = _external_range(t, source_dir)
            offset, length = self._append(_file_chunks(path, start, length))
            return self._stub(t.name, t.data_type, t.dims, offset, length)
        if t.HasField("raw_data"):
            offset, length = self._append([t.raw_data])
            return self._stub(t.name, t.data_type, t.dims, offset, length)
        return self.put(t.name, numpy_helper.to_array(t))

    def model_file(self, model: onnx.ModelProto) -> Path:
        """``model`` written as a new file in the store's folder, its stubs pointing at the
        store's file by a relative path: a model ONNX Runtime loads by mapping the weights. The
        caller removes the file once loaded."""

        out = onnx.ModelProto()
        copy_fields(model, out, skip="graph")
        copy_fields(model.graph, out.graph, skip="initializer")
        out.graph.initializer.extend(self.relative_stub(t) if is_stub(t) else t
                                     for t in model.graph.initializer)
        self._files += 1
        path = self.folder / f"session-{self._files}.onnx"
        path.write_bytes(out.SerializeToString())
        return path

    def relative_stub(self, t: TensorProto) -> TensorProto:
        """A copy of stub ``t`` whose location is relative to the store's folder: what a model
        file written in that folder for ONNX Runtime must say (it refuses absolute paths)."""
        out = TensorProto()
        out.CopyFrom(t)
        for entry in out.external_data:
            if entry.key == "location":
                entry.value = Path(entry.value).name
        return out


def offload(model: onnx.ModelProto, store: WeightStore, source_dir: Path | None) -> onnx.ModelProto:
    """A new model like ``model`` whose large main-graph initializers are stubs in ``store``, and
    whose large Constant nodes (weights as some exporters write them) are stub initializers.

    Built field by field, so ``model`` (and the arena that holds its weights) can be dropped by
    the caller; external data is read from ``source_dir`` and never written."""

    light = onnx.ModelProto()
    copy_fields(model, light, skip="graph")
    copy_fields(model.graph, light.graph, skip=("initializer", "node"))
    for t in model.graph.initializer:
        light.graph.initializer.append(store.take(t, source_dir))
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        value = _constant_value(node)
        if value is not None and node.output[0] not in outputs:
            taken = store.take(value, source_dir)
            if taken is not value:
                taken.name = node.output[0]
                light.graph.initializer.append(taken)
                continue
        light.graph.node.append(node)
    if light.ir_version < 4 and len(light.graph.initializer) > len(model.graph.initializer):
        light.ir_version = 4  # IR 3 wants every initializer a graph input; IR 4 reads the same graph
    return light


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """The tensor of a plain Constant node (``value`` attribute), else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    a = node.attribute[0]
    return a.t if a.name == "value" and a.type == onnx.AttributeProto.TENSOR else None


def is_stub(t: TensorProto) -> bool:
    """Whether ``t`` is a stub of a store (its location an absolute path)."""
    return t.data_location == TensorProto.EXTERNAL and os.path.isabs(_info(t).get("location", ""))


def read(t: TensorProto) -> np.ndarray:
    """The value of a stub, read from its file into memory of its own."""
    info = _info(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    count = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    value = np.fromfile(info["location"], dtype=dtype, count=count, offset=int(info.get("offset", 0)))
    return value.astype(value.dtype.newbyteorder("="), copy=False).reshape(tuple(t.dims))


def mapped(t: TensorProto) -> np.ndarray:
    """The value of a stub as a read-only map of its file: pages are read as they are used, and
    given back when the array is dropped."""
    info = _info(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    return np.memmap(info["location"], dtype=dtype, mode="r", offset=int(info.get("offset", 0)),
                     shape=tuple(int(d) for d in t.dims))


def stub_bytes(t: TensorProto):
    """The stored bytes of stub ``t``, in chunks (for the writer)."""
    info = _info(t)
    return _file_chunks(Path(info["location"]), int(info.get("offset", 0)), tensor_bytes(t))


class StoredArray:
    """A stub's value, read when used: ``a[i:j, ...]`` reads rows i..j-1 of the first axis only
    (they are contiguous in the file); anything else (``np.asarray(a)``, ``a.astype``) reads the
    whole tensor. Lets a layer of hundreds of megabytes be rounded a block of rows at a time
    without ever being whole in memory."""

    def __init__(self, t: TensorProto) -> None:
        self._t = t
        self.shape = tuple(int(d) for d in t.dims)
        self.dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        value = read(self._t)
        return value if dtype is None else value.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return read(self._t).astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key else slice(None)
        if not self.shape or not isinstance(first, slice) or first.step not in (None, 1):
            return np.asarray(self)[key]
        lo, hi, _ = first.indices(self.shape[0])
        hi = max(lo, hi)
        row = self.size // max(self.shape[0], 1)
        info = _info(self._t)
        dtype = self.dtype.newbyteorder("<")
        rows = np.fromfile(info["location"], dtype=dtype, count=(hi - lo) * row,
                           offset=int(info.get("offset", 0)) + lo * row * dtype.itemsize)
        rows = rows.astype(self.dtype, copy=False).reshape((hi - lo, *self.shape[1:]))
        return rows[(slice(None), *key[1:])]


def set_array(t: TensorProto, value: np.ndarray, store: WeightStore | None) -> None:
    """Make initializer ``t`` hold ``value`` (cast to ``t``'s type): in the store when there is
    one and the value is large, else inline."""
    value = np.asarray(value).astype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type), copy=False)
    if store is not None and value.nbytes > LARGE_TENSOR_BYTES and t.data_type in _PLAIN:
        t.CopyFrom(store.put(t.name, value))
    else:
        t.CopyFrom(numpy_helper.from_array(value, t.name))


def inline_copy(t: TensorProto) -> TensorProto:
    """A copy of stub ``t`` holding its values inline (for a model written without external data)."""
    out = TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
    out.raw_data = b"".join(stub_bytes(t))
    return out


def session_for(model: onnx.ModelProto, so, store: WeightStore | None = None):
    """A CPU session of ``model``; where it holds weight-store stubs, from a model file written in
    the store's folder (ONNX Runtime then maps the weights from the store's file)."""
    import onnxruntime as ort

    if store is None or not any(is_stub(t) for t in model.graph.initializer):
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    path = store.model_file(model)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    finally:
        path.unlink()


def session_reading(model: onnx.ModelProto, tensors, store: WeightStore | None = None,
                    threads: int = 2, only: bool = False):
    """A quiet CPU session of ``model`` whose outputs also include ``tensors`` (intermediate
    values to read: calibration, noise, a layer's response); with ``only``, just those, so ONNX
    Runtime prunes what they do not need. The model is copied, never changed."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    if only:
        del probe.graph.output[:]
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(tensors)
                              if n not in present)
    so = ort.SessionOptions()
    so.log_severity_level = 4 if only else 3
    so.intra_op_num_threads = threads
    return session_for(probe, so, store)


def remove(folder: str | os.PathLike) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _info(t: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _external_range(t: TensorProto, source_dir: Path | None) -> tuple[Path, int, int]:
    """Where an input tensor's external data lies: (file, offset, bytes), checked to be there."""
    info = _info(t)
    location = info.get("location", "")
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise ExternalDataError(f"tensor '{t.name}': external data location {location!r} is not a "
                                "relative path inside the model's folder")
    path = (source_dir or Path(".")) / location
    start = int(info.get("offset", 0) or 0)
    need = int(np.prod(t.dims, dtype=np.int64)) * np.dtype(
        onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    length = int(info.get("length", need) or need)
    if length != need:
        raise ExternalDataError(f"tensor '{t.name}': external data length {length} does not match "
                                f"its shape and type ({need} bytes)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExternalDataError(f"tensor '{t.name}': cannot read {path} ({exc.strerror})") from exc
    if start + length > size:
        raise ExternalDataError(f"tensor '{t.name}': {path} holds {size} bytes, the tensor needs "
                                f"{start + length} (cut short?)")
    return path, start, length


def _file_chunks(path: Path, start: int, length: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            chunk = fh.read(min(left, _COPY_CHUNK))
            if not chunk:
                raise ExternalDataError(f"{path}: ends before the tensor at offset {start}")
            left -= len(chunk)
            yield chunk
