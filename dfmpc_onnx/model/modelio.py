"""Reading and writing models safely: clear errors for bad input, atomic output, checks before
the output appears. The input file is only ever opened for reading."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from dfmpc_onnx.errors import (
    ConversionCheckError,
    ModelLoadError,
    OutputError,
    UnsupportedModelError,
    first_line,
)
from dfmpc_onnx.model.graph import all_nodes, tensor_bytes
from dfmpc_onnx.model.opset import (
    OpsetUpgradeError,
    checkable,
    copy_fields,
    full_check_error,
    light_copy,
    upgrade_opset,
    without_intermediate_value_info,
)
from dfmpc_onnx.model.weightstore import WeightStore, inline_copy, is_stub, offload, stub_bytes

TWO_GB = (1 << 31) - (1 << 20)


def load_model(path: str | os.PathLike, store: WeightStore | None = None) -> onnx.ModelProto:
    """Load and check an ONNX model, with one clear sentence for every way a file can be wrong.

    With ``store``, large initializers go to it and the model holds stubs (``weightstore``):
    their values are never all in memory at once, and the input is only read."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not an ONNX file")
    try:
        size = p.stat().st_size
        if size == 0:
            raise ModelLoadError(f"{p}: file is empty")
        with open(p, "rb") as fh:
            model = onnx.load_model(fh, load_external_data=False)
    except ModelLoadError:
        raise
    except PermissionError as exc:
        raise ModelLoadError(f"{p}: cannot read ({exc.strerror})") from exc
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{p}: not an ONNX model, or truncated (protobuf parse failed: "
                             f"{first_line(exc)})") from exc
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{p}: parses as protobuf but holds no ONNX graph/opset "
                             "(is it a model file?)")
    try:
        if store is not None:
            model = offload(model, store, p.parent)  # the parsed model is dropped with its arena
        for t in onnx.external_data_helper._get_all_tensors(model):
            if t.data_location == onnx.TensorProto.EXTERNAL and not is_stub(t):
                onnx.external_data_helper.load_external_data_for_tensor(t, str(p.parent))
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, checker.ValidationError
        raise ModelLoadError(f"{p}: external data could not be read: {first_line(exc)}") from exc
    check_input(model, p)
    return model


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in onnx.external_data_helper._get_all_tensors(model))


def check_input(model: onnx.ModelProto, where: object = "model") -> None:
    """The input must pass onnx.checker (not the full check: real exports often fail strict
    shape inference yet run fine; the output gets the full check). Checked on a light copy whose
    large weights are graph inputs: the checker serialises what it checks, and a copy of every
    weight would double the peak memory of a large model's conversion."""
    try:
        onnx.checker.check_model(checkable(light_copy(model)))
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{where}: fails onnx.checker: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - checker raises several types
        raise ModelLoadError(f"{where}: fails onnx.checker: {first_line(exc)}") from exc


# Operator domains ONNX Runtime implements. A node in any other domain (and not a model-local
# function) is a custom operator: no runtime here can load the model, before or after conversion.
RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                             "ai.onnx.preview.training", "ai.onnx.training",
                             "com.ms.internal.nhwc"})


def custom_nodes(model: onnx.ModelProto) -> list[str]:
    """``domain:op (node)`` for every node, subgraphs included, that ONNX Runtime cannot run."""
    local = {(f.domain, f.name) for f in model.functions}
    found: list[str] = []

    for node in all_nodes(model.graph):
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            found.append(f"{node.domain}:{node.op_type} ({node.name or 'unnamed'})")
    return found


def check_output(model_or_path: onnx.ModelProto | str, what: str = "converted model", *,
                 runtime: bool = True,
                 source: onnx.ModelProto | str | os.PathLike | None = None) -> None:
    """Full onnx.checker and (with ``runtime``) an ONNX Runtime load; failure means we produced
    something broken. ``runtime`` is off only for models with custom operators nothing here runs.
    When the load fails and ``source`` (the input model) does not load either, the fault is the
    input's, and the error says so instead of blaming the conversion."""
    try:
        onnx.checker.check_model(model_or_path, full_check=True)
    except Exception as exc:  # noqa: BLE001
        _blame_input(source, model_or_path)
        raise ConversionCheckError(f"{what} fails onnx.checker: {first_line(exc)}") from exc
    if not runtime:
        return
    problem = runtime_load_error(model_or_path)
    if problem:
        source_problem = runtime_load_error(source) if source is not None else None
        if source_problem:
            raise UnsupportedModelError(
                f"the input model itself does not load in ONNX Runtime: {source_problem}")
        raise ConversionCheckError(f"{what} does not load in ONNX Runtime: {problem}")


def _blame_input(source: onnx.ModelProto | str | os.PathLike | None,
                 output: onnx.ModelProto | str) -> None:
    """The output failed the full checker: raise the input's fault instead if the input fails it
    too, as it is (exit 3) or once upgraded to the output's opset (exit 4). The checker's input
    check is lighter (real exports often fail strict shape inference yet run), so an invalid
    graph can get this far. Only runs on failure: it costs a second check and an upgrade."""
    if source is None:
        return
    # Judged as the conversion reads it: exporter value_info for intermediates dropped.
    model = without_intermediate_value_info(
        source if isinstance(source, onnx.ModelProto) else onnx.load(str(source)))
    problem = full_check_error(model, stubs=False)
    if problem:
        raise ModelLoadError(f"the input model fails the full onnx.checker (types and shapes), "
                             f"so its conversion cannot pass it: {problem}")
    out = output if isinstance(output, onnx.ModelProto) else onnx.load(output, load_external_data=False)
    target = _ai_onnx_opset(out)
    if target <= _ai_onnx_opset(model):
        return
    try:
        upgrade_opset(model, target)
    except OpsetUpgradeError as exc:
        raise UnsupportedModelError(f"{exc} (opset {target} is needed by DequantizeLinear for the "
                                    "chosen bit-widths)") from exc
    except Exception:  # noqa: BLE001 - the conversion itself managed it; the fault is not here
        return


def _ai_onnx_opset(model: onnx.ModelProto) -> int:
    return next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 1)


def runtime_load_error(model_or_path: onnx.ModelProto | str | os.PathLike) -> str | None:
    """None if ONNX Runtime (CPU) builds a session for the model, else the first line of why.

    Without graph optimisations: the load resolves every node's kernel, which is the question,
    and constant folding would turn each DequantizeLinear of a weight back into a float copy (a
    peak of the float weights again, on a model of gigabytes)."""
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        src = (model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto)
               else str(model_or_path))
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several pybind types
        return first_line(exc)
    return None


def check_output_path(output: str | os.PathLike, input_path: str | os.PathLike | None) -> Path:
    out = Path(output)
    if input_path is not None and out.resolve() == Path(input_path).resolve():
        raise OutputError(f"{out}: output path is the input path; the input is never overwritten")
    if out.exists() and out.is_dir():
        raise OutputError(f"{out}: is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{out}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise OutputError(f"{out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: directory {parent} is not writable")
    try:  # fail now, not after a long conversion (access() says yes to root, even on /proc)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {parent} ({exc.strerror})") from exc
    return out


# Every temporary folder of ours holds this file: the pid and host of the process that made it, so
# a later run can tell the folder of a killed process (SIGKILL, power loss: no cleanup ran) from
# that of one still running, and remove it.
OWNER_FILE = ".dfmpc-owner"
# Folders of ours with no owner file (made by versions before it) are removed after this long.
OWNERLESS_STALE_S = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, alive
    return True


def is_stale(folder: Path) -> bool:
    """Whether ``folder`` belongs to a process of this host that has ended."""
    try:
        pid_text, host = (folder / OWNER_FILE).read_text().split()[:2]
        pid = int(pid_text)
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime > OWNERLESS_STALE_S
        except OSError:
            return False
    except (OSError, ValueError):
        return False
    return host == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the folders ``parent/prefix*`` that processes now dead left behind; returns them."""
    removed: list[Path] = []
    try:
        entries = [e for e in parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink() and is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def owned_tempdir(prefix: str, parent: str | os.PathLike | None = None) -> Path:
    """``tempfile.mkdtemp`` that first sweeps the stale folders of that prefix, and marks the new
    one with its owner (OWNER_FILE) so a later run can sweep it if this process is killed."""
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep_stale(where, prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    (path / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    return path


def make_work_folder(output: Path) -> Path:
    """A new hidden folder beside ``output`` for the conversion's working files (removed by the
    caller when done, whatever happens; if this process is killed, by the next conversion to
    that output)."""
    parent = output.parent if str(output.parent) else Path(".")
    try:
        return owned_tempdir(f".{output.name}.work.", parent)
    except OSError as exc:
        raise OutputError(f"{output}: cannot write in {parent} ({exc.strerror})") from exc


def save_model_atomic(model: onnx.ModelProto, output: str | os.PathLike, *, external: bool,
                      check: bool = True, runtime: bool = True,
                      source: onnx.ModelProto | str | os.PathLike | None = None) -> list[Path]:
    """Write to a temporary folder beside ``output``, check it there, then rename into place.

    With ``external`` the weights go to ``<name>.data`` next to the model. Nothing appears at the
    output path unless the full checker and ONNX Runtime accept the written file.
    """
    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        tmpdir = owned_tempdir(f".{out.name}.", parent)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {parent} ({exc.strerror})") from exc
    written: list[Path] = []
    try:
        tmp_model = tmpdir / out.name
        data_name = f"{out.name}.data"
        try:
            if external:
                write_with_external_data(model, tmp_model, data_name)
            else:
                onnx.save_model(inlined(model), str(tmp_model))
        except OSError as exc:
            raise OutputError(f"{out}: write failed ({exc.strerror})") from exc
        if check:
            check_output(str(tmp_model), runtime=runtime, source=source)
        files = [f for f in tmpdir.iterdir() if f.name != OWNER_FILE]
        for f in sorted(files, key=lambda f: f.name == out.name):  # model file last
            target = parent / f.name
            os.replace(f, target)
            written.append(target)
    finally:
        for f in tmpdir.iterdir():
            f.unlink()
        tmpdir.rmdir()
    return written


def write_with_external_data(model: onnx.ModelProto, path: Path, data_name: str) -> None:
    """Write ``model`` to ``path`` with its main-graph initializers in ``data_name`` beside it,
    one tensor at a time (weight-store stubs are copied from the store in chunks): the model is
    never serialised with its weights, so writing costs no copy of them.

    Tensors under 1 KB stay inline, unless that would leave no external data at all (a small
    model saved with external data must come back with external data)."""
    threshold = 1024 if any(tensor_bytes(t) >= 1024 for t in model.graph.initializer) else 0
    light = onnx.ModelProto()
    copy_fields(model, light, skip="graph")
    copy_fields(model.graph, light.graph, skip="initializer")
    offset = 0
    with open(path.parent / data_name, "wb") as data:
        for t in model.graph.initializer:
            if tensor_bytes(t) < threshold or t.data_type == onnx.TensorProto.STRING:
                light.graph.initializer.append(t)
                continue
            if is_stub(t):
                chunks = stub_bytes(t)
            elif t.HasField("raw_data"):
                chunks = [t.raw_data]
            else:
                chunks = [onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t)).raw_data]
            length = 0
            for chunk in chunks:
                data.write(chunk)
                length += len(chunk)
            out = light.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims,
                                              data_location=onnx.TensorProto.EXTERNAL)
            if t.doc_string:
                out.doc_string = t.doc_string
            for key, value in (("location", data_name), ("offset", str(offset)),
                               ("length", str(length))):
                out.external_data.add(key=key, value=value)
            offset += length
    with open(path, "wb") as fh:
        fh.write(light.SerializeToString())


def inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy with its weight-store stubs' values inline (for a single-file output,
    under 2 GB by then)."""
    if not any(is_stub(t) for t in model.graph.initializer):
        return model
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="initializer")
    out.graph.initializer.extend(inline_copy(t) if is_stub(t) else t for t in model.graph.initializer)
    return out
