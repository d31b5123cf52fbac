"""Weight quantizers, one module each, looked up by name.

    from dfmpc_onnx.quant.quantizers import get_quantizer, WeightLayout
    qt = get_quantizer("twn").quantize(w, 2, WeightLayout(out_axis=0, in_axis=1))

A new grid is one module with a class offering ``name``, ``help``, ``supports(bits)`` and
``quantize(w, bits, layout, per_channel) -> QuantizedTensor``, and one line in ``_ALL`` below.
Everything downstream (container, opset, DequantizeLinear attributes, bytes) asks the tensor.
"""

from __future__ import annotations

from .asymmetric import Asymmetric
from .base import QuantizedTensor, Quantizer, WeightLayout
from .block import Block
from .maxabs import MaxAbs
from .mse import MSEClip
from .paper import Paper
from .ternary import TWN, MSETernary

_ALL: list[Quantizer] = [MaxAbs(), TWN(), MSETernary(), MSEClip(), Asymmetric(), Block(32),
                         Block(64), Block(128), Paper()]
QUANTIZERS: dict[str, Quantizer] = {q.name: q for q in _ALL}


def get_quantizer(name: str) -> Quantizer:
    """The quantizer called ``name``; KeyError lists the known ones."""
    try:
        return QUANTIZERS[name]
    except KeyError:
        raise KeyError(f"unknown quantizer {name!r}; known: {', '.join(QUANTIZERS)}") from None


__all__ = ["QUANTIZERS", "QuantizedTensor", "Quantizer", "WeightLayout", "get_quantizer"]
