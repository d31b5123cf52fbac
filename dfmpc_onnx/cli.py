"""The `dfmpc-onnx` command: a thin click layer over dfmpc_onnx.api and dfmpc_onnx.validate."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from inspect import cleandoc as inspect_cleandoc
from pathlib import Path

import click

from dfmpc_onnx.measure.output_kinds import parse_output_kinds
from dfmpc_onnx.measure.synthetic import parse_input_shapes

from .errors import EXIT_CODES, DfmpcError, OptionsError, ValidationFailed
from .options import ConvertOptions

INPUT_SHAPE_HELP = ("Shape of a model input, repeatable: x=1,3,224,224, x=1x3x224x224 or "
                    "Polygraphy's x:[1,3,224,224]; N or ? keeps the model's own dimension (axis "
                    "0: the batch). An unknown name is an error.")
EXIT_HELP = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."


class Progress:
    """Progress on stderr: a live line on a terminal; in a log, a line when something changes.

    In a log (stderr not a terminal) the first line comes only after FIRST_LINE_S of work, so a
    short run, or one that stops early on an error, prints no progress at all; after that a line
    when the step changes (at most one per EVERY_S: steps that pass quicker are skipped), and an
    unchanged step again only every STILL_S, with how long it has run ("still"). A pass can run
    far longer than that without calling back (VGG-19's quantize pass: ~10 s), so a daemon thread
    ticks on time; it stops at ``done()``, when stderr is swapped for another stream (the run it
    belonged to is over: a test runner restored it), or when the thread that started it has
    ended. ``verbose``: every step as a line, at once, and each pass's time when it ends.
    ``log``: a file that gets every step and pass time, whatever ``quiet`` says.
    ``clock`` and ``tty`` exist for tests; ``heartbeat=False`` leaves the thread out.
    """

    FIRST_LINE_S = 2.0
    EVERY_S = 4.0
    STILL_S = 60.0
    POLL_S = 0.25

    def __init__(self, quiet: bool, *, verbose: bool = False, log=None,
                 clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, heartbeat: bool = True) -> None:
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.log = log
        self.tty = (sys.stderr.isatty() if tty is None else tty) and not self.verbose
        self.clock = clock
        self.start = clock()
        self.next_line = self.start + (0.0 if self.verbose else self.FIRST_LINE_S)
        self.message: str | None = None
        self.since = self.start  # when the current message came
        self.printed = False  # whether the current message has had its line
        self.last_line = self.start
        self.current_pass: tuple[str, float] | None = None
        self.heartbeat = heartbeat and not quiet and not self.tty and not self.verbose
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamp(self, now: float, text: str) -> str:
        return f"[{now - self.start:6.1f}s] {text}"

    def _record(self, now: float, text: str) -> None:
        """A line for --verbose (stderr) and --log-file."""
        if self.log is not None:
            self.log.write(self._stamp(now, text) + "\n")
            self.log.flush()
        if self.verbose:
            click.echo(self._stamp(now, text), err=True)

    def _end_pass(self, now: float) -> None:
        if self.current_pass is not None:
            name, began = self.current_pass
            self._record(now, f"{name} took {now - began:.2f}s")
            self.current_pass = None

    def __call__(self, message: str) -> None:
        now = self.clock()
        if self.verbose or self.log is not None:
            with self._lock:
                if message.startswith("pass "):
                    self._end_pass(now)
                    self.current_pass = (message, now)
                self._record(now, message)
        if self.quiet or self.verbose:
            return
        if self.tty:
            click.echo(f"\r\033[K{message}", nl=False, err=True)
            return
        with self._lock:
            if message != self.message:
                self.message, self.since, self.printed = message, now, False
        self.tick()
        if self.heartbeat and self._thread is None:
            self._thread = threading.Thread(target=self._beat, args=(sys.stderr,
                                            threading.current_thread()),
                                            name="dfmpc-progress", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        """Print the current step if a line is due (the heartbeat calls this on time)."""
        with self._lock:
            now = self.clock()
            if self.message is None or self._stop.is_set() or now < self.next_line:
                return
            if not self.printed:
                click.echo(self._stamp(now, self.message), err=True)
            elif now - self.last_line >= self.STILL_S:
                click.echo(self._stamp(now, f"{self.message} (still, {now - self.since:.0f}s)"),
                           err=True)
            else:
                return
            self.printed, self.last_line = True, now
            self.next_line = now + self.EVERY_S

    def _beat(self, stream: object, owner: threading.Thread) -> None:
        while not self._stop.wait(self.POLL_S):
            if sys.stderr is not stream or not owner.is_alive():
                return
            self.tick()

    def done(self) -> None:
        self._stop.set()
        with self._lock:
            self._end_pass(self.clock())
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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT, so every ``finally``
    runs: the working folder (weight store, cached activations) and half-written files go."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _on_sigterm():
    """Install the SIGTERM handler (main thread only); returns what to restore, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _run(debug: bool, fn, log=None) -> None:
    """Turn our errors into one line on stderr and an exit code; tracebacks only with --debug.
    SIGINT exits 130 and SIGTERM 143 (128 + the signal, as shells report them), both after the
    working files are removed."""
    previous = _on_sigterm()

    def say(line: str) -> None:
        click.echo(line, err=True)
        if log is not None:
            log.write(line + "\n")
            log.flush()

    try:
        fn()
    except DfmpcError as exc:
        if debug:
            raise
        say(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        say("interrupted (SIGINT); nothing was written, working files removed")
        sys.exit(130)
    except Terminated:
        say("terminated (SIGTERM); nothing was written, working files removed")
        sys.exit(143)
    except Exception as exc:  # noqa: BLE001 - last line of defence, see --debug
        if debug:
            raise
        say(f"error: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback and please report it)")
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)["debug"] = True


def logging_options(fn):
    """-q, -v and --log-file, shared by convert and inspect."""
    fn = click.option("--log-file", type=click.Path(dir_okay=False),
                      help="Also write every step, each pass's time, warnings and the report "
                           "to this file (appended).")(fn)
    fn = click.option("-v", "--verbose", is_flag=True,
                      help="Every step as a line, and each pass's time.")(fn)
    return click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")(fn)


def _open_log(path: str | None):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the command
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot write ({exc.strerror})",
                                 param_hint="--log-file") from None


def debug_option(fn):
    """--debug after the subcommand too (``convert --debug ...``), as every error line suggests."""
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                        help="Show full tracebacks instead of one-line errors.")(fn)


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


# Option groups of --help (Polygraphy's argument groups); parameter names, in order.
OPTION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Input shape and range", ("input_shapes", "shapes", "old_shapes", "input_range", "input_mean",
                               "input_std", "inputs", "batch", "seed")),
    ("Plan and budget", ("method", "target_bits", "min_agreement", "floor_factor", "low_bits", "high_bits",
                         "plan", "protect_first_last", "pair_through", "fast", "fidelity_samples",
                         "synthetic", "output_kinds")),
    ("Grids and corrections", ("quantizer", "granularity", "correction", "bias_correction",
                               "propagated_stats", "equalize", "lam", "lambda1", "lambda2")),
    ("Activations", ("activations", "activation_type", "activation_clip", "activation_headroom")),
    ("Checks", ("atol", "rtol", "min_cosine")),
    ("Output format", ("output", "format", "target_opset", "jobs", "report_file", "as_json")),
    ("Running", ("provider", "repeats", "threads", "disable_quant_qdq")),
    ("Logging", ("quiet", "verbose", "log_file", "debug", "help_all", "help")),
)
# What plain --help shows; --help-all shows every option with its full text.
BASIC_OPTIONS = frozenset((
    "input_shapes", "shapes", "input_range", "inputs", "batch", "method", "target_bits", "min_agreement",
    "low_bits", "high_bits", "plan", "fast", "activations", "atol", "rtol", "min_cosine", "output",
    "format", "target_opset", "jobs", "report_file", "as_json", "provider", "quiet", "verbose",
    "log_file", "debug", "help_all", "help"))
SHORT_HELP_CHARS = 62
# One line each for plain --help (the full texts, from options.py, are under --help-all).
SHORT_HELP = {
    "input_shapes": "input shape: x=N,3,224,224 or x:[1,3,224,224]",
    "input_range": "assumed input range, e.g. 0,1 or 0,255 (raw images)",
    "method": "auto: measured per-layer plan (default); pairs; paper",
    "target_bits": "stored bits per weight the plan may use, e.g. 4",
    "min_agreement": "predicted top-1 agreement to keep  [default: 0.99]",
    "low_bits": "fixed plan: bits of each pair's first layer (2)",
    "high_bits": "fixed plan: bits of every other layer (8)",
    "plan": "JSON file: bits/grid per layer by node name",
    "fast": "plan in seconds: 4-bit trials only, 4 and 8 bits",
    "activations": "int8: activations too, for integer kernels",
    "output": "the output model (a folder for several models)",
    "format": "packed INT2/INT4 (smallest) or int8 containers",
    "target_opset": "newest opset your runtime runs (21: ORT 1.18-1.20)",
    "jobs": "several models: convert this many at once",
    "report_file": "also write the report as JSON to FILE",
    "as_json": "print the report as JSON",
    "log_file": "also write steps, pass times and the report here",
    "quiet": "no progress on stderr",
    "verbose": "every step as a line, and each pass's time",
    "debug": "full tracebacks instead of one-line errors",
    "help_all": "every option, with its full explanation",
}
SHORT_HELP_VALIDATE = {
    "inputs": ".npz of real inputs (a 'label' array adds accuracy)",
    "shapes": "input shape: x=N,3,224,224 or x:[1,3,224,224]",
    "batch": "random samples  [default: 8]",
    "input_shapes": "input shape: x=N,3,224,224 or x:[1,3,224,224]",
    "min_agreement": "fail (exit 8) below this top-1 agreement",
    "atol": "fail (exit 8) where |err| > atol + rtol*|float|",
    "rtol": "see --atol",
    "min_cosine": "fail (exit 8) below this cosine",
    "provider": "cpu, cuda, or a provider name  [default: cpu]",
    "as_json": "print the results as JSON",
}
EXIT_SHORT = ("Exit codes: 0 ok; 1 bug; 2 options; 3 unreadable model; 4 unsupported; 5 output; "
              "6 check; 7 pass; 8 validate check failed; 130/143 SIGINT/SIGTERM (README).")


def _short(text: str) -> str:
    """The first clause of a help text, cut to one line of SHORT_HELP_CHARS."""
    for stop in (". ", "; ", " ("):
        head, found, _ = text.partition(stop)
        if found and len(head) <= SHORT_HELP_CHARS:
            text = head
            break
    text = text.rstrip(".")
    return text if len(text) <= SHORT_HELP_CHARS else text[:SHORT_HELP_CHARS - 3].rstrip() + "..."


def _show_all(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        ctx.meta["dfmpc_help_all"] = True
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


class GroupedHelp(click.Command):
    """--help in groups, one short line per common option; --help-all: every option in full."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--help-all"], is_flag=True, expose_value=False,
                                        is_eager=True, callback=_show_all,
                                        help="Every option, with its full explanation."))

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        text = self.help or ""
        if not ctx.meta.get("dfmpc_help_all"):
            text = text.split("\n\n")[0]  # the first paragraph; --help-all: all of it
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(inspect_cleandoc(text))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        full = bool(ctx.meta.get("dfmpc_help_all"))
        params = {p.name: p for p in self.get_params(ctx) if isinstance(p, click.Option)}
        base = [(t, tuple(n for n in names if not (self.name == "validate" and t != "Checks"
                                                    and n == "min_agreement")))
                for t, names in OPTION_GROUPS]
        if self.name == "validate":  # there --min-agreement is a check, not a plan's target
            base = [(t, ("min_agreement", *names) if t == "Checks" else names) for t, names in base]
        grouped = {n for _, names in base for n in names}
        groups = [*base, ("Other", tuple(n for n in params if n not in grouped))]
        hidden = 0
        for title, names in groups:
            rows = []
            for name in names:
                p = params.get(name)
                if p is None or p.hidden:
                    continue
                if not full and name not in BASIC_OPTIONS:
                    hidden += 1
                    continue
                record = p.get_help_record(ctx)
                if record and not full:
                    short = SHORT_HELP_VALIDATE if self.name == "validate" else SHORT_HELP
                    record = (record[0], short.get(name) or _short(record[1]))
                if record:
                    rows.append(record)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows, col_max=26)
        if hidden:
            formatter.write_paragraph()
            formatter.write_text(f"{hidden} more options, and each option in full: --help-all.")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(EXIT_HELP if ctx.meta.get("dfmpc_help_all") else EXIT_SHORT)


@click.group(cls=OneLineErrors, epilog=EXIT_SHORT,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="dfmpc-onnx")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Data-free mixed-precision quantization of ONNX models (DF-MPC).

    By default each layer's bits (2, 4 or 8), grid and bias correction are chosen by measuring,
    on seeded synthetic inputs, what each choice does to the network's outputs: the fewest
    stored bits that keep the predicted top-1 agreement (--min-agreement), or a size you give
    (--target-bits). No data, calibration set or fine-tuning is used. --method pairs and paper
    are fixed plans (the DF-MPC paper's: --method paper).

    \b
    Typical use:
      dfmpc-onnx inspect model.onnx                 # the plan, and why layers stay float
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
                            help=INPUT_SHAPE_HELP)
    if f.name == "output_kinds":
        return click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
                            help=help_text)
    if kind.startswith("bool"):
        return click.option(f"{flag}/--no-{flag[2:]}", default=f.default, help=help_text,
                            show_default=f.default is not None)
    if "choices" in f.metadata:
        return click.option(flag, type=click.Choice(f.metadata["choices"]), default=f.default,
                            help=help_text, show_default=f.default is not None)
    if f.name == "target_opset":
        return click.option(flag, type=int, default=None, metavar="N", help=help_text)
    if f.name in ("low_bits", "high_bits"):
        return click.option(flag, type=click.IntRange(2, 8), default=None, metavar="BITS",
                            help=help_text)
    if f.name == "target_bits":
        return click.option(flag, type=float, default=None, metavar="BITS", help=help_text)
    if f.name == "min_agreement":
        return click.option(flag, type=float, default=f.default, metavar="FRACTION",
                            help=help_text, show_default=True)
    if kind == "int":
        return click.option(flag, type=click.IntRange(0), default=f.default, help=help_text,
                            show_default=True)
    return click.option(flag, type=float, default=f.default, help=help_text,
                        show_default=f.default is not None)


def fidelity_warning(report, options: ConvertOptions) -> str | None:
    """The warning line earned by what was written, or None.

    The threshold is --min-agreement: predicted top-1 agreement below it (for outputs that are
    not class scores, or a model that gives every synthetic input one class: relative error of
    the outputs' input-dependent part above 1 minus it). No warning where the user has nothing
    to trade back: the default plan (--method auto without --target-bits) was chosen to meet that
    threshold, or at least the 8-bit plan's own fidelity, else it is 8 bits everywhere; nor where
    every quantized layer is already at the widest bits. The advice names only what was not done.
    """
    f = report.fidelity
    if not f:
        return None
    if f.get("single_class") and f.get("centered_error") == float("inf"):
        return ("warning: fidelity not predicted: the float model's outputs do not vary over "
                "the synthetic inputs; check the result with `dfmpc-onnx validate` on real inputs")
    if options.method == "auto" and options.target_bits is None:
        return None
    widest = options.widest_bits
    if not any(lr.bits is not None and lr.bits < widest for lr in report.layers):
        return None
    agree = f.get("top1_agreement")
    if f.get("single_class"):  # agreement says nothing there: the outputs' own error does
        poor = f["centered_error"] > 1 - options.min_agreement
    elif agree is not None:
        poor = agree < options.min_agreement
    else:
        poor = f["score"] > 1 - options.min_agreement
    if f.get("target_missed"):  # the plan at the budget asked for misses the level
        better = f.get("passing_bits")
        advice = (f"--target-bits {better:g} is predicted to keep it" if better else
                  "no budget below 8 bits is predicted to keep it")
        return (f"warning: at --target-bits {options.target_bits:g} the plan is predicted below "
                f"the fidelity level ({report.fidelity_line()[20:]}; --min-agreement "
                f"{options.min_agreement:g}); {advice}")
    if not poor:
        return None
    if options.target_bits is not None:
        advice = (f"raise --target-bits (now {options.target_bits:g}), or leave it out: the "
                  "default plan keeps --min-agreement")
    else:
        advice = (f"raise --low-bits/--high-bits (now {options.low_bits}/{options.high_bits}), "
                  "or leave --method and the bits out: the default measured plan keeps "
                  "--min-agreement")
    return (f"warning: poor predicted fidelity ({report.fidelity_line()[20:]}; below "
            f"--min-agreement {options.min_agreement:g}); {advice}")


def options_from_params(opts: dict) -> ConvertOptions:
    """ConvertOptions from the parsed options of conversion_options (the plan read from its file):
    what ``dfmpc-onnx convert ARGS`` converts with, for a caller that parses the same arguments
    (``main.commands['convert'].make_context('convert', args).params``)."""
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


@main.command(cls=GroupedHelp)
@click.argument("model", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Where to write the quantized model (written atomically; never the input). "
                   "With several models or a directory: a folder, which gets <name>.q.onnx for "
                   "each and summary.json.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True, metavar="N",
              help="Several models: convert this many at once, each in its own process.")
@conversion_options
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="Also write the full report as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@logging_options
@debug_option
@click.pass_context
def convert(ctx: click.Context, model: tuple[str, ...], output: str, jobs: int,
            report_file: str | None, as_json: bool, quiet: bool, verbose: bool,
            log_file: str | None, **opts) -> None:
    """Quantize MODEL (float ONNX) into a mixed-precision QDQ model. Weight-only by default:
    run it with the ONNX Runtime session option session.disable_quant_qdq=1 for float speed.

    With --activations int8, activations are quantized too (ranges from synthetic inputs, no
    data) and ONNX Runtime, with its default session options, runs the model on integer
    kernels: faster than float on CPU. Several MODELs, or a folder of them, convert into the
    folder -o names; one failure never stops the others, and the exit code is that of the first
    failure.
    """
    from .api import convert_file

    strays = [m for m in model if "=" in m and not Path(m).exists()]
    if strays:  # `--input-shape a=1,2 b=3` hands b=3 to MODEL; say so rather than a folder error
        _run(ctx.obj["debug"], lambda: _stray_values(strays))
    if len(model) > 1 or Path(model[0]).is_dir():
        _run(ctx.obj["debug"], lambda: _convert_many(list(model), output, jobs, quiet, as_json,
                                                     opts))
        return
    model = model[0]
    log = _open_log(log_file)

    def go() -> None:
        options = options_from_params(opts)
        progress = Progress(quiet, verbose=verbose, log=log)
        report = convert_file(model, output, options, progress=progress)
        progress.done()
        line = fidelity_warning(report, options)
        if line:
            click.echo(line, err=True)
        if log is not None:
            log.write("\n".join(([line] if line else []) + [report.format(),
                                 f"wrote {output} in {report.seconds:.2f}s"]) + "\n")
        if report_file:
            Path(report_file).write_text(report.to_json())
        if as_json:
            click.echo(report.to_json())
        else:
            click.echo(report.format())
            click.echo(f"wrote {output} in {report.seconds:.2f}s")

    try:
        _run(ctx.obj["debug"], go, log)
    finally:
        if log is not None:
            log.close()


def _stray_values(strays: list[str]) -> None:
    raise OptionsError(f"{', '.join(map(repr, strays))}: no such model file; an option takes one "
                       "value, so give each input's shape with its own --input-shape (or several "
                       "in one value: --input-shape a=1,3,32,32,b=1,10)")


def _convert_many(models: list[str], output: str, jobs: int, quiet: bool, as_json: bool,
                  opts: dict) -> None:
    from .batch import collect_sources, convert_many, write_summary

    options = options_from_params(opts)
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


@main.command(cls=GroupedHelp)
@click.argument("model", type=click.Path(dir_okay=True))
@conversion_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@logging_options
@debug_option
@click.pass_context
def inspect(ctx: click.Context, model: str, as_json: bool, quiet: bool, verbose: bool,
            log_file: str | None, **opts) -> None:
    """Show the plan without writing anything: pairs, each layer left alone and why, each layer's
    bits, grid and correction, and the size the conversion would have (counted the same way)."""
    from .api import inspect_model

    log = _open_log(log_file)

    def go() -> None:
        progress = Progress(quiet, verbose=verbose, log=log)
        report = inspect_model(model, options_from_params(opts), progress=progress)
        progress.done()
        if log is not None:
            log.write(report.format() + "\n")
        click.echo(report.to_json() if as_json else report.format())

    try:
        _run(ctx.obj["debug"], go, log)
    finally:
        if log is not None:
            log.close()


@main.command(cls=GroupedHelp)
@click.argument("float_model", type=click.Path(dir_okay=True))
@click.argument("quant_model", type=click.Path(dir_okay=True))
@click.option("--inputs", type=click.Path(dir_okay=False),
              help=".npz file with one array per model input (by input name); an integer "
                   "'label' or 'labels' array beside them adds both models' accuracy. Default: "
                   "seeded standard-normal inputs shaped from the model (symbolic sides set by "
                   "the rule convert measures with, said in a note; --input-shape overrides).")
@click.option("--provider", default="cpu", show_default=True,
              help="ONNX Runtime provider: cpu, cuda, or a full provider name.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, metavar="N",
              help="Random samples (a symbolic batch becomes this; a model with a fixed batch "
                   "runs them in turn).")
@click.option("--input-shape", "shapes", multiple=True, metavar="NAME=DIMS",
              help=INPUT_SHAPE_HELP)
@click.option("--shape", "old_shapes", multiple=True, hidden=True,
              help="Deprecated spelling of --input-shape.")
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
@click.option("--atol", type=click.FloatRange(0), metavar="X", default=None,
              help="Fail (exit 8) if any output element differs by more than atol + rtol*|float| "
                   "(Polygraphy's rule).")
@click.option("--rtol", type=click.FloatRange(0), metavar="X", default=None, help="See --atol.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), metavar="FRACTION", default=None,
              help="Fail (exit 8) if the top-1 agreement of a (batch, classes) output is lower.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), metavar="X", default=None,
              help="Fail (exit 8) if the cosine similarity of an output is lower.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@debug_option
@click.pass_context
def validate(ctx: click.Context, float_model: str, quant_model: str, inputs: str | None,
             provider: str, batch: int, shapes: tuple[str, ...], old_shapes: tuple[str, ...],
             seed: int, repeats: int, threads: int, disable_quant_qdq: bool | None,
             atol: float | None, rtol: float | None, min_agreement: float | None,
             min_cosine: float | None, as_json: bool) -> None:
    """Run FLOAT_MODEL and QUANT_MODEL on the same inputs; print per-output cosine similarity,
    SQNR, errors and top-1 agreement between the two models (with labels, also both models'
    accuracy), file sizes and the latency ratio."""
    from .validate import format_table, parse_shape_option
    from .validate import validate as run_validate

    if old_shapes:
        click.echo("warning: --shape is deprecated; use --input-shape (the same in convert and "
                   "inspect)", err=True)
        shapes = tuple(shapes) + tuple(old_shapes)

    def go() -> None:
        result = run_validate(
            float_model, quant_model, inputs=inputs, provider=provider, batch=batch, seed=seed,
            repeats=repeats, threads=threads, shapes=parse_shape_option(shapes) if shapes else None,
            disable_quant_qdq=disable_quant_qdq, atol=atol, rtol=rtol,
            min_agreement=min_agreement, min_cosine=min_cosine)
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_table(result))
        if result.failures:
            raise ValidationFailed(f"{len(result.failures)} check(s) failed: "
                                   + "; ".join(result.failures))

    _run(ctx.obj["debug"], go)


if __name__ == "__main__":
    main()
