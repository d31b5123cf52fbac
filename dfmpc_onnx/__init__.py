"""dfmpc-onnx: data-free mixed-precision compensation for ONNX models.

    from dfmpc_onnx import quantize
    report = quantize("model.onnx", "model.q.onnx", target_bits=4)   # file to file
    from dfmpc_onnx import convert, ConvertOptions
    model, report = convert("model.onnx", ConvertOptions(low_bits=2, high_bits=8))  # in memory
"""

from pathlib import Path as _Path

# Installed, passes/ is the subpackage dfmpc_onnx.passes (package_dir in setup.cfg). Run from a
# source checkout (e.g. `python -m benchmarks.run` in the repository root, which puts this folder
# ahead of site-packages), passes/ is a sibling of this folder: let the subpackage be found there.
if not (_Path(__file__).parent / "passes").is_dir() and (
        _Path(__file__).parent.parent / "passes" / "__init__.py").is_file():
    __path__.append(str(_Path(__file__).parent.parent))  # noqa: F821 (set by the import system)

from .api import convert, convert_file, inspect_model, quantize
from .errors import DfmpcError
from .options import ConvertOptions
from .report import LayerReport, Report

__all__ = ["convert", "convert_file", "quantize", "inspect_model", "ConvertOptions", "DfmpcError", "Report",
           "LayerReport"]
__version__ = "0.1.0"
