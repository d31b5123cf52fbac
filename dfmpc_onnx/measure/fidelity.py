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

Divergence per output, float outputs ``a`` (reference) and candidate outputs ``b``, by the
output's kind (``output_kinds``: class scores, sequence scores, dense maps, regression): KL of
the softmax (or of the probabilities) per sample for class scores and per position for
sequences, relative MSE ``||a - b||^2 / ||a||^2`` for dense maps and regression heads, the
fraction of differing elements for integer outputs.

``score`` is the mean of the per-output divergences: for the usual single-output classifier it is
the KL itself. ``top1_agreement`` is the agreement averaged over the outputs that have one: top-1
per sample (class scores), per position outside the most frequent class (sequences), thresholded
masks (dense maps); None when no output has one. A trial whose candidates are equal
to the float weights is answered from the reference without running, so float weights give exactly
0; any other trial is compared with the reference from the plain float session. Forcing the float
weights through the trial sessions reproduces that reference (``benchmarks/fidelity_speed.py``
prints the score this gives, the sessions' own rounding, beside the smallest 8-bit score).
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from dfmpc_onnx.errors import UnsupportedModelError
from dfmpc_onnx.measure.output_kinds import (
    activation_hints,
    infer_kind,
    judge,
    kinds_of,
    kl_divergence,
    sums_to_one,
)
from dfmpc_onnx.measure.synthetic import batch_axis, fixed_batch, model_inputs
from dfmpc_onnx.model.graph import LARGE_TENSOR_BYTES, GraphIndex, _subgraph_outer_inputs, tensor_bytes
from dfmpc_onnx.model.heap import give_back
from dfmpc_onnx.model.modelio import owned_tempdir
from dfmpc_onnx.model.weightstore import WeightStore, is_stub, mapped, session_for
from dfmpc_onnx.quant.quantizers.base import slices_of

# The most samples one ORT run of a probe takes (a dynamic batch of more is cut into runs), and
# the most bytes of its largest activation a run may hold (fewer samples where one is large).
RUN_ROWS = 16
RUN_BYTES = 64 << 20
# Cached activations kept in memory; beyond, in files. Decoded float weights kept for reuse.
CACHE_BYTES = 64 << 20
WEIGHT_CACHE_BYTES = 64 << 20
# A segment with more weight-store bytes than this is never a constant session (``_Segment``):
# ONNX Runtime would hold its weights for the probe's life, and a layer that large (the VGG-19
# classifier's 411 MB) spends its time reading them, prepacked or not.
MAPPED_BYTES = 64 << 20
# Models with at most this many bytes of probed weights are measured for speed, not memory: a
# probe on other inputs (``on_inputs``) runs them as one segment with sessions of its own, and
# lazy candidates are made at once (``measure``).
WHOLE_MODEL_BYTES = 256 << 20


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
    kinds: dict[str, str] = field(default_factory=dict, compare=False)  # per output (output_kinds)


@dataclass
class _Segment:
    """A run of consecutive nodes, from one probed layer to the next, as its own ORT session."""

    nodes: list[onnx.NodeProto]
    live_in: list[str]  # activations it reads that earlier nodes (or the caller) produce
    outputs: list[str]  # what later segments read, and graph outputs made here
    weights: list[str]  # probed weights its nodes read
    dead: list[str]  # activations nothing after this segment reads
    # Its weights are large and in the weight store: it always runs its variant session, fed the
    # float weights mapped from the store's file for the run, and no session holds them.
    mapped: bool = False
    signature: list[onnx.ValueInfoProto] = field(default_factory=list)  # live_in, seen on a run
    constant: ort.InferenceSession | None = None  # every weight a constant: fast, prepacked
    variant: ort.InferenceSession | None = None  # ``weights`` are graph inputs


# A candidate may be given lazily: a function that makes it when its segment is reached (a whole
# plan's weights then never exist all at once; see ``FidelityProbe.measure``).
Replacement = np.ndarray | Callable[[], np.ndarray]


class FidelityProbe:
    """One float run on ``inputs``, then many trials on the weights named in ``weights``.

    ``model`` is not modified. ``weights`` name initializers (or Constant-node outputs) of the
    graph; they may be shared by several nodes and may be float16. ``threads`` is the number of
    intra-op threads of every ORT session; ``max_segments`` bounds the number of graph pieces
    (two sessions each), so a model with hundreds of layers does not get hundreds of sessions.
    ``store``: the conversion's weight store when the model holds its stubs; sessions then map
    the weights from its file, and large cached activations go to its folder.
    ``cache_segments`` False: only the inputs are cached and every trial runs the whole model (a
    probe for a few whole-plan trials). ``kinds``: output name -> kind (``output_kinds.KINDS``)
    for outputs whose kind is not to be inferred.

    Memory, on a model whose weights outgrow the machine (benchmarks/memory.py): float weights are
    read when asked for and only the last few kept (``WEIGHT_CACHE_BYTES``); cached activations
    beyond ``CACHE_BYTES`` are written to files and mapped back when a trial reads them; a run
    takes at most ``RUN_BYTES`` of its largest activation; and lazy candidates are made when their
    segment runs, written to a file when later runs need them again.
    """

    def __init__(self, model: onnx.ModelProto, weights: Sequence[str], inputs: Mapping[str, np.ndarray],
                 threads: int = 2, max_segments: int = 32, store: WeightStore | None = None,
                 cache_segments: bool = True, kinds: Mapping[str, str] | None = None) -> None:
        self.threads = threads
        self.weights = list(dict.fromkeys(weights))
        self._probed = set(self.weights)
        self._model = _with_weights_as_initializers(model, self.weights)
        graph = self._model.graph
        self._index = GraphIndex(graph)
        missing = [w for w in self.weights if w not in self._index.initializers]
        if missing:
            raise ValueError(f"not a weight of this graph: {', '.join(missing)}")
        self._store = store
        # Up to WHOLE_MODEL_BYTES of weights, memory is not what limits: lazy candidates are made
        # at once (one equal to its float weight is then no change) and a probe on other inputs
        # runs the whole model as one segment.
        inits = self._index.initializers
        self._small = sum(tensor_bytes(inits[w]) for w in self.weights) <= WHOLE_MODEL_BYTES
        self._files = _Files(store.folder if store is not None else None)
        self._recent: dict[str, int] = {}  # decoded weights the index keeps, oldest first
        self._outputs = [o.name for o in graph.output]
        self._declared = {vi.name: vi for vi in model_inputs(self._model)
                          if vi.type.tensor_type.HasField("shape")}
        self._segments = self._segment(max(1, max_segments))
        self._first = {w: min(i for i, seg in enumerate(self._segments) if w in seg.weights)
                       for w in self.weights if any(w in seg.weights for seg in self._segments)}
        self._base: dict[str, np.ndarray] = {}  # arrays every run takes (``based_on``)
        self._prepare(inputs, anywhere=cache_segments)
        # How each output is judged (output_kinds): named in ``kinds``, else inferred once from
        # the float outputs and the operator making them; probes on other inputs keep these.
        self.kinds = kinds_of(self._outputs, self._cache[0], activation_hints(self._model), kinds or {})

    def _prepare(self, inputs: Mapping[str, np.ndarray], anywhere: bool) -> None:
        """Run the float model on ``inputs`` through the segments, keeping what trials read:
        with ``anywhere``, every segment's inputs (a trial starts at the first changed layer),
        else only the graph's inputs (every trial runs from the start)."""
        self._anywhere = anywhere
        self._chunks = split_batches(self._model, inputs, self._rows(inputs))
        self._cache = self._float_run(anywhere)
        give_back()
        self._float_outputs = [{name: c[name] for name in self._outputs} for c in self._cache]
        self.reference: dict[str, np.ndarray] = {
            name: _concat([c[name] for c in self._cache]) for name in self._outputs}

    # -- public -------------------------------------------------------------------------------

    @property
    def small(self) -> bool:
        """Whether its probed weights are at most ``WHOLE_MODEL_BYTES``: memory is then not what
        limits (lazy candidates are made at once; a caller may keep candidates between trials)."""
        return self._small

    @property
    def caches_segments(self) -> bool:
        """Whether every segment's inputs are cached (a trial reruns from its first change)."""
        return self._anywhere

    @property
    def samples(self) -> int:
        """How many input samples (rows) the probe runs on."""
        return sum(len(next(iter(c.values()))) for c in self._chunks if c)

    def on_inputs(self, inputs: Mapping[str, np.ndarray]) -> FidelityProbe:
        """A probe of the same model and weights (shared, not copied) on other inputs: to check a
        choice on inputs it was not made on. Only the inputs are cached: its trials run the whole
        model. Up to ``WHOLE_MODEL_BYTES`` of probed weights, as one segment of its own (one run
        per batch, not one per segment: many times faster on small models); beyond, through this
        probe's segments and sessions, so that ONNX Runtime holds no second copy of the weights."""
        other = object.__new__(FidelityProbe)
        other.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k not in ("_chunks", "_cache", "reference", "_anywhere",
                                            "_float_outputs", "_base")})
        other._base = {}
        if self._small:
            other._segments = other._segment(1)
        other._prepare(inputs, anywhere=False)
        return other

    def based_on(self, base: Mapping[str, np.ndarray]) -> FidelityProbe:
        """A probe on the same inputs whose cache holds the runs of the model with ``base``
        swapped in (a whole plan's arrays): ``measure`` still means the float model with the
        replacements given (judged against the float outputs), but a plan that differs from
        ``base`` in a few layers reruns only from the first segment that differs, where this probe
        reruns from the plan's first layer. For the refinement of one plan (choose-plan), measured
        with one layer changed at a time: the same figures, bit for bit, in about half the runs.
        Only where the probed weights are small (``small``: the base's arrays and a second
        activation cache are held) and segments are cached."""
        if not (self._small and self._anywhere):
            raise ValueError("based_on: only for a probe of small weights that caches segments")
        other = object.__new__(FidelityProbe)
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_cache", "_base")})
        kept = {}
        for name, value in base.items():
            if name not in self._probed:
                raise ValueError(f"'{name}' is not one of the probed weights")
            value = self._checked(name, np.asarray(value() if callable(value) else value))
            if name in self._first and not _equal(value, self.weight_rows(name)):
                kept[name] = value  # as ``measure`` counts changes: equal to float is no change
        other._base = kept
        other._cache = other._float_run(anywhere=True)
        # Its cached activations that went to files go with it (the float cache's stay).
        weakref.finalize(other, _drop_all, self._files,
                         [h for run in other._cache for h in run.values() if isinstance(h, _Stored)])
        give_back()
        return other

    def weight(self, name: str) -> np.ndarray:
        """The float value of a probed weight (do not modify it)."""
        value = self._index.array(name)
        self._recent.pop(name, None)
        self._recent[name] = value.nbytes
        while len(self._recent) > 1 and sum(self._recent.values()) > WEIGHT_CACHE_BYTES:
            self._index.release(next(iter(self._recent)))
            del self._recent[next(iter(self._recent))]
        return value

    def weight_rows(self, name: str):
        """The float value of a probed weight to slice along its first axis: where it lives in
        the weight store, only the rows sliced are read (``weightstore.StoredArray``)."""
        return self._index.rows(name)

    def runs(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """The probe's input batches and the float model's outputs on each (do not modify)."""
        return self._chunks, self._float_outputs

    def measure(self, replacements: Mapping[str, Replacement]) -> Fidelity:
        """Fidelity of the float model with ``replacements`` (name -> candidate array, or a
        function making it) swapped in. An array equal to the float weight is no change; a lazy
        candidate of a model over ``WHOLE_MODEL_BYTES`` is made when its segment runs, and counts
        as changed."""
        changed: dict[str, Replacement | None] = {}
        for name, value in replacements.items():
            if name not in self._probed:
                raise ValueError(f"'{name}' is not one of the probed weights")
            if name not in self._first:
                continue
            if callable(value) and not self._small:
                changed[name] = value
                continue
            value = self._checked(name, np.asarray(value() if callable(value) else value))
            # Changed: against what the cache ran (``based_on``'s base, else the float weight).
            if not _equal(value, self._base[name] if name in self._base else self.weight_rows(name)):
                changed[name] = value
        for name in self._base:  # a base array not replaced here: the float weight again
            if name not in replacements:
                changed[name] = None  # (runs as the plain probe runs an unchanged weight)
        self._forget_large()  # the trial needs the candidates, not the float copies
        outputs = self._trial(changed) if changed else self._cache
        fid = compare(self._float_outputs, outputs, self._outputs, self.kinds)
        del outputs, changed
        give_back()
        return fid

    # -- trials -------------------------------------------------------------------------------

    def _checked(self, name: str, value: np.ndarray) -> np.ndarray:
        t = self._index.initializers[name]
        shape = tuple(t.dims)
        if value.shape != shape:
            raise ValueError(f"candidate for '{name}' has shape {value.shape}, the weight {shape}")
        return value.astype(helper.tensor_dtype_to_np_dtype(t.data_type), copy=False)

    def _forget_large(self) -> None:
        for name in [n for n, size in self._recent.items() if size > LARGE_TENSOR_BYTES]:
            self._index.release(name)
            del self._recent[name]

    def _trial(self, changed: dict[str, Replacement | None]) -> list[dict[str, np.ndarray]]:
        """Run the segments from the first that reads a changed weight to the end (None: a
        base array back to the float weight, ``based_on``)."""
        start = min(self._first[w] for w in changed) if self._anywhere else 0
        made: dict[str, object] = {}  # lazy candidates made so far: arrays or file handles
        results = []
        for run, cached in enumerate(self._cache):
            values = dict(cached)
            for seg in self._segments[start:]:
                feeds = {name: _loaded(values[name]) for name in seg.live_in}
                mine = {w: self._candidate(w, changed[w], made, last=run + 1 == len(self._cache))
                        if w in changed else self._base[w]
                        for w in seg.weights if (w in changed and changed[w] is not None)
                        or (w in self._base and w not in changed)}
                values.update(zip(seg.outputs, self._run(seg, feeds, mine), strict=True))
                del feeds, mine  # no candidate outlives its segment's run
                for name in seg.dead:
                    values.pop(name, None)
                if not self._small:  # the run's freed activations and candidate
                    give_back()  # (dfmpc_onnx.model.heap; on a small model only a cost)
            results.append({name: values[name] for name in self._outputs})
        for handle in made.values():
            self._files.drop(handle)
        return results

    def _candidate(self, name: str, value: Replacement, made: dict[str, object], last: bool) -> np.ndarray:
        """A changed weight's candidate for one run: a lazy one is made on its first run and,
        where later runs need it and it is large, written to a file and mapped back for them."""
        if not callable(value):
            return value
        if name in made:
            return _loaded(made[name])
        array = self._checked(name, np.asarray(value()))
        if not last:  # a single run uses it once: nothing to keep
            made[name] = self._files.keep(array, LARGE_TENSOR_BYTES)
        return array

    def _run(self, seg: _Segment, feeds: dict[str, np.ndarray], candidates: dict[str, np.ndarray]
             ) -> list[np.ndarray]:
        """One run of a segment: its constant session where no weight of it is replaced, else
        its variant, fed the candidates and the float values of its other weights."""
        if not candidates and not seg.mapped:
            if seg.constant is None:
                seg.constant = self._build(seg, variant=False)
            return seg.constant.run(seg.outputs, feeds)
        if seg.variant is None:
            seg.variant = self._build(seg, variant=True)
        for w in seg.weights:
            if w in candidates:
                feeds[w] = candidates[w]
            elif seg.mapped and is_stub(t := self._index.initializers[w]):
                feeds[w] = mapped(t)  # unmapped again when the run is done
            else:
                feeds[w] = self.weight(w)
        return seg.variant.run(seg.outputs, feeds)

    def _segment(self, max_segments: int) -> list[_Segment]:
        """Cut the graph before each node that reads a probed weight (at most ``max_segments``
        cuts, spread evenly): a trial then reruns only from the first changed layer on. The first
        segment starts at the first node, so the float run goes through the segments too."""
        nodes = list(self._model.graph.node)
        probed = set(self.weights)
        reads = [list(nd.input) + sorted(_subgraph_outer_inputs(nd)) for nd in nodes]
        cuts = [i for i, names in enumerate(reads) if probed.intersection(names)]
        if len(cuts) > max_segments:
            cuts = [cuts[round(k * len(cuts) / max_segments)] for k in range(max_segments)]
        cuts = [0] + [c for c in cuts if c > 0]
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
            dead = [name for name in live_in if name not in graph_outputs and last_use.get(name, -1) < hi]
            large = sum(tensor_bytes(inits[w]) for w in weights if is_stub(inits[w])) > MAPPED_BYTES
            segments.append(_Segment(nodes[lo:hi], live_in, outputs, weights, dead, mapped=large))
        return segments

    def _build(self, seg: _Segment, variant: bool) -> ort.InferenceSession:
        as_inputs = sorted(seg.weights) if variant else []
        inputs = list(seg.signature)
        for w in as_inputs:
            t = self._index.initializers[w]
            inputs.append(helper.make_tensor_value_info(w, t.data_type, list(t.dims)))
        used = {name for nd in seg.nodes for name in list(nd.input) + list(_subgraph_outer_inputs(nd))}
        inits = [t for t in self._model.graph.initializer if t.name in used and t.name not in as_inputs]
        outputs = [onnx.ValueInfoProto(name=name) for name in seg.outputs]
        graph = helper.make_graph(seg.nodes, f"{self._model.graph.name}_segment", inputs, outputs, inits)
        return self._session(_derived(self._model, graph))

    def _float_run(self, anywhere: bool) -> list[dict[str, np.ndarray]]:
        """Run the float model (``based_on``: with its base swapped in) through the segments
        (their constant sessions, built on the way), returning per run its outputs and what
        later trials read: every segment's inputs with ``anywhere``, else the graph inputs.
        Large values go to files once the cache is big."""
        keep = set(self._outputs)
        keep.update(name for seg in self._segments[:1] for name in seg.live_in)
        if anywhere:
            keep.update(name for seg in self._segments for name in seg.live_in)
        cached_bytes = 0
        runs = []
        for feeds in self._chunks:
            values: dict[str, np.ndarray] = dict(feeds)
            kept: dict[str, object] = dict(feeds)  # graph inputs that segments read
            for seg in self._segments:
                if not seg.signature:
                    seg.signature = [self._declared.get(name) or _value_info(name, values[name])
                                     for name in seg.live_in]
                out = self._run(seg, {name: values[name] for name in seg.live_in},
                                {w: self._base[w] for w in seg.weights if w in self._base})
                for name, value in zip(seg.outputs, out, strict=True):
                    if not isinstance(value, np.ndarray):
                        raise UnsupportedModelError(f"fidelity probe: tensor '{name}' is not a plain "
                                                    f"tensor ({type(value).__name__}); the probe "
                                                    "cannot cache it")
                    values[name] = value
                    if name in keep and name not in kept:
                        large = cached_bytes + value.nbytes > CACHE_BYTES and name not in self._outputs
                        kept[name] = self._files.keep(value, 0) if large else value
                        cached_bytes += 0 if large else value.nbytes
                for name in seg.dead:
                    values.pop(name, None)
                if not self._small:
                    give_back()  # the run's freed activations (dfmpc_onnx.model.heap)
            runs.append(kept)
        return runs

    def _rows(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Samples per run: ``RUN_ROWS``, fewer where one sample's largest activation (from the
        inferred shapes) makes a run hold more than ``RUN_BYTES`` of it."""
        largest = max((_per_sample_bytes(vi) for vi in self._model.graph.value_info), default=0)
        largest = max([largest] + [v[0].nbytes for v in inputs.values() if np.ndim(v) > 0 and len(v)])
        return max(1, min(RUN_ROWS, RUN_BYTES // max(largest, 1)))

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
        return session_for(model, so, self._store)


class _Files:
    """Arrays kept in files of a folder (the weight store's, else a temporary one made when first
    needed and removed with the probe), mapped back read-only when asked for."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._made = False
        self._count = 0

    def keep(self, value: np.ndarray, threshold: int):
        """``value`` itself if it is at most ``threshold`` bytes, else a handle to a file of it."""
        if value.nbytes <= threshold:
            return value
        if self._folder is None:
            self._folder = owned_tempdir("dfmpc-probe-")
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._count += 1
        path = self._folder / f"probe-{os.getpid()}-{id(self)}-{self._count}.npy"
        np.save(path, value, allow_pickle=False)
        return _Stored(path)

    def drop(self, handle) -> None:
        if isinstance(handle, _Stored):
            handle.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Stored:
    path: Path


def _drop_all(files: _Files, handles: list) -> None:
    for handle in handles:
        files.drop(handle)


def _loaded(value) -> np.ndarray:
    """A cached value, mapped from its file if it was written to one (unmapped when dropped)."""
    return np.load(value.path, mmap_mode="r") if isinstance(value, _Stored) else value


def _equal(value: np.ndarray, ref) -> bool:
    """``np.array_equal`` a block of rows at a time (``ref`` may be read from the weight store)."""
    if value.ndim == 0:
        return bool(np.array_equal(value, np.asarray(ref)))
    return all(np.array_equal(value[p], ref[p]) for p in slices_of(value.shape, 0))


def _per_sample_bytes(vi: onnx.ValueInfoProto) -> int:
    t = vi.type.tensor_type
    dims = [d.dim_value for d in t.shape.dim[1:]] if t.HasField("shape") else []
    if not dims or not all(d > 0 for d in dims) or not t.elem_type:
        return 0
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 4
    return int(np.prod(dims, dtype=np.int64)) * itemsize


# -- divergence ----------------------------------------------------------------------------------


def compare(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
            outputs: Iterable[str], kinds: Mapping[str, str] | None = None) -> Fidelity:
    """Divergence of ``candidate`` from ``reference``, both given as runs (batches) of outputs,
    each output judged by its kind (``dfmpc_onnx.measure.output_kinds``): ``kinds`` names some or all,
    the rest are inferred from their shape."""
    outputs = list(outputs)
    first = {name: squeeze_trailing(np.asarray(reference[0][name])) for name in outputs} if reference else {}
    kinds = kinds_of(outputs, first, {}, kinds or {}) if reference else {}
    divergence: dict[str, float] = {}
    metric: dict[str, str] = {}
    agreement: list[float] = []
    agrees: np.ndarray | None = None
    single: list[bool] = []
    centered: list[float] = []
    for name in outputs:
        a = [squeeze_trailing(np.asarray(r[name])) for r in reference]
        b = [squeeze_trailing(np.asarray(c[name])) for c in candidate]
        j = judge(kinds[name], a, b)
        divergence[name], metric[name] = j.divergence, j.metric
        if j.agreement is not None:
            agreement.append(j.agreement)
            single.append(j.single)
            if j.centered_error is not None:
                centered.append(j.centered_error)
            if j.agrees is not None:
                agrees = j.agrees if agrees is None else (
                    agrees & j.agrees if agrees.shape == j.agrees.shape else agrees)
    values = list(divergence.values())
    score = float(np.mean(values)) if values else 0.0
    return Fidelity(divergence, metric, score, float(np.mean(agreement)) if agreement else None,
                    agrees, bool(single) and all(single), max(centered) if centered else None,
                    kinds)


def squeeze_trailing(a: np.ndarray) -> np.ndarray:
    """``a`` without trailing axes of length 1 after the second: class scores of shape
    [N, 1000, 1, 1] (a convolutional head) are judged as [N, 1000] are, by one rule."""
    if a.ndim > 2 and all(d == 1 for d in a.shape[2:]):
        return a.reshape(a.shape[:2])
    return a


def output_metric(a: np.ndarray) -> str:
    """Which divergence an output with float value ``a`` gets by shape alone: kl, kl-prob,
    rel_mse or mismatch (``output_kinds.judge``)."""
    kind = infer_kind(a)
    if kind in ("class", "sequence"):
        classes = a.shape[-1]
        rows = a.reshape(-1, classes) if kind == "sequence" else a
        return "kl-prob" if sums_to_one(rows, 1) else "kl"
    return "mismatch" if kind == "mismatch" else "rel_mse"


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
    """An activation's type for a segment's signature: its shape in the first run, the batch
    (axis 0) symbolic. Graph inputs keep the model's own declaration instead (an RNN state's
    batch is axis 1: fixing the others there broke silero-vad's shape inference)."""
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
    # Samples lie along each input's batch axis (an RNN state's is 1); a scalar input (a sample
    # rate) is one value for every sample, and each run gets it whole.
    axes = {name: batch_axis(vi) for name, vi in declared.items()}

    def split(runs: int) -> list[dict[str, np.ndarray]]:
        return [{name: np.array_split(value, runs, axis=axes[name])[i] if value.ndim else value
                 for name, value in feeds.items()} for i in range(runs)]

    runs = 1
    for name, vi in declared.items():
        b = fixed_batch(vi) if not axes[name] else None
        rows = feeds[name].shape[0] if feeds[name].ndim else 0
        if b and rows > b and rows % b == 0:
            runs = max(runs, rows // b)
    rows = {value.shape[axes[name]] for name, value in feeds.items() if value.ndim}
    if runs == 1 and max_rows and len(rows) == 1 and (n := rows.pop()) > max_rows:
        return split(-(-n // max_rows))  # a dynamic batch: runs of nearly equal size
    if runs == 1:
        return [feeds]
    for name, value in feeds.items():
        if value.ndim and value.shape[axes[name]] % runs:
            raise ValueError(f"input '{name}' has {value.shape[axes[name]]} rows, not a multiple "
                             f"of {runs} runs of the model's fixed batch")
    return split(runs)


def _concat(values: list[np.ndarray]) -> np.ndarray:
    if len(values) == 1:
        return values[0]
    return np.concatenate(values, axis=0)


__all__ = ["Fidelity", "FidelityProbe", "compare", "kl_divergence", "output_metric"]
