"""Peak memory of a conversion against the model's float weights (issue 10, section 4).

    python -m benchmarks.memory                      # VGG-19 shape, default options and --target-bits 4
    python -m benchmarks.memory --large              # also a VGG-like model of more than 2.5 GB
    python -m benchmarks.memory --only large --options ""   # the large model alone, default options

Each model is built with NumPy and onnx.helper (seeded random weights, He-scaled so activations
stay in range; no torch), saved with external data one tensor at a time (the builder never holds
more than one weight), then converted by ``/usr/bin/time -v dfmpc-onnx convert`` in a subprocess.
The table gives the float weight bytes, the peak resident set ("Maximum resident set size"), the
bound of issue 10 (2x the float weight bytes plus 300 MB) and the wall time.

- ``vgg19``: the torchvision VGG-19 layer shapes: 16 Conv 3x3 (64..512 channels) with ReLU,
  5 MaxPool, then Gemm 25088->4096->4096->1000 (143.7 M weights, 575 MB).
- ``large``: the same convolutions, Gemm 25088->16384->16384->1000 (711 M weights, 2.84 GB).

Where the peak comes from (VGG-19 shape, 575 MB of float weights, external data, default options,
branch ``mem`` at c517871, idle 2-core machine; VmRSS/VmHWM from /proc/self/status read at each
progress message, ``/tmp`` trace script calling ``convert_file`` with a progress callback):

    0 s    start                            RSS    65 MB
    7 s    loaded (load_model + check_input) RSS   712 MB, HWM 1.74 GB  (checker on the in-memory
                                            proto serialises it: +1 copy of the weights, transient)
    8 s    after infer-shapes               RSS 1.20 GB (+490 MB: _restore extends the initializers
                                            with the lifted tensors, a copy, while ``lifted`` still
                                            holds the originals; the heap keeps the pages)
    30 s   probe built (float run, 8 samples in one batch)   RSS 3.6 GB, HWM 5.1 GB
    ...    measure-layers, per layer        RSS grows ~0.4-4 GB a layer early on (7.9 GB at layer 2,
                                            9.1 GB at layer 3): constant sessions of every later
                                            segment (ORT's copy of the weights, Gemm prepacked),
                                            a variant session per layer, batch-8 activations of
                                            224x224 convolutions (100 MB a tensor)
    243 s  end of measure-layers            RSS 10.3 GB, HWM 16.5 GB  <- the peak
    582 s  end of choose-plan (25 plans)    RSS 10.3 GB
    593 s  upgrade-opset, emit-qdq          RSS 11.0 GB (probe still held by ctx.measurement)
    597 s  written                          peak (/usr/bin/time -v) 16.9 GB, 9 min 57 s

With 2 samples (``FidelityProbe`` alone on all weights): loaded 0.73 GB; building the probe peaks
at 4.6 GB (model copy in ``_with_weights_as_initializers``, ``self._float`` decoded, the float-run
graph copied twice by ``CopyFrom`` + ``make_model``, ``SerializeToString``, ORT's session), 2.3 GB
after; the first trial builds the constant sessions of all 19 segments: +1.3 GB. ORT's memory
arena and memory pattern make no difference (measured off: the same RSS within 2%).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

VGG19_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
               512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
MODELS = {"vgg19": (4096, 4096), "large": (16384, 16384)}
MB = 1_000_000


def vgg(path: Path, hidden: tuple[int, int] = (4096, 4096), classes: int = 1000, seed: int = 0,
        opset: int = 17) -> int:
    """Write a VGG-19-shaped model to ``path`` with its weights in ``<name>.data`` beside it.
    Returns the float weight bytes."""
    rng = np.random.default_rng(seed)
    data_name = f"{path.name}.data"
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    offset = 0
    with open(path.parent / data_name, "wb") as data:

        def const(name: str, value: np.ndarray) -> str:
            nonlocal offset
            raw = value.astype("<f4").tobytes()
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                            data_location=TensorProto.EXTERNAL)
            for key, v in (("location", data_name), ("offset", str(offset)),
                           ("length", str(len(raw)))):
                t.external_data.add(key=key, value=v)
            data.write(raw)
            offset += len(raw)
            inits.append(t)
            return name

        def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))

        x, cin, i = "input", 3, 0
        for k, c in enumerate(VGG19_CONVS):
            if c == "M":
                nodes.append(helper.make_node("MaxPool", [x], [f"pool{k}"], name=f"pool{k}",
                                              kernel_shape=[2, 2], strides=[2, 2]))
                x = f"pool{k}"
                continue
            w = const(f"features.{i}.weight", he((c, cin, 3, 3), cin * 9))
            b = const(f"features.{i}.bias", 0.01 * rng.standard_normal(c, dtype=np.float32))
            nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}"], name=f"conv{i}",
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
            x, cin, i = f"relu{i}", c, i + 1
        nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
        x, fin = "flat", cin * 7 * 7
        for j, fout in enumerate((*hidden, classes)):
            w = const(f"classifier.{j}.weight", he((fout, fin), fin))
            b = const(f"classifier.{j}.bias", 0.01 * rng.standard_normal(fout, dtype=np.float32))
            nodes.append(helper.make_node("Gemm", [x, w, b], [f"fc{j}"], name=f"fc{j}", transB=1))
            x, fin = f"fc{j}", fout
            if j < len(hidden):
                nodes.append(helper.make_node("Relu", [x], [f"fc{j}_relu"], name=f"fc{j}_relu"))
                x = f"fc{j}_relu"
    graph = helper.make_graph(
        nodes, "vgg19",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return offset


def measure(model: Path, output: Path, options: list[str]) -> dict:
    """Convert under ``/usr/bin/time -v``; peak resident set (bytes), wall seconds, exit code."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "dfmpc_onnx.cli", "convert", str(model),
           "-o", str(output), "-q", *options]
    # From the repository root, so that ``python -m`` runs this checkout's package.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    seconds = 0.0
    if wall:
        for part in wall.group(1).split(":"):
            seconds = seconds * 60 + float(part)
    return {"command": " ".join(shlex.quote(c) for c in cmd), "rc": proc.returncode,
            "peak": int(rss.group(1)) * 1024 if rss else 0, "seconds": seconds,
            "stderr": proc.stderr if proc.returncode else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also the model of more than 2.5 GB")
    ap.add_argument("--only", choices=sorted(MODELS), help="this model alone")
    ap.add_argument("--options", action="append",
                    help="convert options, one run each (default: '' and '--target-bits 4')")
    ap.add_argument("--out", default=None, help="folder for the models (default: a temporary one)")
    args = ap.parse_args()
    names = [args.only] if args.only else ["vgg19"] + (["large"] if args.large else [])
    runs = args.options if args.options is not None else ["", "--target-bits 4"]
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        rows = []
        for name in names:
            path = Path(tmp) / f"{name}.onnx"
            weights = vgg(path, MODELS[name])
            for opts in runs:
                r = measure(path, Path(tmp) / f"{name}.q.onnx", shlex.split(opts))
                bound = 2 * weights + 300 * MB
                rows.append((name, opts or "(default)", weights, r, bound))
                print(f"# {r['command']}", file=sys.stderr)
                if r["rc"]:
                    print(r["stderr"][-2000:], file=sys.stderr)
                for f in Path(tmp).glob(f"{name}.q.onnx*"):
                    os.unlink(f)
    print(f"{'model':<7} {'options':<16} {'weights MB':>10} {'peak MB':>8} {'bound MB':>8} "
          f"{'peak/w':>6} {'':>4} {'s':>6}")
    for name, opts, weights, r, bound in rows:
        verdict = "fail" if r["rc"] else ("pass" if r["peak"] <= bound else "over")
        print(f"{name:<7} {opts:<16} {weights / MB:>10.0f} {r['peak'] / MB:>8.0f} "
              f"{bound / MB:>8.0f} {r['peak'] / weights:>6.2f} {verdict:>4} {r['seconds']:>6.1f}")


if __name__ == "__main__":
    main()
