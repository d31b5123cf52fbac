"""What the synthetic inputs look like when the model does not say: the shape of a run where the
signature has symbolic dimensions, and the value range where the graph shows it (issue 19).

Pretrained models ship with dynamic dimensions (an OCR line model ``x[N,3,48,W]``, a detector
``x[N,3,H,W]``, token ids ``[batch, seq]``); measuring needs one concrete shape. Each symbolic
dimension other than the batch (axis 0, which becomes the sample count) is set by these rules, in
this order, and the float model is run once at the result in ONNX Runtime to check it:

1. ``--input-shape`` (``shapes``): the user's shape for that input wins.
2. A dimension name already resolved (on this or another input, e.g. ``seq`` of ``input_ids`` and
   ``attention_mask``) keeps that size.
3. A channel axis (axis 1 of rank 3-5, the last axis of an NHWC image or of a rank 2-3 float
   input) read directly by a Conv or a MatMul/Gemm with a weight: the weight's input size;
   otherwise 3 on images (then 1, 4).
4. Rank 4 (images, NCHW; NHWC when the last axis is fixed at 1-4 and axis 1 is not):
   one spatial axis symbolic: 4 times the fixed one (a text line, a spectrogram's time axis: the
   axis left dynamic is the long one), at most 2048. Both symbolic: 224 each, except where one
   axis' total stride (rule 6) is at least 4 times the other's (a text-line model whose rows
   collapse to one, e.g. PaddleOCR's recogniser, strides 48 and 8): that axis = its total stride,
   the other 4 times it. Rank 5 (video, NCDHW): depth 16, height and width as rank 4.
5. Rank 2 float (``[batch, samples]``: audio): 16000 (a second at 16 kHz). Rank 2 integer (token
   ids ``[batch, seq]``) and rank 3 (``[batch, seq, features]``, ``[batch, channels, length]``):
   128. A rank-3 float input whose only free axis is the middle one, between a fixed first axis
   of 2 or more and a fixed last one: ONNX's RNN state layout ``[layers x directions, batch,
   hidden]`` (silero-vad's ``state`` 2x?x128), so 1, the batch of every run.
   Anything else: 128.
6. Every size from 3-5 is rounded up to a multiple of the input's total stride on that axis: the
   product of the strides of the Conv/pooling layers on the way from the input (the largest over
   the graph; a detector's FPN needs its 32).

If ONNX Runtime refuses the model at the shapes chosen, the next candidate of each rule is tried
(rank 4 both symbolic: 224, 256, 320, 384, 512, 128, 64, 32, or for a text line the stride and
twice it; one symbolic: 4x, 8x, 2x, 1x, 16x the fixed axis; sequences: 128, 64, 256, 512, 32,
16; audio: 16000, then 4096, 1024, 512, 256, 128, since a streaming model takes one chunk size
and may run, degenerate, on a shorter one: silero-vad's 16 kHz network runs on 256 samples with
a flat output and is built for 512), at most ``MAX_TRIES`` times, and the report says which
shape was measured and which were refused.

Value range (``infer_range``; the default when the user gives no ``--input-range`` and keeps the
default mean 0 / std 1): only what the graph says explicitly.

- A chain of Sub/Add/Mul/Div by constants at a float input (the model normalises inside): of the
  raw ranges 0..1, 0..255 and -1..1, the one the chain maps closest to a zero-centred unit range
  (score ``|centre| + |ln half-width|`` of the image), e.g. ``(x/255 - 0.485)/0.229`` -> 0..255,
  ``(x - 0.5)/0.5`` -> 0..1, ``(x - 127.5)/127.5`` -> 0..255.
- A Clip directly at the input: its bounds.
- Integer inputs (a Cast from uint8 inside the graph) are drawn by ``synthetic.integer_ranges``.

Where the graph says nothing, the first layer's response decides (``range_from_response``): a
trained network's first Conv/Gemm/MatMul answers real inputs at about unit scale per channel
(with BatchNormalization folded in, its output's spread on real data is the BN's gamma, of order
1; with BN kept after it, exactly the BN's running standard deviation). Fed synthetic inputs of
each candidate range (mean 0 / std 1, -1..1, 0..1, 0..255), the layer's median channel spread
is compared with that scale: mean 0 / std 1 stays unless it is more than ``_OFF_SCALE`` off and
another candidate is closer. Measured with ``python -m benchmarks.range_check``: on the eight
example models (normalised inputs) mean 0 / std 1 stays; on the pretrained suite it picks 0..255
for ddddocr's detector (fed raw pixels), 0..1 for NudeNet and ddddocr's recogniser, and keeps
mean 0 / std 1 for PaddleOCR's three models (inputs in -1..1, a third of the spread: within the
factor, so the default stays).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.synthetic import batch_axis, declared_dims, model_inputs

MAX_TRIES = 8
RNN_STATE = "a batch of 1 (an RNN state: [layers x directions, batch, hidden])"
_STRIDED = {"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"}
_RAW_RANGES = ((0.0, 1.0), (0.0, 255.0), (-1.0, 1.0))
_AFFINE = {"Sub", "Add", "Mul", "Div"}
_MAX_LONG = 2048


@dataclass
class InputSpec:
    """One run's shape per input (batch 1 where axis 0 is symbolic) and how each was chosen."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)  # input -> how its symbolic dims were set
    refused: list[str] = field(default_factory=list)  # shapes ONNX Runtime refused, tried first
    # input -> an axis other than 0 that carries the batch (an RNN state's): 1 here, as the
    # batch of a run is; a caller running more samples a run sets it to that number
    batch_axes: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, dict]:
        return {name: {"shape": list(shape), "rule": self.rules.get(name, "declared")}
                for name, shape in self.shapes.items()}


@dataclass
class _Dim:
    input: str
    axis: int
    label: str  # the symbolic name ("" when unnamed)
    candidates: list[int]
    why: str


def resolve_shapes(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]] | None = None,
                   check=None) -> InputSpec:
    """Shapes for every tensor input by the module docstring's rules.

    ``check(shapes) -> str | None`` runs the float model at ``shapes`` and returns ONNX Runtime's
    error (None: it ran); without it the first candidates are taken unchecked. Raises
    OptionsError naming the input when no rule gives a shape ONNX Runtime accepts."""
    given = dict(given or {})
    spec = InputSpec()
    fixed: dict[str, list[int | None]] = {}
    dims: list[_Dim] = []
    named: dict[str, _Dim] = {}
    strides = _total_strides(model)
    for vi in model_inputs(model):
        if not vi.type.HasField("tensor_type"):
            continue
        name = vi.name
        declared = declared_dims(vi)
        if name in given:
            user = tuple(given[name])
            if declared is not None and len(declared) != len(user):
                raise OptionsError(f"--input-shape {name}: the model declares rank {len(declared)}, "
                                   f"got {len(user)} dimensions")
            if all(d is not None for d in user):
                spec.shapes[name] = tuple(int(d) for d in user)
                spec.rules[name] = "--input-shape"
                continue
            # N or ? in the user's shape: the model's own size there, or the rules below
            declared = [int(u) if u is not None else (declared[i] if declared is not None else None)
                        for i, u in enumerate(user)]
        if declared is None:
            raise OptionsError(f"input '{name}' has no declared shape; give it with --input-shape "
                               f"{name}=D0,D1,... (shapes={{'{name}': (...)}} in the API)")
        run: list[int | None] = [d if isinstance(d, int) else None for d in declared]
        if declared and run[0] is None:
            run[0] = 1  # the batch: synthetic inputs stack the samples along it
        for axis, d in enumerate(declared):
            if axis == 0 or isinstance(d, int):
                continue
            label = d if isinstance(d, str) and d not in ("?", "") else ""
            if label and label in named:
                dims.append(_Dim(name, axis, label, [], f"'{label}' as on {named[label].input}"))
                continue
            cands, why = _candidates(model, vi, declared, axis, strides.get(name, {}))
            dim = _Dim(name, axis, label, cands, why)
            dims.append(dim)
            if label:
                named[label] = dim
        fixed[name] = run
    if not dims:
        spec.shapes.update({k: tuple(int(d) for d in v) for k, v in fixed.items()})
        return spec
    tries = max(len(d.candidates) for d in dims)
    for attempt in range(min(tries, MAX_TRIES)):
        shapes = dict(spec.shapes)
        for name, run in fixed.items():
            shapes[name] = tuple(run)  # type: ignore[arg-type]
        picked: dict[str, int] = {}
        for d in dims:
            value = (picked[d.label] if d.label in picked and not d.candidates
                     else d.candidates[min(attempt, len(d.candidates) - 1)])
            if d.label and d.candidates:
                picked[d.label] = value
            shape = list(shapes[d.input])
            shape[d.axis] = value
            shapes[d.input] = tuple(shape)
        error = check(shapes) if check is not None else None
        if error is None:
            spec.shapes = shapes
            for name in fixed:
                parts = [f"axis {d.axis}{' ' + repr(d.label) if d.label else ''} = "
                         f"{shapes[name][d.axis]} ({d.why})" for d in dims if d.input == name]
                spec.rules[name] = "; ".join(parts) if parts else "declared"
            spec.batch_axes = {vi.name: ax for vi in model_inputs(model)
                               if vi.name in fixed and (ax := batch_axis(vi))}
            return spec
        spec.refused.append(f"{_fmt(shapes)} ({error})")
    raise OptionsError(
        "the model's symbolic input dimensions could not be set: ONNX Runtime refused "
        + "; ".join(spec.refused[:2]) + ". Give the shape of one run with --input-shape "
        + " ".join(f"{n}=" + ",".join(str(x) if isinstance(x, int) else "?"
                                      for x in (declared_dims(vi) or [])) for n, vi in
                   ((v.name, v) for v in model_inputs(model)) if n in fixed))


def _fmt(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())


def _round_up(x: float, m: int) -> int:
    m = max(1, int(m))
    return int(math.ceil(x / m) * m)


def _candidates(model: onnx.ModelProto, vi: onnx.ValueInfoProto, declared: list,
                axis: int, strides: dict[int, int]) -> tuple[list[int], str]:
    """Sizes to try for one symbolic axis, best first, and the rule that gave them."""
    rank = len(declared)
    elem = vi.type.tensor_type.elem_type
    floating = np.issubdtype(helper.tensor_dtype_to_np_dtype(elem), np.floating)
    nhwc = (rank == 4 and isinstance(declared[3], int) and declared[3] <= 4
            and not (isinstance(declared[1], int) and declared[1] <= 4))
    channel_axis = 3 if nhwc else 1
    if rank >= 3 and axis == channel_axis or rank in (2, 3) and axis == rank - 1 and floating:
        size = _consumer_size(model, vi.name, axis, rank)
        if size is not None:
            return [size], "the input size of the layer that reads it"
        if rank >= 4 and axis == channel_axis:
            return [3, 1, 4], "image channels"
    stride = strides.get(axis - 1 if nhwc else axis, 1)
    spatial = (1, 2) if nhwc else (2, 3) if rank == 4 else (3, 4) if rank == 5 else ()
    if axis in spatial:
        other = spatial[1] if axis == spatial[0] else spatial[0]
        f = declared[other]
        if isinstance(f, int):
            sizes = [min(k * f, _MAX_LONG) for k in (4, 8, 2, 1, 16)]
            why = f"4 x the fixed axis {other} ({f})"
        else:
            s_this, s_other = stride, strides.get(other - 1 if nhwc else other, 1)
            if s_this >= 4 * s_other:  # a text-line model: this axis collapses to one row
                return [s_this, 2 * s_this], f"the axis' total stride {s_this}, {s_this // s_other}x " \
                    f"the other axis' (a text-line model: this axis collapses to one row)"
            if s_other >= 4 * s_this:
                sizes = [min(k * s_other, _MAX_LONG) for k in (4, 8, 2, 1, 16)]
                why = f"4 x the other axis ({s_other}, its total stride: a text line)"
            else:
                sizes = [224, 256, 320, 384, 512, 128, 64, 32]
                why = "224, the default image side"
        if stride > 1:
            why += f", rounded up to a multiple of the total stride {stride}"
        return _unique(_round_up(s, stride) for s in sizes), why
    if rank == 5 and axis == 2:
        return [16, 8, 32], "16 frames"
    if axis == 1 and batch_axis(vi) == 1:
        # ONNX's RNN state layout, [layers x directions, batch, hidden] (LSTM/GRU initial_h and
        # initial_c; silero-vad's streaming state is 2x?x128): the free axis is the batch, one
        # sample a run like every other input's (only 1, held while the other inputs' sizes are
        # tried). A fixed first axis of 1 stays a batch of one with a free sequence (below).
        return [1], RNN_STATE
    if rank == 2 and floating:
        return [16000, 4096, 1024, 512, 256, 128], "16000 samples (a second of 16 kHz audio)"
    sizes = [128, 64, 256, 512, 32, 16]
    why = "128, the default sequence length"
    if stride > 1:
        why += f", rounded up to a multiple of the total stride {stride}"
    return _unique(_round_up(s, stride) for s in sizes), why


def _unique(values) -> list[int]:
    out: list[int] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _consumer_size(model: onnx.ModelProto, name: str, axis: int, rank: int) -> int | None:
    """The input size a layer reading ``name`` directly declares in its weight, for ``axis``."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if not node.input or name not in node.input:
            continue
        if node.op_type == "Conv" and node.input[0] == name and axis == 1 and len(node.input) > 1 \
                and node.input[1] in inits:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            return int(inits[node.input[1]].dims[1]) * int(group)
        if node.op_type == "MatMul" and node.input[0] == name and axis == rank - 1 \
                and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            return int(inits[node.input[1]].dims[0])
        if node.op_type == "Gemm" and node.input[0] == name and axis == rank - 1 \
                and node.input[1] in inits:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return int(inits[node.input[1]].dims[1 if trans_b else 0])
    return None


def _total_strides(model: onnx.ModelProto) -> dict[str, dict[int, int]]:
    """Per graph input, per spatial axis (numbered as in the input, NCHW), the largest product of
    Conv/pooling strides on any path from it (Transpose, elementwise and other ops pass it on)."""
    out: dict[str, dict[int, int]] = {}
    for vi in model_inputs(model):
        acc: dict[str, tuple[int, ...]] = {vi.name: ()}
        best: tuple[int, ...] = ()
        for node in model.graph.node:
            ins = [acc[i] for i in node.input if i in acc]
            if not ins:
                continue
            s = tuple(max(v) for v in _zip_longest(ins))
            if node.op_type in _STRIDED:
                st = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
                if st:
                    s = tuple(a * b for a, b in _zip_longest([s + (1,) * (len(st) - len(s)),
                                                              tuple(st)]))
            for o in node.output:
                acc[o] = s
            if math.prod(s or (1,)) > math.prod(best or (1,)):
                best = s
        out[vi.name] = {2 + i: v for i, v in enumerate(best)}
    return out


def _zip_longest(seqs):
    n = max((len(s) for s in seqs), default=0)
    return [tuple(s[i] if i < len(s) else 1 for s in seqs) for i in range(n)]


def ort_check(model: onnx.ModelProto, store=None, session=None):
    """A ``check`` for ``resolve_shapes``: run the float model once at the shapes in ONNX
    Runtime (one session for every try, ``session`` where the caller has one, as validate does;
    its error's first line, or None)."""
    import onnxruntime as ort

    from dfmpc_onnx.model.weightstore import session_for

    from .synthetic import synthetic_inputs

    so = ort.SessionOptions()
    so.log_severity_level = 4  # a refused shape is expected here: its error is returned, not logged
    so.intra_op_num_threads = 2
    sessions = [session] if session is not None else []
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the caller's session logs at its own level: not these runs

    def check(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        try:
            if not sessions:
                sessions.append(session_for(model, so, store))
            feeds = synthetic_inputs(model, n=1, kind="gaussian", shapes=shapes)
            sessions[0].run(None, feeds, quiet)
        except Exception as exc:  # noqa: BLE001 - any refusal means: try the next shape
            text = " ".join(str(exc).split())
            return text[:160] + ("..." if len(text) > 160 else "")
        return None

    return check


@dataclass(frozen=True)
class InputRange:
    """A float input's range as the graph states it, and the nodes that state it."""

    value_range: tuple[float, float]
    reason: str


def infer_range(model: onnx.ModelProto) -> InputRange | None:
    """The raw range of the model's float input where the graph says it (module docstring);
    None where it does not, or the model has several float inputs."""
    floats = [vi for vi in model_inputs(model) if vi.type.HasField("tensor_type") and np.issubdtype(
        helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type), np.floating)]
    if len(floats) != 1:
        return None
    x = floats[0].name
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                 onnx.TensorProto.FLOAT16) and math.prod(t.dims) <= 64}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    a, b = np.ones(1), np.zeros(1)  # the chain so far: y = a * x + b
    chain: list[str] = []
    t = x
    while len(readers.get(t, [])) == 1:
        node = readers[t][0]
        if node.op_type == "Clip" and not chain:
            bounds = [float(consts[n].reshape(-1)[0]) if n in consts else None
                      for n in list(node.input[1:3]) + [""] * (3 - len(node.input))]
            lo, hi = bounds[0], bounds[1]
            if lo is not None and hi is not None and hi > lo:
                return InputRange((lo, hi), f"the Clip at the input ({node.name or node.op_type})")
            break
        if node.op_type not in _AFFINE or len(node.input) != 2:
            break
        first = node.input[0] == t
        other = node.input[1] if first else node.input[0]
        if other not in consts or other == t:
            break
        c = consts[other].reshape(-1)
        if node.op_type == "Add":
            b = b + c
        elif node.op_type == "Sub":
            a, b = (a, b - c) if first else (-a, c - b)
        elif node.op_type == "Mul":
            a, b = a * c, b * c
        else:
            if not first or np.any(c == 0):
                break
            a, b = a / c, b / c
        chain.append(node.name or node.op_type)
        t = node.output[0]
    if not chain or np.allclose(a, 1) and np.allclose(b, 0):
        return None

    def score(r: tuple[float, float]) -> float:
        lo, hi = a * r[0] + b, a * r[1] + b
        centre = float(np.mean((lo + hi) / 2))
        half = float(np.mean(np.abs(hi - lo) / 2))
        return abs(centre) + abs(math.log(max(half, 1e-12)))

    best = min(_RAW_RANGES, key=score)
    return InputRange(best, f"the normalisation at the input ({', '.join(chain)}) maps "
                            f"{best[0]:g}..{best[1]:g} closest to a zero-centred unit range")


# Candidate input ranges for ``range_from_response``, the default (None: mean 0, std 1) first.
RESPONSE_RANGES: tuple[tuple[float, float] | None, ...] = (None, (-1.0, 1.0), (0.0, 1.0),
                                                             (0.0, 255.0))
# The default is left only when the first layer's spread on it is more than this factor off the
# scale real inputs give: the candidates lie 3x (std 1 against -1..1) to 255x apart, so a smaller
# factor would move normalised models between near-equal ranges on noise in the estimate.
_OFF_SCALE = 3.0
_LAYER_OPS = ("Conv", "Gemm", "MatMul")


def first_layer_output(model: onnx.ModelProto,
                       name: str) -> tuple[str, np.ndarray | None, int] | None:
    """The output of the first Conv/Gemm/MatMul with a constant weight that reads input
    ``name`` (through any nodes), and the per-channel standard deviation real data gives it
    when a kept BatchNormalization reads it (None otherwise), and its channel axis (1 for a Conv,
    the last for Gemm/MatMul); None without such a layer."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = set(inits) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    reached = {name}
    for node in model.graph.node:
        if not any(i in reached for i in node.input):
            continue
        if node.op_type in _LAYER_OPS and len(node.input) > 1 and node.input[1] in consts:
            out = node.output[0]
            readers = [n for n in model.graph.node if out in n.input]
            if len(readers) == 1 and readers[0].op_type == "BatchNormalization" \
                    and readers[0].input[0] == out and all(
                        i in inits for i in readers[0].input[1:5]):
                bn = readers[0]
                eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
                var = numpy_helper.to_array(inits[bn.input[4]]).astype(np.float64)
                return out, np.sqrt(np.maximum(var, 0.0) + eps), 1
            return out, None, 1 if node.op_type == "Conv" else -1
        reached.update(o for o in node.output if o)
    return None


def range_from_response(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]],
                        store=None, samples: int = 4) -> InputRange | None:
    """The input range the first layer's response points to (module docstring), or None where
    the default (mean 0, std 1) stays, the model has not one float input, or nothing runs."""
    from dfmpc_onnx.model.weightstore import session_reading

    from .fidelity import split_batches
    from .synthetic import synthetic_inputs

    floats = [vi for vi in model_inputs(model) if vi.type.HasField("tensor_type") and np.issubdtype(
        helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type), np.floating)]
    if len(floats) != 1:
        return None
    found = first_layer_output(model, floats[0].name)
    if found is None:
        return None
    tensor, real_std, axis = found
    try:
        session = session_reading(model, [tensor], store, only=True)
        spread: list[float] = []
        for value_range in RESPONSE_RANGES:
            feeds = synthetic_inputs(model, n=samples, kind="smooth", value_range=value_range,
                                     shapes=shapes)
            z = np.concatenate([session.run(None, f)[0] for f in split_batches(model, feeds)])
            spread.append(channel_spread(z, real_std, axis))
    except Exception:  # noqa: BLE001 - a model this cannot run keeps the default
        return None
    off = [abs(math.log(max(s, 1e-30))) for s in spread]
    best = int(np.argmin(off))
    if off[0] <= math.log(_OFF_SCALE) or best == 0:
        return None
    lo, hi = RESPONSE_RANGES[best]  # type: ignore[misc]
    scale = "its BatchNormalization's running std" if real_std is not None else "unit scale"
    return InputRange((lo, hi), f"the first layer's response: on mean-0/std-1 inputs its channels "
                                f"spread {spread[0]:.3g}x {scale}, on {lo:g}..{hi:g} "
                                f"{spread[best]:.3g}x")


def strokes_inputs(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]],
                   value_range: tuple[float, float] | None, mean: float, std: float, seed: int,
                   samples: int = 8) -> dict[str, np.ndarray] | None:
    """Glyph-like strokes (``synthetic._strokes``) to ask whether the float model's outputs
    respond to them where smooth noise leaves nothing to judge plans by (measure-layers runs
    them through its probe); None without an image input (strokes would be the same noise).

    Plans are judged by how far they move what the model decides on the synthetic inputs; a
    text detector's probability map stays below its threshold on noise everywhere, so plans
    are judged by the relative error of a flat map (PaddleOCR's detector at --target-bits 4 kept
    86% of its boxes), while on strokes it marks them (100% with --synthetic strokes). Only
    there does ``--synthetic auto`` switch to them (measure-layers): on other suite models,
    which noise already lets judge, strokes planned no better or worse (PaddleOCR's direction
    classifier lost 9 points at 4 bits on them; BENCHMARKS.md, columns tb4_st and tb5_st)."""
    from .synthetic import spatial_axes, synthetic_inputs

    if not any(len(spatial_axes(tuple(s))) == 2 for s in shapes.values()):
        return None
    return synthetic_inputs(model, n=samples, kind="strokes", seed=seed, mean=mean, std=std,
                            value_range=value_range, shapes=shapes)


def channel_spread(z: np.ndarray, real_std: np.ndarray | None, axis: int = 1) -> float:
    """Median over channels (``axis``; the last for rank 2) of the standard deviation of ``z``,
    each relative to ``real_std`` where given."""
    axis = axis if z.ndim >= 3 else -1
    zc = np.moveaxis(z, axis, 0).reshape(z.shape[axis], -1)
    sd = zc.astype(np.float64).std(axis=1)
    if real_std is not None and len(real_std) == len(sd):
        sd = sd / np.where(real_std > 0, real_std, 1.0)
    return float(np.median(sd))
