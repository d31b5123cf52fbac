"""``validate``: run a float model and its quantized version on the same inputs and compare.

The two models must be interchangeable (same input and output names, compatible input shapes);
a pair that is not is the user's mistake and is refused up front as OptionsError (exit 2) with
both models' shapes, instead of an ONNX Runtime shape error in the middle of the run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnxruntime as ort

from ..errors import ModelLoadError, OptionsError
from ..fusion import fused_or_none, runs_fused
from .inputs import (
    Shapes,
    declared_shape,
    feeds_for,
    is_fixed,
    load_inputs,
    load_labels,
    random_inputs,
    read_npz,
    sample_count,
)
from .metrics import ValidationResult, accuracy, measure_latency, model_size_bytes, output_stats
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
) -> ValidationResult:
    """Run both models on the same inputs and measure output agreement, size and latency.

    inputs: an ``.npz`` whose keys are the input names; without it, seeded random data of
        ``batch`` rows (see ``random_inputs``), with ``shapes`` fixing other symbolic dims.
        An integer array ``label`` or ``labels`` with one entry per sample adds both models'
        accuracy for every (batch, classes) output.
    disable_quant_qdq: None (default) sets session.disable_quant_qdq=1 unless the quantized
        model quantizes activations (``has_activation_qdq``), whose Q/DQ ORT must see to fuse,
        or runs fused with ORT's defaults (``fusion.runs_fused``: MatMulNBits, nothing left).
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
        raise OptionsError("--shape applies to random inputs only; with --inputs the npz arrays "
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
        data = random_inputs(float_session, batch, seed, shapes)
        source = f"random(seed={seed})"
    float_feeds = feeds_for(float_session, data)
    quant_feeds = feeds_for(quant_session, data)

    reference = run_outputs(float_session, float_feeds, float_path)
    quantized = run_outputs(quant_session, quant_feeds, quant_path)
    outputs = [output_stats(name, reference[name], quantized[name]) for name in reference]
    if labels is not None:
        for stats in outputs:
            stats.float_accuracy = accuracy(reference[stats.name], labels[1])
            stats.quant_accuracy = accuracy(quantized[stats.name], labels[1])

    float_ms, quant_ms = measure_latency(
        [float_session, quant_session], [float_feeds, quant_feeds], repeats=repeats
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
        fused=(fused_or_none(quant_path, disable_quant_qdq)
               if quant_session.get_providers()[0] == "CPUExecutionProvider" else None),
    )
