"""How stable each pretrained suite model's decisions are without any quantization: its metric,
the float model against itself, when its image input moves by an imperceptible amount (uniform
noise of +-k grey levels of 255, over the range the wheel's pre-processing gives the input).

A quantized model cannot be judged finer than this floor: where one grey level of noise already
moves the metric by several points (NudeNet's thresholded detections on drawn scenes), a target
of 99% of float is below what the float model itself keeps.

    PYTHONPATH=$PWD python -m benchmarks.decision_noise [--only nudenet_320n] [--levels 0.5,1,2]

Models whose input is not an image range (magika's byte tokens, silero-vad's audio) are skipped.
Prints one line per model and level; nothing is written.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import pretrained as suite
from benchmarks import pretrained_data as data


def noisy(samples: data.Samples, name: str, amplitude: float, lo: float, hi: float,
          seed: int = 0) -> data.Samples:
    """``samples`` with input ``name`` moved by uniform noise of +-``amplitude``, clipped to
    [lo, hi] (the other inputs, and labels, as they are)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for f in samples.feeds:
        x = f[name]
        moved = np.clip(x + rng.uniform(-amplitude, amplitude, x.shape), lo, hi).astype(x.dtype)
        feeds.append({**f, name: moved})
    return data.Samples(feeds, samples.labels, run=samples.run, calibration=samples.calibration)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--levels", default="0.5,1,2", help="grey levels of 255, comma-separated")
    args = ap.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    for spec in suite.SPECS:
        if (wanted and spec.name not in wanted) or not spec.stated_range:
            continue
        lo, hi = (float(v) for v in spec.stated_range.split(","))
        folder = suite.extract(spec)
        samples = spec.make(spec.n, 0)
        name = next(k for k, v in samples.feeds[0].items() if v.dtype.kind == "f" and v.ndim == 4)
        session = suite.session(folder / spec.member)
        metric = spec.score(folder)
        ref = data.outputs(session, samples)
        for level in (float(v) for v in args.levels.split(",")):
            moved = noisy(samples, name, level / 255 * (hi - lo), lo, hi)
            score = metric(data.outputs(session, moved), samples, ref)
            print(f"{spec.name:14s} +-{level:g}/255  {spec.metric}: {100 * score:.1f}% of the "
                  f"float model's own ({100 * metric(ref, samples, ref):.1f})", flush=True)


if __name__ == "__main__":
    main()
