"""dfmpc-onnx: data-free mixed-precision compensation for ONNX models.

    from dfmpc_onnx import convert, ConvertOptions
    model, report = convert("model.onnx", ConvertOptions(low_bits=2, high_bits=8))
"""

from .api import convert, convert_file, inspect_model
from .errors import DfmpcError
from .options import ConvertOptions
from .report import LayerReport, Report

__all__ = ["convert", "convert_file", "inspect_model", "ConvertOptions", "DfmpcError", "Report",
           "LayerReport"]
__version__ = "0.1.0"
