"""What ``validate`` measures: output agreement, accuracy against labels, latency and file sizes.

The statistics are computed in float64 over the whole batch and compared in tests against
direct NumPy computations; the result dataclasses are what the table and ``--json`` print.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx.measure.fidelity import compare, squeeze_trailing

from ..errors import DfmpcError, OptionsError
from .inputs import fmt_dims

WARMUP_RUNS = 3
"""Untimed runs before timing: the first calls allocate arenas and pick kernels."""


@dataclass
class OutputStats:
    """Agreement of one model output between the float and the quantized model.

    cosine: cosine similarity of the flattened outputs (1 = same direction).
    sqnr_db: 10*log10(sum(ref^2) / sum((ref - quant)^2)); +inf when the outputs are identical.
    max_abs_error / mean_abs_error: of ref - quant, over every element of the batch.
    top1_agreement: fraction of rows whose argmax over the last axis agrees between the two
        models (agreement, not accuracy); None unless the output is 2-D (batch, classes) with
        more than one class, where "top-1" means something.
    float_accuracy / quant_accuracy: fraction of rows whose argmax equals the label, when the
        inputs carried labels and the output is (batch, classes); None otherwise.
    divergence / metric: the divergence the conversion report predicts on synthetic inputs, here
        on these inputs, by the same definition (dfmpc_onnx.measure.fidelity): KL of softmax ("kl") for
        (batch, classes) outputs, relative squared error ("rel_mse") otherwise.
    """

    name: str
    cosine: float
    sqnr_db: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    float_accuracy: float | None = None
    quant_accuracy: float | None = None
    divergence: float | None = None
    metric: str = ""
    # The input-dependent part: each model's output minus its own mean over the samples. Where
    # the output hardly depends on the input (random weights, a saturated head), cosine and
    # top-1 agree trivially; these say how well the part that carries information survived.
    centered_cosine: float | None = None
    centered_rel_error: float | None = None  # ||dq - dr||^2 / ||dr||^2 of the centered outputs
    input_share: float | None = None  # ||ref - mean||^2 / ||ref||^2: how much varies with input
    tolerance_violations: int | None = None  # elements outside --atol/--rtol (when given)
    elements: int = 0


@dataclass
class ValidationResult:
    """Everything ``validate`` measured; ``to_dict`` gives a JSON-able form for scripts.

    Sizes include external data files referenced by the model, because a model saved with
    external data is a small ``.onnx`` file plus the weights next to it.
    latency_ratio is quant / float (below 1 means the quantized model is faster).
    repeats, threads and disable_quant_qdq record how latency was measured, so pasted numbers
    can be reproduced. labels names the ``.npz`` array the accuracies were measured against
    (None without labels).
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
    labels: str | None = None
    # What the figures cannot tell (outputs that hardly depend on the input, one class for every
    # sample), and which of --atol/--rtol/--min-agreement/--min-cosine failed (exit code 8).
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fused: dict | None = None  # dfmpc_onnx.fusion.fused_nodes of the quantized model (CPU only)

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



def output_stats(name: str, reference: np.ndarray, quantized: np.ndarray) -> OutputStats:
    """Error statistics of one output, computed in float64 over the whole batch.

    float64 so that the statistics themselves add no error to what is being measured, even for
    float16 outputs.
    """
    ref = np.asarray(reference, dtype=np.float64)
    quant = np.asarray(quantized, dtype=np.float64)
    if ref.shape == quant.shape:  # [N, C, 1, 1] class scores: top-1 over C, as convert judges
        ref, quant = squeeze_trailing(ref), squeeze_trailing(quant)
    if ref.shape != quant.shape:
        raise DfmpcError(
            f"output {name!r} has shape {fmt_dims(ref.shape)} in the float model but "
            f"{fmt_dims(quant.shape)} in the quantized model"
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
    if is_classification(ref):
        top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(quant, axis=-1)))
    fid = compare([{name: np.asarray(reference)}], [{name: np.asarray(quantized)}], [name])
    centered = centered_stats(ref, quant)
    return OutputStats(
        name=name,
        cosine=cosine,
        sqnr_db=sqnr,
        max_abs_error=float(abs_err.max()),
        mean_abs_error=float(abs_err.mean()),
        top1_agreement=top1,
        divergence=fid.divergence[name],
        metric=fid.metric[name],
        centered_cosine=centered[0],
        centered_rel_error=centered[1],
        input_share=centered[2],
        elements=int(ref.size),
    )


def centered_stats(ref: np.ndarray, quant: np.ndarray) -> tuple[float | None, ...]:
    """(cosine, relative squared error, share of the output's energy) of the input-dependent
    part: each model's output minus its own mean over the samples (axis 0). None for one sample
    or an output that does not vary at all."""
    if ref.ndim == 0 or ref.shape[0] < 2:
        return None, None, None
    dr = (ref - ref.mean(axis=0)).ravel()
    dq = (quant - quant.mean(axis=0)).ravel()
    energy, total = float(np.dot(dr, dr)), float(np.dot(ref.ravel(), ref.ravel()))
    if energy == 0.0:
        return None, None, 0.0
    norm_q = float(np.linalg.norm(dq))
    cosine = float(np.dot(dr, dq) / (math.sqrt(energy) * norm_q)) if norm_q > 0 else 0.0
    diff = dq - dr
    return cosine, float(np.dot(diff, diff)) / energy, energy / total if total > 0 else 1.0


def tolerance_violations(ref: np.ndarray, quant: np.ndarray, atol: float, rtol: float) -> int:
    """Elements where |ref - quant| > atol + rtol * |ref| (Polygraphy's and NumPy's rule)."""
    ref = np.asarray(ref, dtype=np.float64)
    quant = np.asarray(quant, dtype=np.float64)
    return int(np.count_nonzero(np.abs(ref - quant) > atol + rtol * np.abs(ref)))


def is_classification(output: np.ndarray) -> bool:
    """(batch, classes) with more than one class: the only shape where top-1 means something."""
    return output.ndim == 2 and output.shape[1] > 1


def accuracy(output: np.ndarray, labels: np.ndarray) -> float | None:
    """Fraction of rows whose argmax is the label; None when the output is not (batch, classes)
    or has a different number of rows than there are labels."""
    output = squeeze_trailing(np.asarray(output))
    if not is_classification(output) or output.shape[0] != len(labels):
        return None
    return float(np.mean(np.argmax(output, axis=-1) == labels))


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

