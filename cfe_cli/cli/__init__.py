"""The ``cfe`` command line: parsing, Rich output and exit codes only.

Each command validates its options, calls one :mod:`cfe_cli.api` function and prints a summary
with a legend. Commands live in :mod:`~cfe_cli.cli.info`, :mod:`~cfe_cli.cli.explain`,
:mod:`~cfe_cli.cli.report` and :mod:`~cfe_cli.cli.train`; :mod:`~cfe_cli.cli.app` holds the app and the shared options.
"""

from __future__ import annotations

from cfe_cli.cli import explain, info, own, report, train  # noqa: F401  (each registers its commands)
from cfe_cli.cli.app import COMMAND_ORDER, app, console, err_console

__all__ = ["COMMAND_ORDER", "app", "console", "err_console", "main"]


def main() -> None:
    app()
