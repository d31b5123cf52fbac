"""Upgrading a model's ai.onnx opset to the one the output containers need, robustly.

The upgrade is our need (DequantizeLinear takes INT4 from opset 21, INT2 from 25), not the user's
problem: a model that is valid at its own opset and runs in ONNX Runtime must not be refused
because the upgrade trips on something the exporter wrote. What trips it in practice:

- exporter-written value_info for intermediate tensors that newer shape inference contradicts
  (Reshape-14 infers the output rank from the length of a non-constant shape, Reshape-5/13 do
  not: a stale rank passes the checker at opset 13 and fails it at 14). The entries are only
  hints, so they are dropped before converting and the shapes are inferred afresh; entries that
  inference cannot recreate (outputs of custom operators) are put back when the checker agrees;
- IR version 3 models whose initializers are not graph inputs (the converter reads them as
  undefined inputs): IR 4 reads the same graph, and allows that;
- graph outputs declared with a shape newer inference contradicts: as a last resort their
  declared shape becomes the inferred one, and the report says so.

The converter and the checker run on a light copy whose large initializers are stubs (both
serialise the model: 2 GB protobuf limit, and copies of every weight otherwise). What still
fails raises OpsetUpgradeError, naming the step that failed and the highest opset the model does
reach, so the caller can choose containers that need less (int8 containers at opset 13).
"""

from __future__ import annotations

import functools

import onnx
from onnx import shape_inference, version_converter

from dfmpc_onnx.errors import UnsupportedModelError, first_line
from dfmpc_onnx.model.proto import LARGE_TENSOR_BYTES, copy_fields, opset_version, tensor_bytes


class OpsetUpgradeError(UnsupportedModelError):
    """The model cannot be brought to the opset the chosen containers need. ``reachable`` is the
    highest opset at or below the target that the model does reach (None when not computed), so
    a caller can fall back to containers that need no more than that."""

    def __init__(self, message: str, *, current: int, target: int, reachable: int | None = None):
        super().__init__(message)
        self.current = current
        self.target = target
        self.reachable = reachable


def upgrade_opset(model: onnx.ModelProto, target: int) -> list[str]:
    """Upgrade ``model`` in place to ai.onnx opset ``target`` (no-op below the current opset,
    except that stale intermediate value_info is dropped all the same). Returns notes for the
    report. Raises OpsetUpgradeError, leaving ``model`` unchanged, when the version converter
    fails or its result fails the full checker while the input itself passes it."""
    light = light_copy(model)  # megabytes: the large weights are stubs
    notes = _upgrade_light(light, max(target, opset_version(model)))
    _adopt(model, light)  # the upgraded graph around the real weights
    return notes


def highest_reachable_opset(model: onnx.ModelProto, wanted: list[int]) -> int | None:
    """The highest opset in ``wanted`` that upgrade_opset reaches for ``model`` (at or below its
    current opset always counts), or None. ``model`` is not changed. For a fallback: call with
    the opsets of the containers in order of preference, e.g. [25, 21, 13]."""
    current = opset_version(model)
    for opset in sorted(wanted, reverse=True):
        if opset <= current:
            return opset
        try:
            _upgrade_light(light_copy(model), opset)
        except OpsetUpgradeError:
            continue
        return opset
    return None


def fit_runtime_opset(model: onnx.ModelProto, floor: int) -> list[str]:
    """If the installed ONNX Runtime has no DequantizeLinear at the model's opset (onnx may know
    newer opsets than the runtime: onnx 1.23 knows DequantizeLinear-28, ONNX Runtime 1.32 runs up
    to DequantizeLinear-25), bring the model down, in place, to the highest opset at or above
    ``floor`` (what the containers need) where it has one, so the output loads. Returns notes;
    raises OpsetUpgradeError when no such opset is reachable (the output could not load)."""
    current = opset_version(model)
    if runtime_has_dequantize(current):
        return []
    for opset in range(current - 1, floor - 1, -1):
        if not runtime_has_dequantize(opset):
            continue
        light = light_copy(model)
        try:
            notes = _upgrade_light(light, opset)
        except OpsetUpgradeError as exc:
            raise OpsetUpgradeError(
                f"ONNX Runtime {_ort_version()} has no DequantizeLinear for opset {current}, so the "
                f"output could not load; {exc}", current=current, target=opset) from exc
        _adopt(model, light)
        return notes + [f"ai.onnx opset {current} -> {opset}: ONNX Runtime {_ort_version()} has no "
                        f"DequantizeLinear for opset {current}"]
    raise OpsetUpgradeError(
        f"ONNX Runtime {_ort_version()} has no DequantizeLinear for opset {current} nor for any opset "
        f"from {floor} (what the chosen containers need) up, so the output could not load",
        current=current, target=floor)


@functools.cache
def runtime_has_dequantize(opset: int) -> bool:
    """Whether the installed ONNX Runtime (CPU) loads an int8 DequantizeLinear at ``opset``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], "probe", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("q", TensorProto.INT8, [1], [1]),
         helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ORT raises several pybind types
        return False
    return True


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def without_intermediate_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without value_info for intermediate tensors (the checks of modelio
    judge the input as the conversion sees it: with those hints dropped)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.ClearField("value_info")
    return copy


def _upgrade_light(model: onnx.ModelProto, target: int) -> list[str]:
    """upgrade_opset on a model whose large weights are stubs; raises OpsetUpgradeError."""
    current = opset_version(model)
    notes: list[str] = []
    dropped = list(model.graph.value_info)
    model.graph.ClearField("value_info")
    if model.ir_version < 4 and _initializers_not_inputs(model.graph):
        # IR 3 requires every initializer to be a graph input; the converter reads the others as
        # undefined. IR 4 allows them and reads the old inputs-with-defaults the same.
        model.ir_version = 4
        notes.append("IR version 3 with initializers that are not graph inputs: read as IR 4")
    given = onnx.ModelProto()
    given.CopyFrom(model)
    if target != current:
        model.CopyFrom(_convert(model, current, target))
        min_ir = onnx.helper.find_min_ir_version_for(list(model.opset_import), True)
        model.ir_version = max(model.ir_version, min_ir, 11 if target >= 25 else 0)
    problem = full_check_error(model)
    if problem:
        declared = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in model.graph.output]
        fitted = _fit_outputs_to_inference(model)
        if fitted and not full_check_error(model):
            notes.append(f"graph outputs {', '.join(fitted)} were declared with a shape that shape "
                         f"inference at opset {max(target, current)} contradicts; declared as "
                         "inferred instead")
            problem = None
        else:
            del model.graph.output[:]
            model.graph.output.extend(declared)
    if problem and target != current and not full_check_error(given):
        raise OpsetUpgradeError(
            f"cannot {'upgrade' if target > current else 'downgrade'} the model from ai.onnx opset "
            f"{current} to {target}: the result fails the full onnx.checker: {problem}",
            current=current, target=target)
    # Any other failure is the input's as given: the output check blames it (exit 3).
    notes.extend(_put_back_uninferred(model, dropped, max(target, current)))
    return notes


def _convert(model: onnx.ModelProto, current: int, target: int) -> onnx.ModelProto:
    """The version converter, in one go; if that fails, one opset at a time to name the step
    that fails and the highest opset reached (and to use the result if every step passes)."""
    try:
        return version_converter.convert_version(model, target)
    except Exception:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        pass
    step, way = model, 1 if target > current else -1
    for opset in range(current + way, target + way, way):
        try:
            step = version_converter.convert_version(step, opset)
        except Exception as exc:  # noqa: BLE001
            last = opset - way
            raise OpsetUpgradeError(
                f"cannot {'upgrade' if way > 0 else 'downgrade'} the model from ai.onnx opset "
                f"{current} to {target}: the onnx version converter fails from opset {last} to "
                f"{opset}: {first_line(exc)}" + (f" (it reaches opset {last})" if last != current else ""),
                current=current, target=target, reachable=last) from exc
    return step


def _fit_outputs_to_inference(model: onnx.ModelProto) -> list[str]:
    """Declare each graph output whose declared shape shape inference contradicts (rank, or a
    fixed size) with the inferred shape instead. Returns their names."""
    probe = checkable(model)
    for out in probe.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:  # noqa: BLE001
        return []
    fitted = []
    for out, new in zip(model.graph.output, inferred.graph.output, strict=True):
        if not (out.type.HasField("tensor_type") and new.type.tensor_type.HasField("shape")):
            continue
        if _shapes_conflict(out.type.tensor_type.shape, new.type.tensor_type.shape):
            out.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
            fitted.append(out.name)
    return fitted


def _shapes_conflict(a: onnx.TensorShapeProto, b: onnx.TensorShapeProto) -> bool:
    if len(a.dim) != len(b.dim):
        return True
    return any(x.HasField("dim_value") and y.HasField("dim_value") and x.dim_value != y.dim_value
               for x, y in zip(a.dim, b.dim, strict=True))


def _put_back_uninferred(model: onnx.ModelProto, dropped: list[onnx.ValueInfoProto],
                         opset: int) -> list[str]:
    """Put back the dropped value_info entries that shape inference cannot recreate (outputs of
    custom operators, or of ops it cannot see through), if the full checker still passes with
    them. Notes the dropped entries that inference contradicts."""
    if not dropped:
        return []
    try:
        inferred = shape_inference.infer_shapes(checkable(model), strict_mode=False)
    except Exception:  # noqa: BLE001 - the later passes run without shapes, and say so
        return []
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for n in model.graph.node for o in n.output}
    back = [vi for vi in dropped if vi.name not in known and vi.name in produced]
    stale = [vi.name for vi in dropped if vi.name in known and _type_conflicts(vi, known[vi.name])]
    if back:
        before = full_check_error(model)
        model.graph.value_info.extend(back)
        if not before and full_check_error(model):
            del model.graph.value_info[len(model.graph.value_info) - len(back):]
    if not stale:
        return []
    shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    return [f"value_info written by the exporter for {shown} contradicts shape inference at opset "
            f"{opset}; dropped, shapes inferred afresh"]


def _type_conflicts(a: onnx.ValueInfoProto, b: onnx.ValueInfoProto) -> bool:
    ta, tb = a.type.tensor_type, b.type.tensor_type
    if not (a.type.HasField("tensor_type") and b.type.HasField("tensor_type")):
        return False
    if ta.elem_type and tb.elem_type and ta.elem_type != tb.elem_type:
        return True
    return ta.HasField("shape") and tb.HasField("shape") and _shapes_conflict(ta.shape, tb.shape)


def _initializers_not_inputs(graph: onnx.GraphProto) -> bool:
    inputs = {i.name for i in graph.input}
    return any(t.name not in inputs for t in graph.initializer)


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy the checker accepts although large weights are stubs (no values): each stub becomes
    a graph input of the same type and shape, which is all that checking and shape inference need
    of a weight. Stubs are initializers with dims and no data field."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    stubs = [i for i, t in enumerate(graph.initializer) if _is_stub(t)]
    inputs = {i.name for i in graph.input}
    for i in reversed(stubs):
        t = graph.initializer[i]
        if t.name not in inputs:
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del graph.initializer[i]
    return copy


def _is_stub(t: onnx.TensorProto) -> bool:
    return (t.data_location != onnx.TensorProto.EXTERNAL and not t.raw_data and not any(
        len(getattr(t, f)) for f in ("float_data", "int32_data", "string_data", "int64_data",
                                     "double_data", "uint64_data")) and any(d > 0 for d in t.dims))


def full_check_error(model: onnx.ModelProto, stubs: bool = True) -> str | None:
    """None if the model passes the full checker, else the first line of why. ``stubs``: large
    weights may be stubs (checked on a ``checkable`` copy); False checks the model itself, for
    one whose weights are all there (no copy of a model of gigabytes)."""
    try:
        onnx.checker.check_model(checkable(model) if stubs else model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - checker and shape inference raise several types
        return first_line(exc)
    return None


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers over 1 MB are stubs (name, type, shape, no data).

    Checking and shape inference never need weight values; built field by field, the copy costs
    megabytes where ``CopyFrom`` would cost the weights again, and ``model`` is not touched (with
    upb protobuf, moving tensors out and back copies them into the model's arena, which never
    shrinks)."""
    copy = onnx.ModelProto()
    copy_fields(model, copy, skip="graph")
    copy_fields(model.graph, copy.graph, skip="initializer")
    for t in model.graph.initializer:
        if tensor_bytes(t) > LARGE_TENSOR_BYTES:
            copy.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        else:
            copy.graph.initializer.append(t)
    return copy


def serialized_bytes(model: onnx.ModelProto) -> int:
    """The model's serialised size to within the few bytes of each large tensor's header, without
    serialising it: upb's ``ByteSize`` encodes the whole message, a transient copy of every
    weight. Enough to decide whether the 2 GB protobuf limit calls for external data."""
    light = light_copy(model)
    return light.ByteSize() + sum(tensor_bytes(t) for t in light.graph.initializer if _is_stub(t))


def _adopt(model: onnx.ModelProto, light: onnx.ModelProto) -> None:
    """Make ``model`` the graph ``light`` holds (converted from ``light_copy(model)``), with its
    own large weights in place of the stubs: every field is taken from ``light`` but the large
    initializers, which stay where they are, so no weight is copied."""
    stubs = {t.name for t in light.graph.initializer if _is_stub(t)}
    for field in [f for f, _ in model.ListFields() if f.name != "graph"]:
        model.ClearField(field.name)
    copy_fields(light, model, skip="graph")
    for field in [f for f, _ in model.graph.ListFields() if f.name != "initializer"]:
        model.graph.ClearField(field.name)
    copy_fields(light.graph, model.graph, skip="initializer")
    inits = model.graph.initializer
    for i in reversed([i for i, t in enumerate(inits) if t.name not in stubs]):
        del inits[i]
    inits.extend(t for t in light.graph.initializer if t.name not in stubs)
