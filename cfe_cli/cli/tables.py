"""Tables that fit the terminal: columns are abbreviated or dropped (and the legend says so), never cut to "m…".

Rich shrinks a table wider than the console by truncating its cells; a header cut to its first letter
tells the reader nothing. :func:`fit_table` instead rebuilds the table with fewer columns, least
important first, until it fits; ``wide`` keeps them all (the terminal then wraps the lines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def table_width(console: Console, table: Table) -> int:
    """The width ``table`` needs to show every cell unshortened."""
    wide = console.options.update_width(100_000)  # Rich clamps a measurement to the options' width
    return Measurement.get(console, wide, table).maximum


def fit_table(console: Console, build: Callable[[Sequence[str]], Table], columns: Sequence[str],
              drop_order: Sequence[str], wide: bool = False) -> tuple[Table, list[str]]:
    """The table ``build(shown)`` with as many ``columns`` as fit ``console.width``.

    Args:
        build: makes the table from the column keys to show (in ``columns`` order).
        drop_order: the keys that may go, first to go first; the others always stay.
        wide: keep every column.

    Returns:
        The table and the keys dropped (for the legend: "not shown at this width: …").
    """
    shown = list(columns)
    table = build(shown)
    dropped: list[str] = []
    if wide:
        return table, dropped
    for key in drop_order:
        if table_width(console, table) <= console.width:
            break
        if key in shown:
            shown.remove(key)
            dropped.append(key)
            table = build(shown)
    return table, dropped


def print_wide(console: Console, table: Table, wide: bool) -> None:
    """Print ``table``; with ``wide`` at its full width even past the terminal's (the terminal wraps)."""
    if not wide:
        console.print(table)
        return
    width = console.width
    console.width = max(width, table_width(console, table))  # Console.print(width=...) cannot exceed it
    try:
        console.print(table)
    finally:
        console.width = width
