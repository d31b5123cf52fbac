"""``validate``: run a float model and its quantized version on the same inputs and compare.

The two models must be interchangeable (same input and output names, compatible input shapes);
a pair that is not is the user's mistake and is refused up front as OptionsError (exit 2) with
both models' shapes, instead of an ONNX Runtime shape error in the middle of the run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ModelLoadError, OptionsError
from .fusion import fused_or_none, runs_fused
from .inputs import (
    Shapes,
    declared_shape,
    drawn_ranges,
    feeds_for,
    graph_header,
    is_fixed,
    load_inputs,
    load_labels,
    random_inputs,
    read_npz,
    resolved_shapes,
    sample_count,
)
from .metrics import (
    OutputStats,
    ValidationResult,
    accuracy,
    measure_latency,
    model_size_bytes,
    output_stats,
    tolerance_violations,
)
from .sessions import has_activation_qdq, make_session, run_outputs


def _interface_problems(float_session: ort.InferenceSession,
                        quant_session: ort.InferenceSession) -> list[str]:
    """Names present in one model only, for inputs and outputs (order may differ)."""
    problems = []
    for kind, f_args, q_args in (
        ("inputs", float_session.get_inputs(), quant_session.get_inputs()),
        ("outputs", float_session.get_outputs(), quant_session.get_outputs()),
    ):
        f_names = {arg.name for arg in f_args}
        q_names = {arg.name for arg in q_args}
        if f_names != q_names:
            only_f = ", ".join(map(repr, sorted(f_names - q_names))) or "none"
            only_q = ", ".join(map(repr, sorted(q_names - f_names))) or "none"
            problems.append(
                f"{kind} only in the float model: {only_f}; only in the quantized model: {only_q}"
            )
    return problems


def _shape_problems(float_session: ort.InferenceSession,
                    quant_session: ort.InferenceSession) -> list[str]:
    """Inputs whose declared shapes cannot both hold: another rank, or a fixed dimension that
    differs. A symbolic dimension on either side is compatible with anything."""
    quant_args = {arg.name: arg for arg in quant_session.get_inputs()}
    problems = []
    for arg in float_session.get_inputs():
        other = quant_args.get(arg.name)
        if other is None:
            continue
        f_shape, q_shape = list(arg.shape), list(other.shape)
        if len(f_shape) != len(q_shape) or any(
            is_fixed(a) and is_fixed(b) and a != b for a, b in zip(f_shape, q_shape, strict=True)
        ):
            problems.append(
                f"input {arg.name!r} is {declared_shape(f_shape)} in the float model but "
                f"{declared_shape(q_shape)} in the quantized model"
            )
    return problems


def check_same_interface(
    float_session: ort.InferenceSession,
    quant_session: ort.InferenceSession,
    float_path: Path,
    quant_path: Path,
) -> None:
    """Refuse two models that cannot run on the same inputs (OptionsError naming both sides)."""
    problems = _interface_problems(float_session, quant_session)
    if problems:
        raise OptionsError(
            f"{float_path} and {quant_path} have different interfaces: {' | '.join(problems)}"
        )
    problems = _shape_problems(float_session, quant_session)
    if problems:
        raise OptionsError(
            f"{float_path} and {quant_path} take differently shaped inputs, so they are not a "
            f"float model and its quantized version: {' | '.join(problems)}"
        )


def fixed_rows(session: ort.InferenceSession) -> int | None:
    """The batch a model fixes on axis 0 of its inputs (an export with batch 1), else None."""
    dims = [arg.shape[0] for arg in session.get_inputs() if len(arg.shape) >= 1]
    if dims and all(is_fixed(d) and d > 0 and d == dims[0] for d in dims):
        return int(dims[0])
    return None


def first_run(feeds: dict, rows: int | None) -> dict:
    """The feeds of one model run: the first ``rows`` samples where the batch is fixed."""
    if rows is None:
        return feeds
    return {k: v[:rows] if v.ndim >= 1 else v for k, v in feeds.items()}


def run_in_runs(session: ort.InferenceSession, feeds: dict, path: Path,
                rows: int | None) -> dict:
    """Every output over all samples: in runs of ``rows`` samples where the model fixes its
    batch (outputs joined along axis 0), else in one run."""
    total = sample_count(feeds)
    if rows is None or total <= rows:
        return run_outputs(session, feeds, path)
    parts = [run_outputs(session, {k: v[i:i + rows] if v.ndim >= 1 else v
                                   for k, v in feeds.items()}, path)
             for i in range(0, total, rows)]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def validate(
    float_model: str | os.PathLike[str],
    quant_model: str | os.PathLike[str],
    *,
    inputs: str | os.PathLike[str] | None = None,
    provider: str = "cpu",
    batch: int = 8,
    seed: int = 0,
    repeats: int = 20,
    threads: int = 2,
    shapes: Shapes | None = None,
    disable_quant_qdq: bool | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_agreement: float | None = None,
    min_cosine: float | None = None,
) -> ValidationResult:
    """Run both models on the same inputs and measure output agreement, size and latency.

    inputs: an ``.npz`` whose keys are the input names; without it, seeded random data of
        ``batch`` rows (see ``random_inputs``), with ``shapes`` fixing other symbolic dims.
        An integer array ``label`` or ``labels`` with one entry per sample adds both models'
        accuracy for every (batch, classes) output.
    disable_quant_qdq: None (default) sets session.disable_quant_qdq=1 unless the quantized
        model quantizes activations (``has_activation_qdq``), whose Q/DQ ORT must see to fuse,
        or runs fused with ORT's defaults (``fusion.runs_fused``: MatMulNBits, nothing left).
    atol, rtol, min_agreement, min_cosine: gates (None: not checked); each one missed is a line
        in the result's ``failures`` (the CLI exits 8): every element within atol + rtol*|ref|
        (Polygraphy's rule), top-1 agreement and cosine of every output at least the minimum.
    Raises ModelLoadError for an unloadable model, OptionsError for bad options or inputs and for
    two models that cannot run on the same inputs, and DfmpcError when a run fails.
    """
    float_path = Path(os.fspath(float_model))
    quant_path = Path(os.fspath(quant_model))
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise OptionsError(f"--batch must be a positive integer, got {batch!r}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise OptionsError(f"--repeats must be a positive integer, got {repeats!r}")
    if inputs is not None and shapes:
        raise OptionsError("--input-shape applies to random inputs only; with --inputs the npz arrays "
                           "give the shapes")

    if disable_quant_qdq is None:
        disable_quant_qdq = not has_activation_qdq(quant_path) and not runs_fused(quant_path)
    sessions = []
    for role, path in (("float", float_path), ("quantized", quant_path)):
        try:
            sessions.append(make_session(path, provider, threads, disable_quant_qdq))
        except ModelLoadError as exc:
            raise ModelLoadError(f"{role} model: {exc}") from exc
    float_session, quant_session = sessions
    check_same_interface(float_session, quant_session, float_path, quant_path)

    labels = None
    if inputs is not None:
        arrays = read_npz(inputs)
        data = load_inputs(inputs, float_session, arrays)
        labels = load_labels(arrays, sample_count(data), data.keys())
        source = os.fspath(inputs)
    else:
        header = graph_header(float_path)
        shapes, shape_note = resolved_shapes(header, float_session, shapes, batch)
        data = random_inputs(float_session, batch, seed, shapes, drawn_ranges(header, float_session))
        source = f"random(seed={seed})"
    float_feeds = feeds_for(float_session, data)
    quant_feeds = feeds_for(quant_session, data)

    rows = fixed_rows(float_session)
    reference = run_in_runs(float_session, float_feeds, float_path, rows)
    quantized = run_in_runs(quant_session, quant_feeds, quant_path, rows)
    outputs = [output_stats(name, reference[name], quantized[name]) for name in reference]
    if labels is not None:
        for stats in outputs:
            stats.float_accuracy = accuracy(reference[stats.name], labels[1])
            stats.quant_accuracy = accuracy(quantized[stats.name], labels[1])

    if atol is not None or rtol is not None:
        for stats in outputs:
            stats.tolerance_violations = tolerance_violations(
                reference[stats.name], quantized[stats.name], atol or 0.0, rtol or 0.0)
    notes = uninformative_notes(outputs, reference)
    if inputs is None and shape_note:
        notes.insert(0, shape_note)
    failures = gate_failures(outputs, atol, rtol, min_agreement, min_cosine)

    float_ms, quant_ms = measure_latency(
        [float_session, quant_session],
        [first_run(float_feeds, rows), first_run(quant_feeds, rows)], repeats=repeats
    )
    return ValidationResult(
        outputs=outputs,
        float_size_bytes=model_size_bytes(float_path),
        quant_size_bytes=model_size_bytes(quant_path),
        float_latency_ms=float_ms,
        quant_latency_ms=quant_ms,
        latency_ratio=quant_ms / float_ms if float_ms > 0 else math.nan,
        provider=quant_session.get_providers()[0],
        samples=sample_count(data),
        input_source=source,
        repeats=repeats,
        threads=threads,
        disable_quant_qdq=disable_quant_qdq,
        labels=labels[0] if labels is not None and any(
            stats.float_accuracy is not None for stats in outputs) else None,
        notes=notes,
        failures=failures,
        fused=(fused_or_none(quant_path, disable_quant_qdq)
               if quant_session.get_providers()[0] == "CPUExecutionProvider" else None),
    )


# Below this share of an output's energy varying across samples, cosine and SQNR mostly compare
# the constant part (e.g. a model with random weights): the input-dependent figures are the
# ones to read.
INPUT_SHARE_MIN = 0.01


def uninformative_notes(outputs: list[OutputStats], reference: dict) -> list[str]:
    """When the figures say little: an output that hardly varies with the input, or a float
    model that gives every sample the same class (top-1 agree is then trivially high)."""
    notes = []
    for stats in outputs:
        if stats.input_share is not None and stats.input_share < INPUT_SHARE_MIN:
            part = ("it does not vary at all" if stats.centered_cosine is None else
                    f"its input-dependent part: cosine {stats.centered_cosine:.4f}, relative "
                    f"error {stats.centered_rel_error:.2e}")
            notes.append(f"output {stats.name!r} hardly depends on the input (only "
                         f"{stats.input_share:.2%} of it varies across the samples), so cosine, "
                         f"SQNR and top-1 say little; {part}")
        ref = reference[stats.name]
        if stats.top1_agreement is not None and ref.shape[0] > 1 and len(
                np.unique(np.argmax(ref, axis=-1))) == 1:
            notes.append(f"output {stats.name!r}: the float model gives every sample the same "
                         "class, so top-1 agree says little; use real inputs (--inputs)")
    return notes


def gate_failures(outputs: list[OutputStats], atol: float | None, rtol: float | None,
                  min_agreement: float | None, min_cosine: float | None) -> list[str]:
    failures = []
    for stats in outputs:
        if stats.tolerance_violations:
            failures.append(f"output {stats.name!r}: {stats.tolerance_violations} of "
                            f"{stats.elements} elements outside --atol {atol or 0:g} --rtol "
                            f"{rtol or 0:g}")
        if (min_agreement is not None and stats.top1_agreement is not None
                and stats.top1_agreement < min_agreement):
            failures.append(f"output {stats.name!r}: top-1 agreement {stats.top1_agreement:.2%} "
                            f"below --min-agreement {min_agreement:g}")
        if min_cosine is not None and not stats.cosine >= min_cosine:
            failures.append(f"output {stats.name!r}: cosine {stats.cosine:.6f} below "
                            f"--min-cosine {min_cosine:g}")
    if min_agreement is not None and not any(s.top1_agreement is not None for s in outputs):
        failures.append("--min-agreement: no output is (batch, classes), so top-1 agreement "
                        "cannot be checked")
    return failures
