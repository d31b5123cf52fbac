"""Facts read straight off ONNX protobuf messages, with no graph around them: a tensor's byte
size, a model's default-domain opset, copying a message's fields. The bottom of the model
package: graph, opset and weightstore all build on it and it imports none of them."""

from __future__ import annotations

import onnx
from google.protobuf.message import Message

# Tensors above this many bytes are "large": stubs in light copies (dfmpc_onnx.model.opset) and kept in
# the conversion's weight store rather than the protobuf (dfmpc_onnx.model.weightstore).
LARGE_TENSOR_BYTES = 1 << 20


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's values from its shape and type, without touching the data (cheap for
    large weights; packed 2/4-bit types round up)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        for e in t.external_data:
            if e.key == "length":
                return int(e.value)
    count = 1
    for d in t.dims:
        count *= d
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(t.data_type)
    if bits is None and hasattr(onnx.TensorProto, "INT2"):
        bits = {onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2}.get(t.data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(v) for v in t.string_data)
    return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def opset_version(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def copy_fields(src: Message, dst: Message, skip: str | tuple[str, ...]) -> None:
    """Copy every set field of ``src`` into ``dst`` but ``skip`` (field names)."""
    skip = (skip,) if isinstance(skip, str) else skip
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        target = getattr(dst, field.name)
        if hasattr(value, "extend") and not isinstance(value, (str, bytes)):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(dst, field.name, value)
