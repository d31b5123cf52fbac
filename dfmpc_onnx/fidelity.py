"""Whole-network fidelity of candidate weights, measured with ONNX Runtime (issue 9, part 2).

Every fixed rule the converter used loses on some model; what decides is what the whole network
computes. A ``FidelityProbe`` runs the float model once on a fixed set of inputs (synthetic, see
``synthetic.py``, or real), then answers many trials "replace these weights by these candidate
arrays (dequantized quantized weights): how far do the outputs move?".

How a trial runs (chosen by measurement, ``benchmarks/fidelity_speed.py``): the graph is cut into
segments, one starting at each node that reads a probed weight, and each segment is its own ORT
session. The float run caches every activation a segment reads from before it. A trial reruns only
the segments from the first one that reads a replaced weight, fed with the cached activations;
a segment that reads a replaced weight runs in a variant session where its probed weights are graph
inputs, every other segment in a session where all weights are constants. The alternatives:
one session with every weight a graph input is simpler but ONNX Runtime then cannot prepack or fuse
any weight (``fidelity_speed.py --mode inputs`` times it: about twice the CPU time on ResNet-18);
one suffix session per layer keeps the prepacking but rebuilds and re-prepacks every later weight
for every layer, which grows with the square of the depth. Segments are built on first use, at
most two sessions each, and the same path serves a trial that replaces many weights at once (a
joint plan).

Divergence per output, float outputs ``a`` (reference) and candidate outputs ``b``:

- classifier-like outputs (rank 2, ``(batch, classes)`` with classes > 1, float): the mean over
  samples of KL(softmax(a) || softmax(b)), in nats. When ``a`` already holds probabilities (rows
  non-negative, summing to 1), KL(a || b) of the rows themselves (``b`` clipped at 1e-12).
- other float outputs: relative MSE ``||a - b||^2 / ||a||^2`` over the whole output.
- integer or boolean outputs: the fraction of elements that differ.

``score`` is the mean of the per-output divergences: for the usual single-output classifier it is
the KL itself. ``top1_agreement`` is the fraction of samples whose argmax matches the float model's,
averaged over classifier-like outputs (None when there is none). A trial whose candidates are equal
to the float weights is answered from the reference without running, so float weights give exactly
0; any other trial is compared with the reference from the plain float session. Forcing the float
weights through the trial sessions reproduces that reference (``benchmarks/fidelity_speed.py``
prints the score this gives, the sessions' own rounding, beside the smallest 8-bit score).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from .errors import UnsupportedModelError
from .graph import GraphIndex, _subgraph_outer_inputs
from .synthetic import fixed_batch, model_inputs

# The most samples one ORT run of a probe takes (a dynamic batch of more is cut into runs).
RUN_ROWS = 16


@dataclass(frozen=True)
class Fidelity:
    """The outcome of one trial; see the module docstring for the definitions."""

    divergence: dict[str, float]  # per graph output
    metric: dict[str, str]  # per graph output: "kl", "kl-prob", "rel_mse" or "mismatch"
    score: float  # mean of ``divergence`` over outputs
    top1_agreement: float | None  # over classifier-like outputs; None when there is none
    # Per sample: whether every classifier-like output picks the float model's class.
    agrees: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Whether the float model gives every sample the same class (on every classifier-like
    # output): agreement then cannot tell candidates apart.
    single_class: bool = False
    # Over classifier-like outputs, the largest relative error of the outputs' input-dependent
    # part: ||(b - mean b) - (a - mean a)||^2 / ||a - mean a||^2, means over samples.
    centered_error: float | None = None


@dataclass
class _Segment:
    """A run of consecutive nodes, from one probed layer to the next, as its own ORT session."""

    nodes: list[onnx.NodeProto]
    live_in: list[str]  # activations it reads that earlier nodes (or the caller) produce
    outputs: list[str]  # what later segments read, and graph outputs made here
    weights: list[str]  # probed weights its nodes read
    constant: ort.InferenceSession | None = None  # every weight a constant: fast, prepacked
    variant: ort.InferenceSession | None = None  # ``weights`` are graph inputs


class FidelityProbe:
    """One float run on ``inputs``, then many trials on the weights named in ``weights``.

    ``model`` is not modified. ``weights`` name initializers (or Constant-node outputs) of the
    graph; they may be shared by several nodes and may be float16. ``threads`` is the number of
    intra-op threads of every ORT session; ``max_segments`` bounds the number of graph pieces
    (two sessions each), so a model with hundreds of layers does not get hundreds of sessions.
    """

    def __init__(self, model: onnx.ModelProto, weights: Sequence[str], inputs: Mapping[str, np.ndarray],
                 threads: int = 2, max_segments: int = 32) -> None:
        self.threads = threads
        self.weights = list(dict.fromkeys(weights))
        self._model = _with_weights_as_initializers(model, self.weights)
        graph = self._model.graph
        self._index = GraphIndex(graph)
        missing = [w for w in self.weights if w not in self._index.initializers]
        if missing:
            raise ValueError(f"not a weight of this graph: {', '.join(missing)}")
        self._float = {w: self._index.array(w) for w in self.weights}
        self._outputs = [o.name for o in graph.output]
        self._prepare(inputs, max_segments)

    def _prepare(self, inputs: Mapping[str, np.ndarray], max_segments: int) -> None:
        """Cut the graph, run the float model on ``inputs`` and cache what the segments read."""
        self._chunks = split_batches(self._model, inputs, RUN_ROWS)
        self._segments = self._segment(max(1, max_segments))
        self._first = {w: min(i for i, seg in enumerate(self._segments) if w in seg.weights)
                       for w in self.weights if any(w in seg.weights for seg in self._segments)}
        needed = {name for seg in self._segments for name in seg.live_in}
        self._cache = self._float_run(sorted(needed))
        self.reference: dict[str, np.ndarray] = {
            name: _concat([c[name] for c in self._cache]) for name in self._outputs}

    # -- public -------------------------------------------------------------------------------

    @property
    def samples(self) -> int:
        """How many input samples (rows) the probe runs on."""
        return sum(len(next(iter(c.values()))) for c in self._chunks if c)

    def on_inputs(self, inputs: Mapping[str, np.ndarray], max_segments: int = 1) -> FidelityProbe:
        """A probe of the same model and weights (shared, not copied) on other inputs: to check a
        choice on inputs it was not made on. One segment by default: a few whole-model trials,
        nothing cached but the model inputs."""
        other = object.__new__(FidelityProbe)
        other.threads, other.weights = self.threads, self.weights
        other._model, other._index, other._float = self._model, self._index, self._float
        other._outputs = self._outputs
        other._prepare(inputs, max_segments)
        return other

    def weight(self, name: str) -> np.ndarray:
        """The float value of a probed weight (do not modify it)."""
        return self._float[name]

    def runs(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """The probe's input batches and the float model's outputs on each (do not modify)."""
        return self._chunks, [{name: c[name] for name in self._outputs} for c in self._cache]

    def measure(self, replacements: Mapping[str, np.ndarray]) -> Fidelity:
        """Fidelity of the float model with ``replacements`` (name -> candidate array) swapped in."""
        changed: dict[str, np.ndarray] = {}
        for name, value in replacements.items():
            if name not in self._float:
                raise ValueError(f"'{name}' is not one of the probed weights")
            ref = self._float[name]
            value = np.asarray(value)
            if value.shape != ref.shape:
                raise ValueError(f"candidate for '{name}' has shape {value.shape}, the weight {ref.shape}")
            value = value.astype(ref.dtype, copy=False)
            if name in self._first and not np.array_equal(value, ref):
                changed[name] = value
        outputs = self._trial(changed) if changed else self._cache
        return compare(self._cache, outputs, self._outputs)

    # -- trials -------------------------------------------------------------------------------

    def _trial(self, changed: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Run the segments from the first that reads a changed weight to the end."""
        start = min(self._first[w] for w in changed)
        results = []
        for cached in self._cache:
            values = dict(cached)
            for seg in self._segments[start:]:
                feeds = {name: values[name] for name in seg.live_in}
                mine = [w for w in seg.weights if w in changed]
                if mine:
                    if seg.variant is None:
                        seg.variant = self._build(seg, variant=True)
                    session = seg.variant
                    feeds.update({w: changed.get(w, self._float[w]) for w in seg.weights})
                else:
                    if seg.constant is None:
                        seg.constant = self._build(seg, variant=False)
                    session = seg.constant
                values.update(zip(seg.outputs, session.run(seg.outputs, feeds), strict=True))
            results.append({name: values[name] for name in self._outputs})
        return results

    def _segment(self, max_segments: int) -> list[_Segment]:
        """Cut the graph before each node that reads a probed weight (at most ``max_segments``
        cuts, spread evenly): a trial then reruns only from the first changed layer on."""
        nodes = list(self._model.graph.node)
        probed = set(self.weights)
        reads = [list(nd.input) + sorted(_subgraph_outer_inputs(nd)) for nd in nodes]
        cuts = [i for i, names in enumerate(reads) if probed.intersection(names)]
        if not cuts:
            return []
        if len(cuts) > max_segments:
            cuts = [cuts[round(k * len(cuts) / max_segments)] for k in range(max_segments)]
        bounds = list(zip(cuts, cuts[1:] + [len(nodes)], strict=True))
        last_use: dict[str, int] = {}
        for i, names in enumerate(reads):
            for name in names:
                last_use[name] = i
        graph_outputs = set(self._outputs)
        inits = self._index.initializers
        segments = []
        for lo, hi in bounds:
            produced = {o for nd in nodes[lo:hi] for o in nd.output if o}
            live_in: list[str] = []
            for names in reads[lo:hi]:
                for name in names:
                    if name and name not in produced and name not in inits and name not in live_in:
                        live_in.append(name)
            outputs = [o for nd in nodes[lo:hi] for o in nd.output
                       if o and (o in graph_outputs or last_use.get(o, -1) >= hi)]
            weights = [w for w in self.weights if any(w in names for names in reads[lo:hi])]
            segments.append(_Segment(nodes[lo:hi], live_in, outputs, weights))
        return segments

    def _build(self, seg: _Segment, variant: bool) -> ort.InferenceSession:
        as_inputs = set(seg.weights) if variant else set()
        sample = self._cache[0]
        inputs = [_value_info(name, sample[name]) for name in seg.live_in]
        inputs += [helper.make_tensor_value_info(w, helper.np_dtype_to_tensor_dtype(self._float[w].dtype),
                                                 self._float[w].shape) for w in sorted(as_inputs)]
        used = {name for nd in seg.nodes for name in list(nd.input) + list(_subgraph_outer_inputs(nd))}
        inits = [t for t in self._model.graph.initializer if t.name in used and t.name not in as_inputs]
        outputs = [onnx.ValueInfoProto(name=name) for name in seg.outputs]
        graph = helper.make_graph(seg.nodes, f"{self._model.graph.name}_segment", inputs, outputs, inits)
        return self._session(_derived(self._model, graph))

    def _float_run(self, extra: list[str]) -> list[dict[str, np.ndarray]]:
        """Run the float model once, returning its outputs and the ``extra`` activations."""
        # The extra outputs are added to the model for the time it is serialised, not to a copy:
        # a copy of the graph holds every weight again.
        outputs = self._model.graph.output
        have = {o.name for o in outputs} | set(self._chunks[0])
        added = [name for name in extra if name not in have]
        outputs.extend(onnx.ValueInfoProto(name=name) for name in added)
        try:
            session = self._session(self._model)
        finally:
            del outputs[len(outputs) - len(added):]
        names = [o.name for o in session.get_outputs()]
        runs = []
        for feeds in self._chunks:
            values = dict(zip(names, session.run(names, feeds), strict=True))
            for name, value in values.items():
                if not isinstance(value, np.ndarray):
                    raise UnsupportedModelError(f"fidelity probe: tensor '{name}' is not a plain tensor "
                                                f"({type(value).__name__}); the probe cannot cache it")
            values.update(feeds)  # graph inputs that segments read
            runs.append(values)
        return runs

    def _session(self, model: onnx.ModelProto) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # Many small sessions live at once on a shared machine: idle threads must sleep, not spin.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Dozens of sessions live at once, each ORT arena keeping its peak activations (batch of
        # 16 at 224x224: hundreds of MB a session). Without arenas the VGG-19 probe held 3.6 GB
        # after three layers instead of 7.4 GB, at the same speed (benchmarks/memory.py).
        so.enable_cpu_mem_arena = False
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# -- divergence ----------------------------------------------------------------------------------


def compare(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
            outputs: Iterable[str]) -> Fidelity:
    """Divergence of ``candidate`` from ``reference``, both given as runs (batches) of outputs."""
    divergence: dict[str, float] = {}
    metric: dict[str, str] = {}
    top1: list[float] = []
    agrees: np.ndarray | None = None
    single: list[bool] = []
    centered: list[float] = []
    for name in outputs:
        a = [np.asarray(r[name]) for r in reference]
        b = [np.asarray(c[name]) for c in candidate]
        kind = output_metric(a[0])
        metric[name] = kind
        if kind in ("kl", "kl-prob"):
            a_all, b_all = np.concatenate(a, axis=0), np.concatenate(b, axis=0)
            divergence[name] = kl_divergence(a_all, b_all, probabilities=kind == "kl-prob")
            same = np.argmax(a_all, axis=1) == np.argmax(b_all, axis=1)
            top1.append(float(np.mean(same)))
            agrees = same if agrees is None else agrees & same
            single.append(len(np.unique(np.argmax(a_all, axis=1))) == 1)
            centered.append(_centered_error(a_all, b_all))
        elif kind == "rel_mse":
            err = sum(_sumsq(x.astype(np.float64) - y.astype(np.float64)) for x, y in zip(a, b, strict=True))
            norm = sum(_sumsq(x.astype(np.float64)) for x in a)
            if not np.isfinite(err):  # a candidate that overflows is as far as it gets
                err = float("inf")
            divergence[name] = float(err / norm) if norm > 0 else float(err)
        else:
            diff = sum(int(np.count_nonzero(x != y)) for x, y in zip(a, b, strict=True))
            divergence[name] = diff / max(1, sum(x.size for x in a))
    values = list(divergence.values())
    score = float(np.mean(values)) if values else 0.0
    return Fidelity(divergence, metric, score, float(np.mean(top1)) if top1 else None, agrees,
                    bool(single) and all(single), max(centered) if centered else None)


def _centered_error(a: np.ndarray, b: np.ndarray) -> float:
    """Relative squared error of the input-dependent part of ``b`` (rows: samples): each column's
    mean over the samples removed from both. Infinite when ``b`` is not finite, and when ``a``
    does not vary at all (a saturated softmax): nothing can then be judged."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):  # outputs of inf (a weight of inf): the error is inf
        a_c, b_c = a64 - a64.mean(axis=0), b64 - b64.mean(axis=0)
        err, norm = _sumsq(b_c - a_c), _sumsq(a_c)
    if not (np.isfinite(err) and np.isfinite(norm)):
        return float("inf")
    return float(err / norm) if norm > 0 else float("inf")


def output_metric(a: np.ndarray) -> str:
    """Which divergence an output gets (module docstring): kl, kl-prob, rel_mse or mismatch."""
    if not np.issubdtype(a.dtype, np.floating):
        return "mismatch"
    if a.ndim == 2 and a.shape[1] > 1:
        a64 = a.astype(np.float64)
        if np.all(a64 >= 0) and np.allclose(a64.sum(axis=1), 1.0, atol=1e-3):
            return "kl-prob"
        return "kl"
    return "rel_mse"


def kl_divergence(a: np.ndarray, b: np.ndarray, probabilities: bool = False) -> float:
    """Mean over rows of KL(P || Q): P, Q the softmax of the rows of ``a``, ``b`` (or the rows
    themselves when ``probabilities``). Infinite when ``b`` is not finite."""
    b64 = b.astype(np.float64)
    if not np.all(np.isfinite(b64)):
        return float("inf")
    if probabilities:
        p = a.astype(np.float64)
        p = p / p.sum(axis=1, keepdims=True)
        q = np.clip(b64, 1e-12, None)
        log_q = np.log(q / q.sum(axis=1, keepdims=True))
        log_p = np.log(np.where(p > 0, p, 1.0))
    else:
        log_p = _log_softmax(a.astype(np.float64))
        log_q = _log_softmax(b64)
        p = np.exp(log_p)
    kl = np.sum(p * (log_p - log_q), axis=1)
    return float(max(0.0, np.mean(kl)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _sumsq(x: np.ndarray) -> float:
    x = x.ravel()
    return float(np.dot(x, x))


# -- model plumbing -------------------------------------------------------------------------------


def _with_weights_as_initializers(model: onnx.ModelProto, weights: Sequence[str]) -> onnx.ModelProto:
    """``model`` where named weights held by Constant nodes become initializers: a copy if there
    are any, else ``model`` itself (the probe never modifies it; a copy of a large model's weights
    would cost their size again)."""
    wanted = set(weights)
    if not any(node.op_type == "Constant" and node.domain in ("", "ai.onnx")
               and node.output[0] in wanted for node in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for node in out.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0] in wanted:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(value.t)
                tensor.name = node.output[0]
                out.graph.initializer.append(tensor)
                continue
        keep.append(node)
    if len(keep) != len(out.graph.node):
        del out.graph.node[:]
        out.graph.node.extend(keep)
    return out


def _derived(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model with ``graph`` and the opsets, IR version and functions of ``model``."""
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.functions.extend(model.functions)
    return out


def _value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    dims: list[int | str] = list(value.shape)
    if dims:
        dims[0] = "batch"
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), dims)


def split_batches(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                  max_rows: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds per run: one run, or runs of the model's fixed batch when ``inputs`` stack several.
    With ``max_rows``, a dynamic batch of more rows is cut into runs of at most that many (when
    every input has the same rows): ORT's activations then scale with the run, not the inputs
    (64 held-out inputs of a 224x224 VGG in one run: gigabytes of convolution buffers)."""
    declared = {vi.name: vi for vi in model_inputs(model)}
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise ValueError(f"no value given for model input(s): {', '.join(missing)}")
    # Cast to the declared element type: float64 arrays from NumPy code would be refused by ORT.
    feeds = {name: np.asarray(inputs[name], dtype=helper.tensor_dtype_to_np_dtype(
        vi.type.tensor_type.elem_type)) for name, vi in declared.items()}
    runs = 1
    for name, vi in declared.items():
        b = fixed_batch(vi)
        rows = feeds[name].shape[0] if feeds[name].ndim else 0
        if b and rows > b and rows % b == 0:
            runs = max(runs, rows // b)
    rows = {value.shape[0] if value.ndim else -1 for value in feeds.values()}
    if runs == 1 and max_rows and len(rows) == 1 and (n := rows.pop()) > max_rows:
        runs = -(-n // max_rows)  # a dynamic batch: runs of nearly equal size
        return [{name: np.array_split(value, runs)[i] for name, value in feeds.items()}
                for i in range(runs)]
    if runs == 1:
        return [feeds]
    for name, value in feeds.items():
        if value.ndim == 0 or value.shape[0] % runs:
            raise ValueError(f"input '{name}' has {value.shape[0] if value.ndim else 0} rows, not a "
                             f"multiple of {runs} runs of the model's fixed batch")
    return [{name: np.array_split(value, runs)[i] for name, value in feeds.items()} for i in range(runs)]


def _concat(values: list[np.ndarray]) -> np.ndarray:
    if len(values) == 1:
        return values[0]
    return np.concatenate(values, axis=0)


__all__ = ["Fidelity", "FidelityProbe", "compare", "kl_divergence", "output_metric"]
