"""The `dfmpc-onnx` command: a thin click layer over dfmpc_onnx.api and dfmpc_onnx.validate."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import click

from .errors import EXIT_CODES, DfmpcError, OptionsError
from .options import ConvertOptions
from .output_kinds import parse_output_kinds
from .synthetic import parse_input_shapes

EXIT_HELP = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."


class Progress:
    """Progress on stderr: a live line on a terminal; in a log, sparse but regular lines.

    In a log (stderr not a terminal) the first line comes only after FIRST_LINE_S of work, so a
    short run, or one that stops early on an error, prints no progress at all; after that a line
    every EVERY_S while work goes on. A pass can run far longer than that without calling back
    (VGG-19's quantize pass: ~10 s), so a daemon thread repeats the current message on time; it
    stops at ``done()``, when stderr is swapped for another stream (the run it belonged to is
    over: a test runner restored it), or when the thread that started it has ended.
    ``clock`` and ``tty`` exist for tests; ``heartbeat=False`` leaves the thread out.
    """

    FIRST_LINE_S = 2.0
    EVERY_S = 4.0
    POLL_S = 0.25

    def __init__(self, quiet: bool, *, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, heartbeat: bool = True) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.next_line = self.start + self.FIRST_LINE_S
        self.message: str | None = None
        self.heartbeat = heartbeat and not quiet and not self.tty
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            click.echo(f"\r\033[K{message}", nl=False, err=True)
            return
        with self._lock:
            self.message = message
        self.tick()
        if self.heartbeat and self._thread is None:
            self._thread = threading.Thread(target=self._beat, args=(sys.stderr,
                                            threading.current_thread()),
                                            name="dfmpc-progress", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        """Print the current message if a line is due (the heartbeat calls this on time)."""
        with self._lock:
            now = self.clock()
            if self.message is None or self._stop.is_set() or now < self.next_line:
                return
            click.echo(f"[{now - self.start:6.1f}s] {self.message}", err=True)
            self.next_line = now + self.EVERY_S

    def _beat(self, stream: object, owner: threading.Thread) -> None:
        while not self._stop.wait(self.POLL_S):
            if sys.stderr is not stream or not owner.is_alive():
                return
            self.tick()

    def done(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self.tty and not self.quiet:
            click.echo("\r\033[K", nl=False, err=True)


def read_plan(path: str | None) -> dict[str, int | None]:
    """A plan file is JSON: {"layer name": bits or null, ...}."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionsError(f"plan file {path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise OptionsError(f"plan file {path}: not UTF-8 text (byte {exc.start}); "
                           "a plan is a JSON object") from exc
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionsError(f"plan file {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(plan, dict) or not all(isinstance(k, str) for k in plan):
        raise OptionsError(f'plan file {path}: expected an object like {{"conv1": 4, "fc": null}}')
    return plan


def _run(debug: bool, fn) -> None:
    """Turn our errors into one line on stderr and an exit code; tracebacks only with --debug."""
    try:
        fn()
    except DfmpcError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; nothing was written", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence, see --debug
        if debug:
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc} "
                   "(rerun with --debug for the traceback and please report it)", err=True)
        sys.exit(1)


class OneLineErrors(click.Group):
    """click's usage errors (a bad option value, a missing argument) as one ``error:`` line with
    exit code 2, like every other failure, instead of a usage block: one line is what scripts and
    people read. Help, --version and a bare ``dfmpc-onnx`` behave as click makes them."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted; nothing was written", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, epilog=EXIT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="dfmpc-onnx")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Data-free mixed-precision quantization of ONNX models (DF-MPC).

    In each pair of consecutive layers (Conv/Gemm/MatMul -> activation -> Conv/Gemm/MatMul) the
    first is rounded to very few bits and the second, kept at 8 bits, absorbs a closed-form
    correction of the first one's error. No data, calibration set or fine-tuning is used.

    \b
    Typical use:
      dfmpc-onnx inspect model.onnx                 # what would be quantized, and why not
      dfmpc-onnx convert model.onnx -o model.q.onnx # write the packed low-bit model
      dfmpc-onnx validate model.onnx model.q.onnx   # compare outputs, size and speed
    """
    ctx.obj = {"debug": debug}


def conversion_options(fn):
    """Every ConvertOptions field as an option of convert and inspect. Help texts, choices and
    defaults come from the dataclass (dfmpc_onnx/options.py), so they are written once."""
    for f in reversed(fields(ConvertOptions)):
        fn = _field_option(f)(fn)
    return fn


def _field_option(f):
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata["help"]
    if f.name == "plan":
        return click.option("--plan", type=click.Path(dir_okay=False),
                            help=f"JSON file with {help_text[0].lower()}{help_text[1:]} Names come "
                                 "from `dfmpc-onnx inspect`.")
    kind = str(f.type)
    if f.name == "input_range":
        return click.option("--input-range", metavar="LOW,HIGH", help=help_text)
    if f.name == "input_shapes":
        return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
                            help=help_text)
    if f.name == "output_kinds":
        return click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
                            help=help_text)
    if kind.startswith("bool"):
        return click.option(f"{flag}/--no-{flag[2:]}", default=f.default, help=help_text,
                            show_default=f.default is not None)
    if "choices" in f.metadata:
        return click.option(flag, type=click.Choice(f.metadata["choices"]), default=f.default,
                            help=help_text, show_default=f.default is not None)
    if f.name in ("low_bits", "high_bits"):
        return click.option(flag, type=click.IntRange(2, 8), default=None, help=help_text)
    if kind == "int":
        return click.option(flag, type=click.IntRange(0), default=f.default, help=help_text,
                            show_default=True)
    return click.option(flag, type=float, default=f.default, help=help_text,
                        show_default=f.default is not None)


def warn_if_poor(report, options: ConvertOptions) -> None:
    """One line on stderr when the predicted fidelity of what was written is poor."""
    f = report.fidelity
    if not f:
        return
    agree = f.get("top1_agreement")
    if f.get("single_class") and f.get("centered_error") == float("inf"):
        click.echo("warning: fidelity not predicted: the float model's outputs do not vary over "
                   "the synthetic inputs; check the result with `dfmpc-onnx validate` on real "
                   "inputs", err=True)
        return
    if f.get("single_class"):  # agreement says nothing there: the outputs' own error does
        poor = f["centered_error"] > 1 - options.min_agreement
    elif agree is not None:
        poor = agree < options.min_agreement
    else:
        poor = f["score"] > 1 - options.min_agreement
    if f.get("target_missed"):
        better = f.get("passing_bits")
        advice = (f"--target-bits {better:g} is predicted to keep it" if better else
                  "no budget below 8 bits is predicted to keep it")
        click.echo(f"warning: at --target-bits {options.target_bits:g} the plan is predicted below "
                   f"the fidelity level ({report.fidelity_line()[20:]}); {advice}", err=True)
    elif poor:
        advice = ("a higher --target-bits" if options.method == "auto" else
                  "--target-bits (higher) or --method auto")
        click.echo(f"warning: poor predicted fidelity ({report.fidelity_line()[20:]}); trade size "
                   f"back for accuracy with {advice}", err=True)


def _options(opts: dict) -> ConvertOptions:
    """ConvertOptions from the parsed options of conversion_options (the plan read from its file)."""
    names = {f.name for f in fields(ConvertOptions)}
    values = {k: v for k, v in opts.items() if k in names}
    values["plan"] = read_plan(values.get("plan"))
    values["input_range"] = _parse_range(values.get("input_range"))
    values["output_kinds"] = parse_output_kinds(values.get("output_kinds") or ())
    shapes = values.get("input_shapes")
    values["input_shapes"] = parse_input_shapes(shapes) if shapes else {}
    return ConvertOptions(**values)


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise OptionsError(f"--input-range expects LOW,HIGH such as 0,1; got {text!r}") from None
    return lo, hi


@main.command(epilog=EXIT_HELP)
@click.argument("model", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Where to write the quantized model (written atomically; never the input). "
                   "With several models or a directory: a folder, which gets <name>.q.onnx for "
                   "each and summary.json.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Several models: convert this many at once, each in its own process.")
@conversion_options
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="Also write the full report as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def convert(ctx: click.Context, model: tuple[str, ...], output: str, jobs: int,
            report_file: str | None, as_json: bool, quiet: bool, **opts) -> None:
    """Quantize MODEL (float ONNX) into a mixed-precision QDQ model.

    By default weight-only: activations stay float. Run the result with the ONNX Runtime session
    config entry session.disable_quant_qdq=1 so the weights are dequantized once at load and the
    model runs at float speed. With --activations int8, activations are quantized too (ranges
    from synthetic inputs, no data) and ONNX Runtime, with its default session options, runs the
    model on integer kernels: faster than float on CPU. Several MODELs, or a folder of them,
    convert into the folder -o names; one failure never stops the others, and the exit code is
    that of the first failure.
    """
    from .api import convert_file

    if len(model) > 1 or Path(model[0]).is_dir():
        _run(ctx.obj["debug"], lambda: _convert_many(list(model), output, jobs, quiet, as_json,
                                                     opts))
        return
    model = model[0]

    def go() -> None:
        options = _options(opts)
        progress = Progress(quiet)
        report = convert_file(model, output, options, progress=progress)
        progress.done()
        warn_if_poor(report, options)
        if report_file:
            Path(report_file).write_text(report.to_json())
        if as_json:
            click.echo(report.to_json())
        else:
            click.echo(report.format())
            click.echo(f"wrote {output} in {report.seconds:.2f}s")

    _run(ctx.obj["debug"], go)


def _convert_many(models: list[str], output: str, jobs: int, quiet: bool, as_json: bool,
                  opts: dict) -> None:
    from .batch import collect_sources, convert_many, write_summary

    options = _options(opts)
    out = Path(output)
    if (out.exists() and not out.is_dir()) or out.suffix == ".onnx":
        raise OptionsError(f"{out}: several models (or a folder of them) convert into a folder: "
                           "give a folder for -o, not a model file name")
    sources = collect_sources(models)
    progress = Progress(quiet)
    results = convert_many(sources, out, options, jobs, progress)
    progress.done()
    table = write_summary(results, out)
    click.echo((out / "summary.json").read_text() if as_json else table)
    failed = [r for r in results if not r.ok]
    if failed:
        sys.exit(failed[0].exit_code)


@main.command(epilog=EXIT_HELP)
@click.argument("model", type=click.Path(dir_okay=True))
@conversion_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def inspect(ctx: click.Context, model: str, as_json: bool, quiet: bool, **opts) -> None:
    """Show the plan without writing anything: pairs, each layer left alone and why, each layer's
    bits, grid and correction, and the size the conversion would have (counted the same way)."""
    from .api import inspect_model

    def go() -> None:
        progress = Progress(quiet)
        report = inspect_model(model, _options(opts), progress=progress)
        progress.done()
        click.echo(report.to_json() if as_json else report.format())

    _run(ctx.obj["debug"], go)


@main.command(epilog=EXIT_HELP)
@click.argument("float_model", type=click.Path(dir_okay=True))
@click.argument("quant_model", type=click.Path(dir_okay=True))
@click.option("--inputs", type=click.Path(dir_okay=False),
              help=".npz file with one array per model input (by input name); an integer "
                   "'label' or 'labels' array beside them adds both models' accuracy. Default: "
                   "seeded standard-normal inputs shaped from the model.")
@click.option("--provider", default="cpu", show_default=True,
              help="ONNX Runtime provider: cpu, cuda, or a full provider name.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True,
              help="Batch size of random inputs (replaces a symbolic first dimension).")
@click.option("--shape", "shapes", multiple=True,
              help="Shape of an input with symbolic dimensions, e.g. --shape input=1x3x224x224.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True,
              help="Timed runs per model; latency is their median.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="ONNX Runtime intra-op threads for both models.")
@click.option("--disable-quant-qdq/--keep-qdq", default=None,
              help="Fold DequantizeLinear on weights at load (session.disable_quant_qdq=1), as a "
                   "deployment of a weight-only model should, or keep the Q/DQ nodes for ONNX "
                   "Runtime to fuse into integer kernels. Default: fold for weight-only models, "
                   "keep for models with quantized activations (--activations int8).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def validate(ctx: click.Context, float_model: str, quant_model: str, inputs: str | None,
             provider: str, batch: int, shapes: tuple[str, ...], seed: int, repeats: int,
             threads: int, disable_quant_qdq: bool | None, as_json: bool) -> None:
    """Run FLOAT_MODEL and QUANT_MODEL on the same inputs; print per-output cosine similarity,
    SQNR, errors and top-1 agreement between the two models (with labels, also both models'
    accuracy), file sizes and the latency ratio."""
    from .validate import format_table, parse_shape_option
    from .validate import validate as run_validate

    def go() -> None:
        result = run_validate(
            float_model, quant_model, inputs=inputs, provider=provider, batch=batch, seed=seed,
            repeats=repeats, threads=threads, shapes=parse_shape_option(shapes) if shapes else None,
            disable_quant_qdq=disable_quant_qdq)
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_table(result))

    _run(ctx.obj["debug"], go)


if __name__ == "__main__":
    main()
