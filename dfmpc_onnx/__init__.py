"""dfmpc-onnx: data-free mixed-precision compensation for ONNX models.

    from dfmpc_onnx import quantize
    report = quantize("model.onnx", "model.q.onnx", target_bits=4)   # file to file
    from dfmpc_onnx import convert, ConvertOptions
    model, report = convert("model.onnx", ConvertOptions(low_bits=2, high_bits=8))  # in memory
"""

# passes/ (a top-level folder of the repository) is the subpackage dfmpc_onnx.passes by the
# package_dir mapping in setup.cfg alone, installed or editable; nothing here edits __path__, so
# no other module under this package can be reached from the checkout (dfmpc_onnx.benchmarks
# is not a module).

from .api import convert, convert_file, inspect_model, quantize
from .errors import DfmpcError
from .options import ConvertOptions
from .report import LayerReport, Report

__all__ = ["convert", "convert_file", "quantize", "inspect_model", "ConvertOptions", "DfmpcError", "Report",
           "LayerReport"]
__version__ = "0.1.0"
