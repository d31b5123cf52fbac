"""Peak memory of a conversion against the model's float weights (issue 10, section 4).

    python -m benchmarks.memory                      # VGG-19 shape, default options and none measured
    python -m benchmarks.memory --large              # also a VGG-like model of more than 2.5 GB
    python -m benchmarks.memory --only large --options "--low-bits 4 --correction none --fidelity-samples 0"
    python -m benchmarks.memory --trace --options "" # where the memory goes, pass by pass

Each model is built with NumPy and onnx.helper (seeded random weights, He-scaled so activations
stay in range; no torch), saved with external data one tensor at a time (the builder never holds
more than one weight), then converted by ``/usr/bin/time -v dfmpc-onnx convert`` in a subprocess.
The table gives the float weight bytes, the peak resident set ("Maximum resident set size"), the
bound of issue 10 (2x the float weight bytes plus 300 MB) and the wall time.

- ``vgg19``: the torchvision VGG-19 layer shapes: 16 Conv 3x3 (64..512 channels) with ReLU,
  5 MaxPool, then Gemm 25088->4096->4096->1000 (143.7 M weights, 575 MB).
- ``large``: the same convolutions, Gemm 25088->16384->16384->1000 (716 M weights, 2.86 GB).

Measured (``python -m benchmarks.memory`` and ``python -m benchmarks.memory --only large
--options "--low-bits 4 --correction none --fidelity-samples 0"``, idle 2-core machine,
2026-12-01):

    model  options                                      weights  peak     bound    time
    vgg19  (default: measured plan)                     575 MB   1066 MB  1449 MB  797 s
    vgg19  --low-bits 4 --correction none
           --fidelity-samples 0 (no measurement)        575 MB    525 MB  1449 MB  8.1 s
    large  the same, no measurement                     2864 MB  2063 MB  6027 MB  38 s
    large  (default: measured plan)                     2864 MB  3059 MB  6027 MB  1700 s *

(``*``: ``python -m benchmarks.memory --only large --options ""``, on a machine busy with another
job for 6 of its 28 minutes.)

(2026-11-24, before the weight store: 6.41 GB / 547 s, 1.37 GB / 5.6 s and 5.51 GB / 27.8 s;
before issue 10: 16.9 GB / 597 s and 3.4 GB / 16 s.) ``--trace`` runs one conversion in process
and prints VmRSS/VmHWM at every progress message, which is where the figures below come from.

How (``dfmpc_onnx/model/weightstore.py``): ``convert_file`` moves every initializer over 1 MB into a
weight store, one file in a working folder beside the output, and the passes hold stubs. A large
layer is read a block of output channels at a time where it is rounded, its statistics
propagated or its NaNs checked; checks, shape inference and the opset converter run on the stub
model; the output is written a tensor at a time. Without measurement the peak is then the
libraries, the protobuf of stubs and one layer's work (the classifier's integers and scales).

Measuring (the default) adds, on the VGG-19 shape at 224x224 with 16 synthetic samples
(``dfmpc_onnx/measure/fidelity.py``): ONNX Runtime sessions of every graph segment holding the
convolutions' weights (about 80 MB; a segment with more than 64 MB of stored weights, the
classifier, has no constant session and is fed its weights mapped from the store's file for each
run), at most 64 MB of cached activations in memory (the rest, about 2 GB here, in files mapped
back when a trial reads them), runs of at most 64 MB of their largest activation, and one
candidate of the largest layer at a time (411 MB, made when its segment is reached and written
to a file for the later runs of the same trial). The peak, 1.07 GB, comes while the 411 MB layer's
candidate is made and run; between trials the resident set is about 380 MB. Freed activations
and roundings are given back to the system after every segment run and rounding
(``dfmpc_onnx/model/heap.py``; before that was done after every segment run, and while a view still
kept each block's integers of a layer being rounded, the same conversion peaked at 1.47 GB).
Measuring costs time rather than memory: 797 s against 8 s; in a ``--trace`` run, measuring the
19 layers one at a time took 230 s and trying whole plans at each bit budget 500 s, each trial
making the classifier's 411 MB candidate anew. Before measuring, the converter estimates
what it will need (``passes.measure.probe_memory``: 2.4 GB here) and converts unmeasured, with a
note, where the machine has less available.
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
UNMEASURED = "--low-bits 4 --correction none --fidelity-samples 0"


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


def trace(model: Path, output: Path, options: list[str]) -> None:
    """Convert in this process, printing the resident set (VmRSS) and its peak so far (VmHWM) at
    each progress message: where a conversion's memory goes, pass by pass and layer by layer."""
    import time

    from dfmpc_onnx.api import convert_file
    from dfmpc_onnx.cli import main, options_from_params

    # The options exactly as ``dfmpc-onnx convert`` parses them.
    parsed = main.commands["convert"].make_context("convert", [str(model), "-o", str(output), *options])

    start = time.perf_counter()

    def say(message: str) -> None:
        status = {k: int(v.split()[0]) // 1024 for k, _, v in
                  (line.partition(":") for line in open("/proc/self/status"))
                  if k in ("VmRSS", "VmHWM")}
        print(f"{time.perf_counter() - start:7.1f} s  rss {status['VmRSS']:6d} MB  "
              f"peak {status['VmHWM']:6d} MB  {message}", flush=True)

    with open("/proc/self/clear_refs", "w") as fh:  # the peak so far was the model's building
        fh.write("5")
    say("start")
    convert_file(model, output, options_from_params(parsed.params), progress=say)
    say("written")


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
    ap.add_argument("--trace", action="store_true", help="convert the first model with the first "
                    "--options in this process, printing VmRSS/VmHWM at every progress message")
    args = ap.parse_args()
    names = [args.only] if args.only else ["vgg19"] + (["large"] if args.large else [])
    runs = args.options if args.options is not None else ["", UNMEASURED]
    if args.trace:
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            path = Path(tmp) / f"{names[0]}.onnx"
            vgg(path, MODELS[names[0]])
            trace(path, Path(tmp) / f"{names[0]}.q.onnx", shlex.split(runs[0]))
        return
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
