"""The synthetic inputs every measurement of a conversion runs on, from its options: seeded draws
of the model's input signature (``synthetic``) or, with the optional torch extra, inputs
distilled from the BatchNormalization statistics (``distill``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from dfmpc_onnx.options import ConvertOptions


def measurement_inputs(model: onnx.ModelProto, options: ConvertOptions, *, n: int | None = None,
                       seed: int | None = None, source_model: onnx.ModelProto | None = None,
                       say: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """``n`` and ``seed`` (default: the options'): other draws of the same kind, e.g. held out to
    check a choice made on the first. ``source_model``: the model as given, which distillation
    needs whole (its BatchNormalization nodes)."""
    o = options
    n = o.fidelity_samples if n is None else n
    seed = o.seed if seed is None else seed
    if o.synthetic == "distilled":
        from dfmpc_onnx.measure.distill import distilled_inputs  # the optional extra; torch only here

        if say is not None:
            say("distilling inputs from the BatchNormalization statistics (torch)")
        return distilled_inputs(source_model or model, n=n, seed=seed,
                                shapes=o.input_shapes or None)
    from dfmpc_onnx.measure.synthetic import synthetic_inputs

    return synthetic_inputs(model, n=n, kind=o.synthetic, seed=seed,
                            mean=o.input_mean, std=o.input_std, value_range=o.input_range,
                            shapes=o.input_shapes or None)
