"""The float model and every kind of converted model on ONNX Runtime's CUDA and TensorRT execution
providers: outputs checked against the CPU, latency against float, and a list of what could not run.

    python -m benchmarks.gpu                     # ResNet-18 and a 2-layer BERT-shaped encoder
    python -m benchmarks.gpu --repeats 50 --json out/gpu.json

Output kinds (each converted once, on the CPU, with a fixed pair plan 4/8 so conversion is quick):
float; weight-only packed (INT4/INT8 initializers); weight-only int8 containers (``--format
int8``); int8 activations with uint8 and with int8 activation types (``--activations int8``).
Each model runs on every provider ``onnxruntime.get_available_providers()`` offers among CUDA and
TensorRT; a provider that is missing, fails to load a model, silently hands the model to another
provider, or fails to run it, is reported on the "could not run" list with ORT's own reason,
never hidden. "vs CPU" is the same model's largest output difference from the CPU provider, over
the largest CPU output: the provider computes what the model says. "vs float" compares with the
float model on the CPU: what quantization costs. Latency: median of ``--repeats`` runs after
warm-up (TensorRT builds its engine during the warm-up, not in the timed runs).

With no GPU (or onnxruntime without CUDA), the script says so and exits 0 after the CPU column;
tests/test_gpu_script.py runs its functions on the CPU provider for their structure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfmpc_onnx import ConvertOptions, convert

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

# What each output kind asks of the converter (on top of the plan in ``base_options``).
KINDS: dict[str, dict | None] = {
    "float": None,
    "weight-only packed": {"format": "packed"},
    "weight-only int8 containers": {"format": "int8"},
    "int8 activations (uint8)": {"activations": "int8", "activation_type": "uint8"},
    "int8 activations (int8)": {"activations": "int8", "activation_type": "int8"},
}


@dataclass
class Result:
    """One model of one kind on one provider: the figures, or why there are none."""

    model: str
    kind: str
    provider: str
    ms: float | None = None
    vs_cpu: float | None = None
    vs_float: float | None = None
    error: str | None = None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def gpu_providers(available: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(the GPU providers this onnxruntime offers, a line for each it does not)."""
    available = ort.get_available_providers() if available is None else available
    found = [p for p in GPU_PROVIDERS if p in available]
    missing = [f"{p}: not in this onnxruntime build (available: {', '.join(available)})"
               for p in GPU_PROVIDERS if p not in available]
    return found, missing


def base_options(**kind: object) -> ConvertOptions:
    """The fixed plan every converted kind shares: pairs at 4/8 bits, no measuring (quick)."""
    return ConvertOptions(method="pairs", low_bits=4, high_bits=8, correction="none",
                          fidelity_samples=0, **kind)


def convert_kinds(model: onnx.ModelProto, folder: Path, kinds: dict[str, dict | None] = KINDS,
                  options: Callable[..., ConvertOptions] = base_options
                  ) -> tuple[dict[str, Path], dict[str, str]]:
    """Each kind of ``model`` written under ``folder``: ({kind: path}, {kind: why not})."""
    paths: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for i, (kind, extra) in enumerate(kinds.items()):
        path = folder / f"{model.graph.name}_{i}.onnx"
        try:
            out = model if extra is None else convert(model, options(**extra))[0]
            onnx.save(out, path)
            paths[kind] = path
        except Exception as exc:  # noqa: BLE001 - a kind that cannot be made is reported, not fatal
            failed[kind] = f"conversion failed: {one_line(exc)}"
    return paths, failed


def provider_options(provider: str, cache: Path) -> dict:
    if provider == "TensorrtExecutionProvider":
        return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return {}


def make_session(path: Path, provider: str, cache: Path) -> ort.InferenceSession:
    """A session on ``provider`` (CPU behind it for nodes it lacks); RuntimeError when ORT put
    the model on another provider instead."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [(provider, provider_options(provider, cache))]
    if provider != "CPUExecutionProvider":
        providers.append(("CPUExecutionProvider", {}))
    session = ort.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"ORT fell back to {', '.join(session.get_providers())}")
    return session


def median_ms(session: ort.InferenceSession, feeds: dict, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| / max |ref| (0 for an all-zero ref that got matches)."""
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    return diff / scale if scale > 0 else diff


def run_matrix(name: str, paths: dict[str, Path], feeds: dict, providers: list[str], repeats: int,
               cache: Path) -> list[Result]:
    """Every kind on the CPU (the reference) and on each provider of ``providers``."""
    results: list[Result] = []
    cpu_out: dict[str, np.ndarray] = {}
    for provider in ["CPUExecutionProvider"] + [p for p in providers if p != "CPUExecutionProvider"]:
        for kind, path in paths.items():
            r = Result(name, kind, provider)
            results.append(r)
            try:
                session = make_session(path, provider, cache)
                out = session.run(None, feeds)[0]
                r.ms = median_ms(session, feeds, repeats)
            except Exception as exc:  # noqa: BLE001 - reported on the "could not run" list
                r.error = one_line(exc)
                continue
            if provider == "CPUExecutionProvider":
                cpu_out[kind] = out
            if kind in cpu_out:
                r.vs_cpu = relative_error(cpu_out[kind], out)
            if "float" in cpu_out:
                r.vs_float = relative_error(cpu_out["float"], out)
    return results


def table(results: list[Result]) -> str:
    lines = ["| model | kind | provider | ms | x float | vs CPU | vs float |",
             "|---|---|---|---|---|---|---|"]
    floats = {(r.model, r.provider): r.ms for r in results if r.kind == "float" and r.ms}
    for r in results:
        if r.error:
            continue
        base = floats.get((r.model, r.provider))
        speed = f"{base / r.ms:.2f}x" if base and r.ms else ""
        lines.append(f"| {r.model} | {r.kind} | {r.provider.replace('ExecutionProvider', '')} | "
                     f"{r.ms:.2f} | {speed} | {r.vs_cpu:.1e} | {r.vs_float:.3f} |")
    return "\n".join(lines)


def could_not_run(results: list[Result], missing: list[str], failed: dict[str, dict[str, str]]
                  ) -> list[str]:
    """Every provider, conversion and run that gave no figure, with its reason."""
    lines = list(missing)
    for model, kinds in failed.items():
        lines += [f"{model} / {kind}: {why}" for kind, why in kinds.items()]
    lines += [f"{r.model} / {r.kind} / {r.provider}: {r.error}" for r in results if r.error]
    return lines


def default_models() -> dict[str, tuple[onnx.ModelProto, dict]]:
    """ResNet-18 (Conv) and a 2-layer BERT-shaped encoder (MatMul), with batch-1 inputs."""
    from .resnet18 import resnet18
    from .transformer_models import bert_encoder

    rng = np.random.default_rng(0)
    return {"resnet18": (resnet18(), {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}),
            "bert-2-layers": (bert_encoder(layers=2),
                              {"x": rng.standard_normal((1, 128, 768)).astype(np.float32)})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = ap.parse_args(argv)
    providers, missing = gpu_providers()
    print(f"onnxruntime {ort.__version__}; GPU providers here: {', '.join(providers) or 'none'}")
    results: list[Result] = []
    failed: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (model, feeds) in default_models().items():
            feeds = _feeds_for(model, feeds)
            paths, failed[name] = convert_kinds(model, folder)
            results += run_matrix(name, paths, feeds, providers, args.repeats, folder)
    print(table(results))
    lines = could_not_run(results, missing, failed)
    print("could not run:" if lines else "everything ran")
    for line in lines:
        print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results] + [{"could_not_run": lines}], indent=1))
    return 0


def _feeds_for(model: onnx.ModelProto, feeds: dict) -> dict:
    """The inputs under the model's own input names (in order)."""
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    return dict(zip(names, feeds.values(), strict=True))


if __name__ == "__main__":
    sys.exit(main())
