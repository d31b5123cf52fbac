"""Compare a float ONNX model with its quantized version: per-output error, size and latency.

This is the engine of ``dfmpc-onnx validate FLOAT QUANT``. Both models are run by ONNX Runtime on
the same inputs (an ``.npz`` file or seeded random data), and the differences are reduced to a few
numbers per output that are easy to read and to paste into an issue, in the spirit of
``polygraphy run model.onnx --onnxrt``. With labels in the ``.npz``, both models' accuracy too.

One module per concern: ``sessions`` (providers, loading, running), ``inputs`` (``--input-shape``,
random data, ``.npz`` files, labels), ``metrics`` (agreement, accuracy, latency, sizes),
``formatting`` (the table) and ``compare`` (``validate`` itself). Everything that can go wrong
because of the user's files or options is raised as a :class:`~dfmpc_onnx.errors.DfmpcError`
subclass with a one-line message naming the file or input, so the CLI never shows a traceback.
"""

from __future__ import annotations

from .compare import check_same_interface, validate
from .formatting import format_table
from .inputs import load_inputs, load_labels, parse_shape_option, random_inputs, read_npz
from .metrics import (
    WARMUP_RUNS,
    OutputStats,
    ValidationResult,
    accuracy,
    measure_latency,
    model_size_bytes,
    output_stats,
)
from .sessions import make_session, resolve_providers

__all__ = [
    "OutputStats",
    "ValidationResult",
    "WARMUP_RUNS",
    "validate",
    "check_same_interface",
    "format_table",
    "make_session",
    "resolve_providers",
    "random_inputs",
    "load_inputs",
    "load_labels",
    "read_npz",
    "parse_shape_option",
    "output_stats",
    "accuracy",
    "measure_latency",
    "model_size_bytes",
]
