"""aimet-onnx cross-layer equalization of one ONNX file; run by the aimet venv's python, never imported.

    /work/venv-aimet/bin/python benchmarks/_aimet_cle.py IN.onnx OUT.onnx

benchmarks/peers.py calls this in a subprocess because aimet-onnx needs torch and its own pins, which
the project must not depend on. The last stdout line is a JSON object, {"ok", "seconds", "version",
"clip_to_relu", "rescaled"} or {"ok": false, "error"}; only equalize_model itself is timed (imports
of torch and aimet are slow and are not part of the method's cost).
"""

from __future__ import annotations

import json
import sys
import time


def main(src: str, dst: str) -> dict:
    import numpy as np
    import onnx
    from aimet_onnx import __version__ as aimet_version
    from aimet_onnx.cross_layer_equalization import equalize_model
    from onnx import numpy_helper
    from onnxruntime.quantization.onnx_quantizer import ONNXModel

    model = onnx.load(src)
    clips = sum(n.op_type == "Clip" for n in model.graph.node)
    before = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    wrapped = ONNXModel(model)  # equalize_model works on this wrapper in place; keep a handle on it
    start = time.perf_counter()
    equalize_model(wrapped)
    seconds = time.perf_counter() - start
    onnx.save(wrapped.model, dst)
    # equalize_model turns ReLU6 (Clip 0..6) into Relu, which changes the float function: count it
    clip_to_relu = clips - sum(n.op_type == "Clip" for n in wrapped.model.graph.node)
    # how many tensors CLE rescaled: 0 means it found no equalizable pair and the row equals plain rounding
    rescaled = sum(t.name in before and not np.array_equal(before[t.name], numpy_helper.to_array(t))
                   for t in wrapped.model.graph.initializer)
    return {"ok": True, "seconds": seconds, "version": aimet_version, "clip_to_relu": clip_to_relu,
            "rescaled": rescaled}


if __name__ == "__main__":
    try:
        result = main(sys.argv[1], sys.argv[2])
    except Exception as exc:  # the caller turns this into a one-line note
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:240]}
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)
