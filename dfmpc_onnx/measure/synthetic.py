"""Seeded synthetic inputs built from a model's input signature alone (issue 9, part 1).

The fidelity probe (``fidelity.py``) needs inputs to run the float and the quantized model on, and
the converter has no data. These generators make a small, deterministic batch in the range the
user says the model expects (``mean``/``std`` or ``value_range``):

- ``gaussian``: i.i.d. normal noise, the default assumption of a normalised input.
- ``uniform``: i.i.d. uniform noise with the same mean and standard deviation (or the range).
- ``smooth``: low-pass noise, for image-like inputs. White noise is shaped to a 1/f amplitude
  spectrum along the spatial axes (the average spectrum of natural images), then each sample and
  channel is renormalised to the requested mean/std. Inputs with no spatial axis of length >= 8
  get plain Gaussian noise (there is nothing to smooth).
- ``leaves``: dead-leaves images (Lee, Mumford and Huang 2001): opaque discs of random grey
  levels (one level per channel), radii drawn with density proportional to r^-3 between 1/32
  of the shorter side (at least a pixel) and half the longer, dropped until the image is covered
  (at most ``_LEAVES_MAX``; one more leaf shows through what they leave); the nearest disc hides
  those behind.
  Flat regions with sharp edges at every scale, the statistics of natural images that smooth
  noise lacks (edges). Renormalised like ``smooth``; inputs without two spatial axes get smooth.
- ``strokes``: rows of glyph-like ink segments on flat paper (``_strokes``), what text models
  read: a text detector's probability map stays empty on smooth noise and marks these. With a
  value range, paper and ink keep their levels in it (a page is mostly near one end); else
  renormalised like ``smooth``; inputs without two spatial axes get smooth.
- ``mixed``: ``n`` split among gaussian, uniform and smooth, in that order.

Integer inputs are drawn uniformly in the range the graph allows (``integer_ranges``): token ids
read by a Gather below its table's size, an integer the graph tests equal to a constant (a sample
rate an If branches on) that constant, uint8/int8 inputs (images cast to float inside the
graph) over their whole type, other integers and booleans 0/1 (masks); float16 inputs stay
float16. Which kind ranks layer sensitivity closest to real data is measured by
``benchmarks/sensitivity_truth.py``; no kind is assumed better.

Batch rule: the batch is axis 0 (axis 1 of an RNN state, ``batch_axis``). A symbolic batch
becomes ``n``. A fixed axis 0 of size ``b`` (exports with batch 1 baked in) gives ``ceil(n / b) *
b`` rows: ``n`` samples stacked, which the probe runs ``b`` rows at a time; where inputs' fixed
sizes differ, each stacks as many runs as the one needing most (``_same_runs``). A scalar input
is one value for every sample. Every other symbolic dimension must be given in ``shapes``
(``--input-shape`` on the command line); ``shapes`` gives the shape of one model run. The
converter fills in the ones the user leaves out by the rules of ``input_spec.resolve_shapes``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dfmpc_onnx.errors import OptionsError

KINDS = ("gaussian", "uniform", "smooth", "leaves", "strokes", "mixed")
_MIXED_PARTS = ("gaussian", "uniform", "smooth")
_SMOOTH_MIN = 8  # spatial axes shorter than this are left white


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller feeds (old exports also list initializers as inputs: those are not)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def fixed_batch(vi: onnx.ValueInfoProto) -> int | None:
    """The declared size of axis 0 when it is a fixed number, else None (symbolic or unknown)."""
    t = vi.type.tensor_type
    if not t.HasField("shape") or len(t.shape.dim) == 0:
        return None
    d = t.shape.dim[0]
    return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None


def batch_axis(vi: onnx.ValueInfoProto) -> int:
    """The axis that carries the batch: 1 for ONNX's RNN state layout ``[layers x directions,
    batch, hidden]`` (a rank-3 float input whose only free axis is the middle one, between a fixed
    first axis of 2 or more and a fixed last one: silero-vad's ``state`` 2x?x128), else 0.
    Samples stack, and runs split, along it."""
    t = vi.type.tensor_type
    d = declared_dims(vi)
    if (d is not None and len(d) == 3 and t.elem_type in _FLOAT_TYPES and isinstance(d[0], int)
            and d[0] >= 2 and not isinstance(d[1], int) and isinstance(d[2], int)):
        return 1
    return 0


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE)


def resolve_shape(vi: onnx.ValueInfoProto, n: int,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[int, ...]:
    """Shape of the array to generate for input ``vi``: ``n`` samples along axis 0."""
    if shapes and vi.name in shapes:
        given = tuple(None if d is None else int(d) for d in shapes[vi.name])
        if not given and declared_dims(vi) == []:
            return ()  # a scalar input (a sample rate, a threshold): one value for every sample
        if not given or any(d is not None and d <= 0 for d in given):
            raise OptionsError(f"--input-shape {vi.name}: every dimension must be a positive integer, "
                               f"N or ?, got {given}")
        declared = declared_dims(vi)
        if declared is not None and len(declared) != len(given):
            raise OptionsError(f"--input-shape {vi.name}: the model declares rank {len(declared)}, "
                               f"got {len(given)} dimensions")
        run: list[int] = []
        if (ax := batch_axis(vi)) and given[ax] is not None:  # an RNN state: n along its batch
            return tuple(math.ceil(n / d) * d if a == ax else _own(vi, given, declared, a)
                         if d is None else d for a, d in enumerate(given))
        for axis, d in enumerate(given):
            own = declared[axis] if declared is not None else None
            if d is not None:
                run.append(d)
            elif axis == 0 and not isinstance(own, int):
                return (n,) + tuple(_own(vi, given, declared, a) for a in range(1, len(given)))
            else:
                run.append(_own(vi, given, declared, axis))
        return _stack(tuple(run), n)
    declared = declared_dims(vi)
    if declared is None:
        raise OptionsError(f"input '{vi.name}' has no declared shape; give it with --input-shape "
                           f"{vi.name}=D0,D1,... (shapes={{'{vi.name}': (...)}} in the API)")
    dims = list(declared)
    ax = batch_axis(vi)
    for axis, d in enumerate(dims):
        if d is None or isinstance(d, str):
            if axis == ax:
                dims[0] = n
                continue
            label = f"'{d}'" if isinstance(d, str) else "(unnamed)"
            raise OptionsError(
                f"input '{vi.name}' has dynamic dimension {label} at axis {axis}; give its full shape "
                f"with --input-shape {vi.name}=" + ",".join("N" if i == 0 else str(x) if isinstance(
                    x, int) else "?" for i, x in enumerate(declared))
                + " with each ? a number (N: the batch)"
                + f" (shapes={{'{vi.name}': (...)}} in the API)")
    if isinstance(declared[0], int) and not ax:
        return _stack(tuple(dims), n)
    return tuple(dims)


Shape = tuple[int | None, ...]  # None: "N" or "?", the model's own dimension (axis 0: the batch)

_POLYGRAPHY = re.compile(r"^(?P<name>.+):\[(?P<dims>[^\]]*)\]$")
_FLAG = "--input-shape"


def parse_input_shapes(specs: Iterable[str] | str) -> dict[str, Shape]:
    """``--input-shape`` values (repeatable) as ``{name: dims}``; the one parser of convert,
    inspect and validate. Accepted: ``x=1,3,224,224``, ``x=1x3x224x224`` and Polygraphy's
    ``x:[1,3,224,224]``, several in one value as ``a=1x2,b=3``. A dimension ``N`` or ``?`` means
    the model's own: the batch on axis 0, a fixed size elsewhere (a symbolic one needs a number).
    The name is split at the last "=" so names with ":" or "/" work."""
    parts = [specs] if isinstance(specs, str) else list(specs)
    shapes: dict[str, Shape] = {}
    for part in parts:
        if not isinstance(part, str):
            raise OptionsError(f"{_FLAG} expects text like input=1,3,224,224, got {part!r}")
        for name, dims_text, spec in _entries(part):
            shape = _dims(dims_text)
            if not name or shape is None:
                raise OptionsError(
                    f"{_FLAG} '{spec}': expected NAME=D0,D1,... (or Polygraphy's NAME:[D0,D1,...]) "
                    "with positive integers, N or ? (the model's own), e.g. input=1,3,224,224")
            if name in shapes and shapes[name] != shape:
                raise OptionsError(f"{_FLAG} gives input '{name}' two shapes: "
                                   f"{format_shape(shapes[name])} and {format_shape(shape)}")
            shapes[name] = shape
    if not shapes:
        raise OptionsError(f"empty {_FLAG}: expected NAME=D0,D1,..., e.g. input=1,3,224,224")
    return shapes


def _entries(text: str) -> list[tuple[str, str, str]]:
    """(name, dims, the text they came from) of one option value, which may hold several."""
    text = text.strip()
    m = _POLYGRAPHY.match(text)
    if m and "=" not in text:
        return [(m["name"].strip(), m["dims"], text)]
    pieces: list[str] = []
    for piece in re.split(r"\s*,\s*", text):
        if pieces and "=" not in piece:
            pieces[-1] += "," + piece  # a dimension of the entry before
        else:
            pieces.append(piece)
    out = []
    for piece in pieces:
        name, sep, dims = piece.rpartition("=")
        out.append((name.strip() if sep else "", dims if sep else "", piece))
    return out


def _dims(text: str) -> Shape | None:
    parts = [d.strip() for d in re.split(r"[x,X]", text.strip().strip("[]"))]
    dims: list[int | None] = []
    for d in parts:
        if d in ("N", "n", "?"):
            dims.append(None)
        elif d.isdigit() and int(d) > 0:
            dims.append(int(d))
        else:
            return None
    return tuple(dims) or None


def format_shape(shape: Iterable[int | None]) -> str:
    return ",".join("?" if d is None else str(d) for d in shape)


def check_shape_names(model: onnx.ModelProto, shapes: Mapping[str, object] | None) -> None:
    """An --input-shape naming no input of the model, or one that cannot fit its input, is a
    mistake (OptionsError, exit 2), never silently ignored or worked around."""
    if not shapes:
        return
    names = [vi.name for vi in model_inputs(model)]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise OptionsError(f"{_FLAG} names unknown input(s) {', '.join(map(repr, unknown))}; "
                           f"the model's inputs are {', '.join(map(repr, names))}")
    for vi in model_inputs(model):  # a given shape that cannot fit is a mistake too (rank, ?)
        if vi.name in shapes and vi.type.HasField("tensor_type"):
            resolve_shape(vi, 1, shapes)  # type: ignore[arg-type]


def synthetic_inputs(model: onnx.ModelProto, n: int = 16, kind: str = "gaussian", seed: int = 0,
                     mean: float = 0.0, std: float = 1.0,
                     value_range: tuple[float, float] | None = None,
                     shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """One array per graph input, deterministic for ``seed``; see the module docstring."""
    if kind not in KINDS:
        raise OptionsError(f"unknown synthetic input kind '{kind}' (choose from {', '.join(KINDS)})")
    if n < 1:
        raise OptionsError(f"the number of synthetic samples must be at least 1, got {n}")
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise OptionsError(f"--input-range must be LOW,HIGH with LOW < HIGH, got {lo},{hi}")
        value_range = (lo, hi)
    elif not std > 0:
        raise OptionsError(f"--input-std must be positive, got {std}")
    check_shape_names(model, shapes)
    out: dict[str, np.ndarray] = {}
    ints = integer_ranges(model)
    for vi in model_inputs(model):
        if not vi.type.HasField("tensor_type"):
            raise OptionsError(f"input '{vi.name}' is not a tensor (sequence/map inputs are not "
                               "supported by synthetic inputs)")
    stacked = _same_runs(model, n, shapes)
    for index, vi in enumerate(model_inputs(model)):
        shape = stacked[vi.name]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        rng = np.random.default_rng([seed, index])
        if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
            lo, hi = ints.get(vi.name, (0, 2))
            out[vi.name] = rng.integers(lo, hi, size=shape).astype(dtype)
            continue
        if not np.issubdtype(dtype, np.floating):
            raise OptionsError(f"input '{vi.name}' has element type {dtype}, which synthetic inputs "
                               "cannot generate")
        out[vi.name] = _floats(rng, shape, kind, mean, std, value_range).astype(dtype)
    return out


def _same_runs(model: onnx.ModelProto, n: int,
               shapes: Mapping[str, tuple[int | None, ...]] | None) -> dict[str, tuple[int, ...]]:
    """Each input's shape for ``n`` samples, every input stacked by as many runs of its own batch
    (the most any input needs): the probe's runs then line up. A static streaming export
    (silero-vad's OpenVINO one: input 1x576, state 2x1x128, the state's axis 0 fixed at 2) would
    otherwise stack 16 runs of the input and 8 of the state."""
    inputs = {vi.name: vi for vi in model_inputs(model)}
    one = {name: resolve_shape(vi, 1, shapes) for name, vi in inputs.items()}
    out = {name: resolve_shape(vi, n, shapes) for name, vi in inputs.items()}
    stacks = {name: shape[0] // one[name][0] for name, shape in out.items()
              if shape and one[name][0] > 0 and not batch_axis(inputs[name])}
    runs = max(stacks.values(), default=1)
    for name, k in stacks.items():
        if k != runs:
            out[name] = (runs * one[name][0],) + tuple(out[name][1:])
    return out


_PASS_ON = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"}
_TYPE_RANGE = {np.dtype(np.uint8): (0, 256), np.dtype(np.int8): (-128, 128)}


def integer_ranges(model: onnx.ModelProto,
                   reasons: dict[str, str] | None = None) -> dict[str, tuple[int, int]]:
    """[low, high) of the draws for each integer input: below the row count of every Gather table
    it indexes (directly or through Cast/Reshape-like nodes), else the whole range of uint8/int8;
    others are left out (0/1). ``reasons`` receives each one's why."""
    reasons = {} if reasons is None else reasons
    inits = {t.name: t for t in model.graph.initializer}
    # Small constants an input is compared with: initializers, or Constant nodes of a model not
    # normalised yet (validate reads the file as it is).
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
              if int(np.prod(t.dims, dtype=np.int64)) == 1 and t.data_location != onnx.TensorProto.EXTERNAL}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"
                   and int(np.prod(n.attribute[0].t.dims, dtype=np.int64)) == 1})
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    out: dict[str, tuple[int, int]] = {}
    for vi in model_inputs(model):
        if not vi.type.HasField("tensor_type"):
            continue
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if not np.issubdtype(dtype, np.integer):
            continue
        tables: list[int] = []
        compared: list[int] = []  # scalar constants it is tested equal to (a sample rate, a mode)
        todo, seen = [vi.name], set()
        while todo:
            t = todo.pop()
            seen.add(t)
            for node in readers.get(t, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == t \
                        and node.input[0] in inits:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = inits[node.input[0]].dims
                    tables.append(int(dims[axis if axis >= 0 else axis + len(dims)]))
                elif node.op_type in _PASS_ON and node.input[0] == t:
                    todo += [o for o in node.output[:1] if o not in seen]
                elif node.op_type == "Equal" and len(node.input) == 2:
                    other = node.input[1] if node.input[0] == t else node.input[0]
                    value = consts.get(other)
                    if value is not None and value.size == 1 and float(value.reshape(-1)[0]).is_integer():
                        compared.append(int(value.reshape(-1)[0]))
        if tables and min(tables) > 0:
            out[vi.name] = (0, min(tables))
            reasons[vi.name] = f"below the size {min(tables)} of the Gather table it indexes"
        elif compared:
            # The graph branches on it (silero-vad: If(sr == 16000), the 16 kHz network, else
            # the 8 kHz one): drawn 0/1 it would measure only the branch no caller takes. The
            # first value tested is drawn; a branch the inputs never take stays float
            # (measure-layers).
            out[vi.name] = (compared[0], compared[0] + 1)
            reasons[vi.name] = f"{compared[0]}, the value the graph tests it equal to"
        elif np.dtype(dtype) in _TYPE_RANGE:
            out[vi.name] = _TYPE_RANGE[np.dtype(dtype)]
            reasons[vi.name] = f"the whole {np.dtype(dtype).name} range"
    return out


def _floats(rng: np.random.Generator, shape: tuple[int, ...], kind: str, mean: float, std: float,
            value_range: tuple[float, float] | None) -> np.ndarray:
    if kind == "mixed":
        rows = shape[0]
        counts = [rows // 3 + (1 if i < rows % 3 else 0) for i in range(3)]
        parts = [_floats(rng, (c,) + shape[1:], k, mean, std, value_range)
                 for k, c in zip(_MIXED_PARTS, counts, strict=True) if c]
        return np.concatenate(parts, axis=0)
    if value_range is not None:
        lo, hi = value_range
        if kind == "uniform":
            return rng.uniform(lo, hi, size=shape)
        if kind == "strokes" and len(spatial_axes(shape)) == 2:
            # Paper and ink at their levels in the range (a normalised page is mostly near hi).
            return lo + np.clip(_strokes(rng, shape, spatial_axes(shape)), 0.0, 1.0) * (hi - lo)
        # A normal whose +-3 sigma spans the range, clipped into it.
        mean, std = (lo + hi) / 2.0, (hi - lo) / 6.0
        return np.clip(_unit(rng, shape, kind) * std + mean, lo, hi)
    return _unit(rng, shape, kind) * std + mean


def _unit(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Zero-mean, unit-variance noise of ``kind`` (gaussian, uniform or smooth)."""
    if kind == "uniform":
        return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=shape)
    if kind == "leaves" and len(spatial_axes(shape)) == 2:
        return _leaves(rng, shape, spatial_axes(shape))
    if kind == "strokes" and len(spatial_axes(shape)) == 2:
        z = _strokes(rng, shape, spatial_axes(shape))
        axes = spatial_axes(shape)
        z -= z.mean(axis=axes, keepdims=True)
        sd = z.std(axis=axes, keepdims=True)
        return z / np.where(sd > 0, sd, 1.0)
    z = rng.standard_normal(shape)
    if kind in ("smooth", "leaves", "strokes"):
        axes = spatial_axes(shape)
        if axes:
            z = _pink(z, axes)
            z -= z.mean(axis=axes, keepdims=True)
            sd = z.std(axis=axes, keepdims=True)
            z /= np.where(sd > 0, sd, 1.0)
    return z


_LEAVES_MAX = 2000  # discs per image at most; what they leave uncovered is one more leaf


def _leaves(rng: np.random.Generator, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance dead-leaves images over the two spatial ``axes``."""
    ah, aw = axes
    h, w = shape[ah], shape[aw]
    other = [a for a in range(1, len(shape)) if a not in axes]  # the channel axis
    channels = int(np.prod([shape[a] for a in other])) if other else 1
    r_min, r_max = max(1.0, min(h, w) / 32.0), max(h, w) / 2.0
    out = np.empty((shape[0], channels, h, w))
    for i in range(shape[0]):
        img = np.broadcast_to(rng.random((channels, 1, 1)), (channels, h, w)).copy()
        covered = np.zeros((h, w), bool)
        left = h * w
        for _ in range(_LEAVES_MAX):
            # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max].
            u = rng.random()
            r = 1.0 / np.sqrt(1.0 / r_min ** 2 - u * (1.0 / r_min ** 2 - 1.0 / r_max ** 2))
            cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
            y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
            colour = rng.random((channels, 1))
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~covered[y0:y1, x0:x1]
            hit = int(disc.sum())
            if hit:
                img[:, y0:y1, x0:x1][:, disc] = colour
                covered[y0:y1, x0:x1] |= disc
                left -= hit
                if not left:
                    break
        out[i] = img
    z = out.reshape((shape[0],) + tuple(shape[a] for a in other) + (h, w))
    z = np.moveaxis(z, (-2, -1), (ah, aw)) if (ah, aw) != (len(shape) - 2, len(shape) - 1) else z
    z = z.reshape(shape)
    z -= z.mean(axis=axes, keepdims=True)
    sd = z.std(axis=axes, keepdims=True)
    return z / np.where(sd > 0, sd, 1.0)


def _strokes(rng: np.random.Generator, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Images in 0..1 of glyph-like strokes in rows over the two spatial ``axes``: flat paper,
    ink segments a tenth of a row thick, rows of glyphs about as wide as tall, some images light
    on dark. What text models read, with no font or data."""
    ah, aw = axes
    h, w = shape[ah], shape[aw]
    other = [a for a in range(1, len(shape)) if a not in axes]
    channels = int(np.prod([shape[a] for a in other])) if other else 1
    out = np.empty((shape[0], channels, h, w))
    for i in range(shape[0]):
        paper, ink = rng.uniform(0.7, 1.0), rng.uniform(0.0, 0.3)
        if rng.random() < 0.3:
            paper, ink = ink, paper
        jitter = rng.normal(0.0, 0.03, (channels, 1, 1))
        img = np.full((channels, h, w), paper) + jitter
        row_h = max(4.0, rng.uniform(0.25, 0.9) * min(h, max(8.0, w / 4)))
        top = rng.uniform(0, max(1.0, row_h / 4))
        while top + row_h * 0.6 <= h:
            x = rng.uniform(0, row_h)
            thick = max(1.0, row_h * rng.uniform(0.06, 0.14))
            while x + row_h * 0.4 <= w:
                gw = row_h * rng.uniform(0.4, 0.8)
                y0, y1 = top + 0.15 * row_h, top + 0.85 * row_h
                for _ in range(int(rng.integers(2, 5))):
                    p = np.array([rng.uniform(y0, y1), rng.uniform(x, x + gw)])
                    q = np.array([rng.uniform(y0, y1), rng.uniform(x, x + gw)])
                    by0, by1 = max(0, int(min(p[0], q[0]) - thick)), min(h, int(max(p[0], q[0]) + thick) + 1)
                    bx0, bx1 = max(0, int(min(p[1], q[1]) - thick)), min(w, int(max(p[1], q[1]) + thick) + 1)
                    if by0 >= by1 or bx0 >= bx1:
                        continue
                    yy, xx = np.mgrid[by0:by1, bx0:bx1]
                    d = q - p
                    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
                    near = (yy - p[0] - t * d[0]) ** 2 + (xx - p[1] - t * d[1]) ** 2 <= (thick / 2) ** 2
                    img[:, by0:by1, bx0:bx1][:, near] = ink + jitter[:, 0]
                x += gw + row_h * rng.uniform(0.05, 0.6)
            top += row_h * rng.uniform(1.1, 1.8)
        out[i] = img
    z = out.reshape((shape[0],) + tuple(shape[a] for a in other) + (h, w))
    z = np.moveaxis(z, (-2, -1), (ah, aw)) if (ah, aw) != (len(shape) - 2, len(shape) - 1) else z
    return z.reshape(shape)


def spatial_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes that ``smooth`` low-passes: those of length >= 8 after the batch and channel axes.

    NCHW (and NCL, NCDHW) is assumed: axis 1 is channels. A rank-4 input whose last axis is 1-4
    long is read as NHWC (an image with its colour channels last), so axes 1 and 2 are spatial.
    """
    if len(shape) < 3:
        return ()
    if len(shape) == 4 and shape[3] <= 4 and shape[1] >= _SMOOTH_MIN:
        candidates: tuple[int, ...] = (1, 2)
    else:
        candidates = tuple(range(2, len(shape)))
    return tuple(a for a in candidates if shape[a] >= _SMOOTH_MIN)


def _pink(z: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """White noise shaped to a 1/f amplitude spectrum over ``axes`` (the DC term is dropped)."""
    spec = np.fft.fftn(z, axes=axes)
    radius2 = np.zeros([z.shape[a] if a in axes else 1 for a in range(z.ndim)])
    for a in axes:
        f = np.fft.fftfreq(z.shape[a])
        view = [1] * z.ndim
        view[a] = -1
        radius2 = radius2 + f.reshape(view) ** 2
    radius = np.sqrt(radius2)
    gain = np.divide(1.0, radius, out=np.zeros_like(radius), where=radius > 0)
    return np.fft.ifftn(spec * gain, axes=axes).real


def _own(vi: onnx.ValueInfoProto, given: Shape, declared: list | None, axis: int) -> int:
    """Axis ``axis`` of a given shape: its number, or for N/? the model's fixed size there."""
    if given[axis] is not None:
        return int(given[axis])
    own = declared[axis] if declared is not None else None
    if isinstance(own, int):
        return own
    raise OptionsError(f"--input-shape {vi.name}={format_shape(given)}: axis {axis} is symbolic "
                       f"in the model ({own or 'unnamed'}); give it a number")


def declared_dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _stack(run: tuple[int, ...], n: int) -> tuple[int, ...]:
    """``n`` samples of a run whose batch is ``run[0]``: whole runs, rounded up."""
    b = run[0]
    return (math.ceil(n / b) * b,) + tuple(run[1:])
