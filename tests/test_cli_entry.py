"""What a new user types first: `cfe --version` alone, and `cfe --help` listing commands in task order."""

from __future__ import annotations

import re
import subprocess
import sys

from typer.testing import CliRunner

from cfe_cli import __version__
from cfe_cli.cli import COMMAND_ORDER, app

runner = CliRunner()


def test_version_alone_exits_zero():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"cfe {__version__}"
    # as a real process too: Click's "Missing command" check must not come first
    p = subprocess.run([sys.executable, "-m", "cfe_cli", "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == f"cfe {__version__}", p.stderr
    r = runner.invoke(app, ["--version", "models"])
    assert r.exit_code == 0 and r.stdout.strip() == f"cfe {__version__}"


def test_help_lists_commands_in_task_order():
    r = runner.invoke(app, ["--help"], terminal_width=200)
    assert r.exit_code == 0
    listed = re.findall(r"^\W*([a-z][a-z-]+)\s{2,}\S", r.stdout, flags=re.M)
    names = [n for n in listed if n in app_commands()]
    assert names == [c for c in COMMAND_ORDER if c in app_commands()]
    assert names[:7] == ["models", "datasets", "import-model", "predict", "explain", "animate", "evaluate"]
    assert names[-2:] == ["train-clf", "train-gen"]


def app_commands() -> set[str]:
    import typer.main

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
