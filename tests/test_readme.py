"""The README's quick start is what works: its first bash block names files that exist, and its
commands parse with the CLI as it is (convert runs for real; validate is parsed, its full run on
540 samples is too slow for the suite)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from dfmpc_onnx.cli import main

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands(containing: str = "") -> list[list[str]]:
    """The ``dfmpc-onnx`` commands of the README's first bash block (or the first that contains
    ``containing``), continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next((b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if containing in b), None)
    assert block, f"README has no bash block with {containing!r}"
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines()
            if line.startswith("dfmpc-onnx ")]


def _redirect(commands: list[list[str]], tmp_path: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for args in commands:
        for i, arg in enumerate(args):
            if arg.startswith("/tmp/"):  # where the README writes: redirected into tmp_path
                outputs.setdefault(arg, str(tmp_path / Path(arg).name))
                args[i] = outputs[arg]
            elif "/" in arg:
                assert (ROOT / arg).is_file(), f"README names {arg}, which is not in the repository"
    return outputs


def test_quick_start_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    commands = quick_start_commands()
    assert [c[0] for c in commands] == ["convert", "validate"]
    outputs = _redirect(commands, tmp_path)
    convert, validate = commands
    result = CliRunner().invoke(main, [*convert, "-q"])
    assert result.exit_code == 0, result.output
    assert all(Path(p).is_file() for p in outputs.values())
    group = main.make_context("dfmpc-onnx", list(validate[:1]), resilient_parsing=False)
    command = main.get_command(group, validate[0])
    ctx = command.make_context(validate[0], list(validate[1:]), parent=group)
    assert Path(ctx.params["inputs"]).is_file() and Path(ctx.params["quant_model"]).is_file()


def test_int8_activation_example_runs_and_validate_keeps_the_qdq(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    commands = quick_start_commands("--activations int8")
    assert [c[0] for c in commands] == ["convert", "validate"]
    _redirect(commands, tmp_path)
    convert, validate = commands
    result = CliRunner().invoke(main, [*convert, "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*validate, "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "session.disable_quant_qdq=0" in result.output
