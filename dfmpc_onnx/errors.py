"""Error types. Each carries the process exit code the CLI returns for it, so scripts can branch."""

from __future__ import annotations


class DfmpcError(Exception):
    """A problem the user can act on; the CLI prints its message as one line, no traceback."""

    exit_code = 1


class OptionsError(DfmpcError):
    """Nonsense options: bad bit-widths, an unreadable or inconsistent plan file."""

    exit_code = 2


class ModelLoadError(DfmpcError):
    """The input is not a readable, valid ONNX model (missing, empty, truncated, fails the checker)."""

    exit_code = 3


class UnsupportedModelError(DfmpcError):
    """A valid model this tool cannot convert (opset upgrade failed, unknown domain or opset)."""

    exit_code = 4


class OutputError(DfmpcError):
    """The output cannot be written (bad directory, same path as the input, permissions)."""

    exit_code = 5


class ConversionCheckError(DfmpcError):
    """The converted model failed onnx.checker or ONNX Runtime refused it; nothing was written."""

    exit_code = 6


class PassError(DfmpcError):
    """A graph pass failed; the message names the pass and the node."""

    exit_code = 7


class ValidationFailed(DfmpcError):
    """validate: an output missed --atol/--rtol, --min-agreement or --min-cosine."""

    exit_code = 8


EXIT_CODES = {
    0: "success",
    1: "internal error (a bug: rerun with --debug and report the traceback)",
    2: "bad options or plan file",
    3: "input model unreadable or invalid",
    4: "model not supported",
    5: "output cannot be written",
    6: "converted model failed the checker or ONNX Runtime",
    7: "a graph pass failed on this model",
    8: "validate: outputs outside --atol/--rtol, --min-agreement or --min-cosine",
    130: "interrupted (SIGINT, Ctrl-C); nothing written, working files removed",
    143: "terminated (SIGTERM); nothing written, working files removed",
}


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message as one line (checker messages span lines: the node name is on the
    second), cut at ``limit`` characters so the one-line error stays readable."""
    text = " ".join(str(exc).split())
    return (text[:limit - 3] + "...") if len(text) > limit else (text or type(exc).__name__)
