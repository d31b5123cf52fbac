"""Convert many models: each in its own process, one failure never stopping the others.

``convert_many(sources, out_dir, options, jobs)`` converts every source into
``out_dir/<stem>.q.onnx`` and returns one result per source (converted, or the error line and the
exit code it would have had alone); ``write_summary`` puts them in ``out_dir/summary.json`` and
formats the table the CLI prints. A process per model keeps each conversion's memory its own: a
large model's peak is returned to the system when its process ends.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from .errors import DfmpcError, OptionsError
from .options import ConvertOptions


@dataclass
class BatchResult:
    """One model's outcome."""

    model: str
    output: str
    ok: bool
    exit_code: int
    error: str
    seconds: float
    stored_bits: float | None = None
    top1_agreement: float | None = None
    divergence: float | None = None


def collect_sources(paths: list[str]) -> list[Path]:
    """The .onnx files named, directories expanded to the .onnx files directly inside them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix == ".onnx" and f.is_file())
        else:
            found.append(p)
    if not found:
        raise OptionsError(f"no .onnx files in {', '.join(paths)}")
    stems = [f.stem for f in found]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise OptionsError(f"several inputs would write the same output name: {', '.join(dup)}")
    return found


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _one(src: str, dst: str, options: ConvertOptions) -> BatchResult:
    from .api import convert_file

    if multiprocessing.parent_process() is not None:  # a worker: SIGTERM cleans up as SIGINT does
        signal.signal(signal.SIGTERM, _interrupt)
    start = time.perf_counter()
    try:
        report = convert_file(src, dst, options)
    except DfmpcError as exc:
        return BatchResult(src, "", False, exc.exit_code, str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - reported per model, like the CLI's exit 1
        return BatchResult(src, "", False, 1, f"internal error: {type(exc).__name__}: {exc}",
                           time.perf_counter() - start)
    f = report.fidelity
    return BatchResult(src, dst, True, 0, "", time.perf_counter() - start, report.stored_bits,
                       f.get("top1_agreement"), f.get("score"))


def convert_many(sources: list[Path], out_dir: Path, options: ConvertOptions, jobs: int = 1,
                 progress=None) -> list[BatchResult]:
    """Convert each source into ``out_dir/<stem>.q.onnx``, ``jobs`` processes at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(str(s), str(out_dir / f"{s.stem}.q.onnx")) for s in sources]
    results: list[BatchResult] = []
    if jobs <= 1:
        for i, (src, dst) in enumerate(pairs, 1):
            if progress:
                progress(f"[{i}/{len(pairs)}] {src}")
            results.append(_one(src, dst, options))
        return results
    # spawn: no fork of a process that may hold ONNX Runtime threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_one, src, dst, options) for src, dst in pairs]
        try:
            for i, fut in enumerate(futures, 1):
                results.append(fut.result())
                if progress:
                    progress(f"[{i}/{len(pairs)}] done {pairs[i - 1][0]}")
        except BaseException:  # SIGINT/SIGTERM: stop the workers (each removes its files), then go
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def write_summary(results: list[BatchResult], out_dir: Path) -> str:
    """summary.json beside the outputs (written atomically), and the table to print."""
    path = out_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([asdict(r) for r in results], indent=2))
    os.replace(tmp, path)
    width = max(len("model"), *(len(Path(r.model).name) for r in results))
    lines = [f"{'model':<{width}}  {'result':<10} {'stored':>6} {'agree':>6} {'seconds':>8}  error"]
    for r in results:
        agree = "" if r.top1_agreement is None else f"{100 * r.top1_agreement:.0f}%"
        stored = "" if r.stored_bits is None else f"{r.stored_bits:.2f}"
        lines.append(f"{Path(r.model).name:<{width}}  {'ok' if r.ok else f'exit {r.exit_code}':<10} "
                     f"{stored:>6} {agree:>6} {r.seconds:>8.1f}  {r.error}".rstrip())
    ok = sum(r.ok for r in results)
    lines.append(f"\n{ok} of {len(results)} converted; summary: {path}")
    return "\n".join(lines)
