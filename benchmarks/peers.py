"""Peer baselines for the benchmark: what a user could run instead of DF-MPC, without data.

    ort_static_int8    onnxruntime quantize_static, QDQ int8, calibrated on N(0, 1) noise
    ort_int4_weights   onnxruntime's 4-bit weight-only quantizer (MatMulNBits)
    aimet_equalize     aimet-onnx's cross-layer equalization, then our plain rounding

Every function returns a PeerResult instead of raising, so that the runner can print a row for a
peer that cannot run (and why) beside the ones that can. Each written model is checked with
onnx.checker (full_check) and loaded in onnxruntime CPU before it is reported.

aimet-onnx pulls a full torch, so it lives in its own virtual environment (benchmarks/PEERS_NOTES.md
says how it was built) and runs in a subprocess: this module imports neither aimet nor torch, and
imports onnxruntime.quantization only inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

AIMET_PYTHON_ENV = "DFMPC_AIMET_PYTHON"
DEFAULT_AIMET_PYTHON = "/work/venv-aimet/bin/python"
AIMET_SCRIPT = Path(__file__).resolve().parent / "_aimet_cle.py"
AIMET_TIMEOUT_S = 900

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")

# Bits of the integer containers a DequantizeLinear weight can come from.
_DTYPE_BITS = {
    onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8,
    onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4,
    onnx.TensorProto.INT16: 16, onnx.TensorProto.UINT16: 16,
}
for _name, _bits in (("INT2", 2), ("UINT2", 2)):  # onnx >= 1.20 only
    if hasattr(onnx.TensorProto, _name):
        _DTYPE_BITS[getattr(onnx.TensorProto, _name)] = _bits


@dataclass
class PeerResult:
    path: Path | None       # the quantized model written, None if the peer could not run
    seconds: float          # wall time of the quantization itself
    note: str               # one line: what was done, or why it could not run
    weight_only: bool       # True if activations stay float (latency with session.disable_quant_qdq=1)
    avg_bits: float | None  # average bits per weight parameter of Conv/Gemm/MatMul weights, if known


# --------------------------------------------------------------------------- helpers


def verify(path: Path) -> str | None:
    """None if the file passes onnx.checker (full_check) and loads in onnxruntime CPU, else why not.

    full_check runs strict shape inference, which catches QDQ graphs whose types do not line up
    before the runner spends time timing them. Contrib ops (com.microsoft) are unknown to the
    checker's schemas, so their shapes are not checked: loading in ORT covers them."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # any failure makes the row unusable; say which
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def weight_bits(model: onnx.ModelProto) -> tuple[float | None, dict[int, int]]:
    """Parameter-weighted bits of the Conv/Gemm/MatMul weights, and parameters per bit width.

    A weight counts as quantized when it is an integer initializer feeding a DequantizeLinear
    (ORT's QDQ and our converter both write that), as MatMulNBits' `bits` attribute says, or as 32
    when it is a float initializer. MatMuls of two activations have no weight and are skipped."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    params: dict[int, int] = {}
    for node in g.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            n, b = int(attrs["K"]) * int(attrs["N"]), int(attrs.get("bits", 4))
        elif node.op_type in WEIGHT_OPS and len(node.input) > 1:
            name = node.input[1]
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
                t = inits[src.input[0]]
                n, b = int(np.prod(t.dims)), _DTYPE_BITS.get(t.data_type, 32)
            elif name in inits:
                n, b = int(np.prod(inits[name].dims)), 32
            else:
                continue
        else:
            continue
        params[b] = params.get(b, 0) + n
    total = sum(params.values())
    return (sum(b * n for b, n in params.items()) / total if total else None), params


def _input_feeds_shape(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
    """Graph inputs (not initializers) with a concrete shape: dynamic dims (batch) become 1."""
    inits = {t.name for t in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim)
        shapes[inp.name] = (dims, tt.elem_type)
    return shapes


def _done(path: Path, seconds: float, note: str, weight_only: bool,
          avg_bits: float | None = None) -> PeerResult:
    """Verify the written model; a file that fails the checks is reported as no result."""
    problem = verify(path)
    if problem:
        return PeerResult(None, seconds, f"output failed checks ({problem}); {note}", weight_only, None)
    if avg_bits is None:
        avg_bits = weight_bits(onnx.load(str(path)))[0]
    return PeerResult(path, seconds, note, weight_only, avg_bits)


# --------------------------------------------------------------------------- onnxruntime


def ort_static_int8(model: Path, out: Path, *, per_channel: bool, seed: int = 0,
                    n_calib: int = 32) -> PeerResult:
    """onnxruntime quantize_static, QDQ, int8 symmetric weights and uint8 activations (ORT's defaults
    for CPU), MinMax-calibrated on n_calib seeded N(0, 1) samples of batch 1.

    N(0, 1) is what a user without data would feed: the example models' inputs are normalised. ORT's
    docs recommend quant_pre_process (shape inference + optimisation) first, so it runs and is timed.
    reduce_range stays False (full int8 weights, the comparison the benchmark makes) although the docs
    advise it on x86 CPUs without VNNI: there ORT's fused U8S8 kernels (QLinearConv, what
    session.disable_quant_qdq=0 runs) can saturate, and per-channel top-1 fell from 87.8% (QDQ simulated,
    disable_quant_qdq=1) to 79.1% on glyphs_resnet on an AVX2 EPYC. weight_only=False: time AND score
    this peer with disable_quant_qdq=0, the int8 path it exists for (PEERS_NOTES.md)."""
    # quant_pre_process imports symbolic_shape_infer (and sympy) lazily: importing it here keeps the
    # first call's timing from being mostly import time (2.5 s of 2.6 s on glyphs_resnet). Without
    # sympy (not a dependency of ours) the pre-processing is skipped, and the note says so.
    try:
        import onnxruntime.tools.symbolic_shape_infer  # noqa: F401
        pre_process = True
    except ImportError:
        pre_process = False
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    model, out = Path(model), Path(out)
    shapes = _input_feeds_shape(onnx.load(str(model), load_external_data=False))

    class GaussianReader(CalibrationDataReader):
        """n_calib feeds of seeded standard normal noise, one sample each."""

        def __init__(self) -> None:
            rng = np.random.default_rng(seed)
            to_np = onnx.helper.tensor_dtype_to_np_dtype
            self.feeds = iter([{name: rng.standard_normal(shape).astype(to_np(dt))
                                for name, (shape, dt) in shapes.items()} for _ in range(n_calib)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep.onnx"
        start = time.perf_counter()
        try:
            if pre_process:
                quant_pre_process(str(model), str(prep))
            quantize_static(str(prep if pre_process else model), str(out), GaussianReader(),
                            quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=False,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:  # report the peer's failure as a row
            return PeerResult(None, time.perf_counter() - start,
                              f"ORT quantize_static failed: {type(exc).__name__}: {exc}"[:300], False, None)
        secs = time.perf_counter() - start
    gran = "per-channel" if per_channel else "per-tensor"
    avg, by_bits = weight_bits(onnx.load(str(out)))
    note = (f"ORT quantize_static QDQ, int8 {gran} weights / uint8 activations, MinMax on {n_calib} "
            f"N(0,1) samples (seed {seed}), "
            f"{'after quant_pre_process' if pre_process else 'no quant_pre_process (sympy missing)'}, "
            f"reduce_range off; int8 weight params "
            f"{by_bits.get(8, 0)}, float {by_bits.get(32, 0)}")
    return _done(out, secs, note, weight_only=False, avg_bits=avg)


def ort_int4_weights(model: Path, out: Path, *, block_size: int = 32) -> PeerResult:
    """onnxruntime's MatMulNBitsQuantizer: 4-bit blockwise round-to-nearest, symmetric, weight only.

    It rewrites MatMul nodes with a constant 2-D weight (and Gather, if asked) into MatMulNBits; Conv and
    Gemm are left alone, so on conv nets it quantizes nothing and there is no row to report. The
    quantizable MatMuls are counted here first, so that case is reported even where the quantizer's
    own dependency (onnx_ir, not declared by the onnxruntime wheel) is missing."""
    model, out = Path(model), Path(out)
    source = onnx.load(str(model))
    g = source.graph
    inits = {t.name: t for t in g.initializer}
    ops = {op: sum(n.op_type == op for n in g.node) for op in WEIGHT_OPS}
    candidates = [n for n in g.node if n.op_type == "MatMul" and n.input[1] in inits
                  and len(inits[n.input[1]].dims) == 2]
    summary = f"{ops['Conv']} Conv, {ops['Gemm']} Gemm, {ops['MatMul']} MatMul"
    if not candidates:
        return PeerResult(None, 0.0, f"ORT MatMulNBits quantizes only MatMul with a constant 2-D weight: "
                          f"0 of this model's layers qualify ({summary}), nothing to compare", True, None)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        return PeerResult(None, 0.0, f"ORT 4-bit quantizer unavailable ({exc}; pip install onnx_ir); "
                          f"{len(candidates)} MatMul would qualify", True, None)
    start = time.perf_counter()
    try:
        # algo_config None = ORT's "DEFAULT" blockwise round-to-nearest. RTNWeightOnlyQuantConfig is
        # another path: in ORT 1.32 it dropped an unnamed MatMul and the com.microsoft opset import.
        quant = MatMulNBitsQuantizer(source, block_size=block_size, is_symmetric=True, bits=4)
        quant.process()
        out.parent.mkdir(parents=True, exist_ok=True)
        quant.model.save_model_to_file(str(out), use_external_data_format=False)
    except Exception as exc:
        return PeerResult(None, time.perf_counter() - start,
                          f"ORT MatMulNBits failed: {type(exc).__name__}: {exc}"[:300], True, None)
    secs = time.perf_counter() - start
    written = onnx.load(str(out))
    n_q = sum(n.op_type == "MatMulNBits" for n in written.graph.node)
    if n_q == 0:
        out.unlink(missing_ok=True)
        return PeerResult(None, secs, f"ORT MatMulNBits quantized 0 layers ({summary})", True, None)
    return _done(out, secs, f"ORT MatMulNBits 4-bit round-to-nearest, block {block_size}, symmetric: "
                 f"{n_q} of {len(candidates)} MatMul quantized; Conv/Gemm stay float ({summary})",
                 weight_only=True)


# --------------------------------------------------------------------------- aimet


def aimet_python() -> Path:
    """The aimet venv's interpreter: $DFMPC_AIMET_PYTHON, else /work/venv-aimet/bin/python."""
    return Path(os.environ.get(AIMET_PYTHON_ENV) or DEFAULT_AIMET_PYTHON)


def aimet_equalize(model: Path, out: Path, *, low_bits: int, high_bits: int) -> PeerResult:
    """aimet-onnx's data-free cross-layer equalization (equalize_model: BN fold, scale equalization and,
    where BN statistics remain, high-bias folding), then our plain rounding with the same bit plan
    (correction "none"), so the row differs from our "round" row only by aimet's equalization.

    seconds = aimet's equalize_model (timed inside the subprocess; interpreter start and importing
    torch excluded, they are reported in the note) + our conversion."""
    return aimet_equalize_plans(model, [(out, low_bits, high_bits)])[0]


def aimet_equalize_plans(model: Path, plans: list[tuple[Path, int, int]]) -> list[PeerResult]:
    """aimet_equalize for several (out, low_bits, high_bits) plans with one aimet run: starting the
    venv's interpreter and importing torch costs 7-16 s, the equalization itself well under 1 s."""
    from dfmpc_onnx import ConvertOptions, convert_file

    model = Path(model)

    def failed(seconds: float, note: str) -> list[PeerResult]:
        return [PeerResult(None, seconds, note[:300], True, None) for _ in plans]

    python = aimet_python()
    if not python.exists():
        return failed(0.0, f"no aimet venv at {python} (set {AIMET_PYTHON_ENV}; see "
                      "benchmarks/PEERS_NOTES.md)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        eq = Path(tmp) / "cle.onnx"
        start = time.perf_counter()
        try:
            proc = subprocess.run([str(python), str(AIMET_SCRIPT), str(model), str(eq)],
                                  capture_output=True, text=True, timeout=AIMET_TIMEOUT_S,
                                  env=_clean_env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return failed(time.perf_counter() - start, f"aimet subprocess: {exc}")
        wall = time.perf_counter() - start
        info = _last_json(proc.stdout)
        if proc.returncode != 0 or not info.get("ok") or not eq.exists():
            why = info.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return failed(wall, f"aimet equalize_model failed: {why}")
        problem = verify(eq)
        if problem:
            return failed(wall, f"aimet's equalized model failed checks: {problem}")
        drift = output_drift(model, eq)
        for out, low_bits, high_bits in plans:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            try:
                opts = ConvertOptions(low_bits=low_bits, high_bits=high_bits, correction="none")
                report = convert_file(eq, out, opts)
            except Exception as exc:
                results.append(PeerResult(None, info["seconds"], f"our rounding of aimet's CLE model "
                                          f"failed: {type(exc).__name__}: {exc}"[:300], True, None))
                continue
            ours = time.perf_counter() - start
            note = (f"aimet-onnx {info.get('version', '?')} equalize_model ({info['seconds']:.2f} s; "
                    f"subprocess {wall:.1f} s with imports), then plain rounding {low_bits}/{high_bits} "
                    f"(correction none, {ours:.2f} s); CLE rescaled {info.get('rescaled', '?')} tensors and "
                    f"changed float outputs by {drift:.1e} of their max on N(0,1) inputs"
                    + (f", aimet replaced {info['clip_to_relu']} Clip (ReLU6) with Relu"
                       if info.get("clip_to_relu") else ""))
            results.append(_done(out, info["seconds"] + ours, note, weight_only=True,
                                 avg_bits=report.average_bits))
    return results


def output_drift(a: Path, b: Path, *, n: int = 8, seed: int = 0) -> float:
    """max |out_a - out_b| / max |out_a| over n seeded N(0, 1) inputs (first output, batch 1 each).

    Equalization is meant to leave the float function unchanged; aimet's equalize_model also swaps
    ReLU6 (Clip) for ReLU, which does change it, and the row should say so rather than blame the
    rounding."""
    import onnxruntime as ort

    shapes = _input_feeds_shape(onnx.load(str(a), load_external_data=False))
    rng = np.random.default_rng(seed)
    sa, sb = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (a, b))
    worst = scale = 0.0
    for _ in range(n):
        feeds = {k: rng.standard_normal(shape).astype(onnx.helper.tensor_dtype_to_np_dtype(dt))
                 for k, (shape, dt) in shapes.items()}
        ya, yb = sa.run(None, feeds)[0], sb.run(None, feeds)[0]
        worst, scale = max(worst, float(np.abs(ya - yb).max())), max(scale, float(np.abs(ya).max()))
    return worst / scale if scale else worst


def _clean_env() -> dict[str, str]:
    """Our environment minus what could leak this interpreter's packages into the aimet venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def _last_json(stdout: str) -> dict:
    """The script's result line: the last stdout line that parses as a JSON object (aimet logs too)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def main(argv: list[str]) -> None:
    """python -m benchmarks.peers OUTDIR MODEL.onnx...: every peer on example models, as Markdown rows.

    top-1 is given with disable_quant_qdq=1 (what benchmarks.run.top1 measures) and, for peers that
    quantize activations, also with 0 (ORT's fused int8 kernels, what such a peer is deployed as)."""
    from .datasets import load_test_set
    from .run import top1

    outdir, models = Path(argv[0]), [Path(m) for m in argv[1:]]
    print("| model | peer | top-1 qdq=1 | top-1 qdq=0 | avg bits | seconds | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    for src in models:
        x, y = load_test_set(src)
        for label, run in _all_peers(src):
            r = run(outdir / f"{src.stem}.{label}.onnx")
            sim = f"{100 * top1(r.path, x, y, True):.1f}%" if r.path else "-"
            fused = f"{100 * top1(r.path, x, y, False):.1f}%" if r.path and not r.weight_only else "-"
            bits = f"{r.avg_bits:.2f}" if r.avg_bits is not None else "-"
            print(f"| {src.stem} | {label} | {sim} | {fused} | {bits} | {r.seconds:.2f} | {r.note} |",
                  flush=True)


def _all_peers(src: Path) -> list[tuple[str, Callable[[Path], PeerResult]]]:
    """Every peer on one model, by label; aimet at 2, 3 and 4 low bits with 8 high."""
    runs: list[tuple[str, Callable[[Path], PeerResult]]] = [
        ("ort-int8-channel", lambda o: ort_static_int8(src, o, per_channel=True)),
        ("ort-int8-tensor", lambda o: ort_static_int8(src, o, per_channel=False)),
        ("ort-int4-weights", lambda o: ort_int4_weights(src, o))]
    runs += [(f"aimet-cle-{lo}-8", lambda o, lo=lo: aimet_equalize(src, o, low_bits=lo, high_bits=8))
             for lo in (2, 3, 4)]
    return runs


if __name__ == "__main__":
    main(sys.argv[1:])
