"""What every ``budgetgraph`` command shares: its options, exit codes and how a refusal is reported.

Each option that is also a setting names its ``BUDGETGRAPH_*`` variable
(``envvar=``, shown in ``--help``); the option wins over the variable, and
:func:`settings_for` checks both through :class:`~budgetgraph.settings.Settings`.
Options used by several commands are declared here once.

Exit codes: 0 done, 3 paused for review, 2 bad input or configuration,
1 any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from budgetgraph.budgets.errors import ConfigError
from budgetgraph.settings import Settings, env_name, load_settings

EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PAUSED, EXIT_WAITING = 0, 1, 2, 3, 4

err = Console(stderr=True)

PIPED_WIDTH = 200
"""Columns of output that goes to a pipe or a file (a terminal's own width is used otherwise)."""


def stdout_console() -> Console:
    """The console commands print to: a terminal's width, or, piped, ``COLUMNS`` else :data:`PIPED_WIDTH`.

    Rich falls back to 80 columns when stdout is not a terminal, which cuts
    figures in wide tables (``0.0000…``) in CI logs; piped output is wider.
    """
    import os
    import sys

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPED_WIDTH)


ModelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--models", envvar=env_name("models"), help="models.yaml to use (default: the packaged one)."
    ),
]
BudgetsOpt = Annotated[
    Path | None,
    typer.Option(
        "--budgets", envvar=env_name("budgets"), help="budgets.yaml to use (default: the packaged one)."
    ),
]
CheckpointerOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpointer",
        envvar=env_name("checkpointer"),
        help="sqlite:///PATH, postgresql://... or memory: (default: .budgetgraph/checkpoints.sqlite).",
    ),
]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        envvar=env_name("ledger_url"),
        help="memory:, sqlite:///PATH or redis://... (default: .budgetgraph/ledger.sqlite).",
    ),
]
CacheOpt = Annotated[
    bool | None,
    typer.Option(
        "--cache/--no-cache",
        envvar=env_name("cache"),
        help="Turn the semantic cache on or off (default: budgets.yaml's `cache.enabled`).",
    ),
]
CacheStoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar=env_name("cache_url"),
        help="The cache store: disk, memory: or redis://... (default: budgets.yaml's `cache.store`).",
    ),
]
TenantOpt = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar=env_name("tenant"),
        help="Who pays for a new run; a resumed or edited run keeps its own (default: default).",
    ),
]
ThresholdOpt = Annotated[
    int, typer.Option("--review-threshold", help="Risk score (1-5) that pauses for review; 6 never does.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


def fail(message: str, as_json: bool, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Report ``message`` (on stderr, and as a JSON error document with ``--json``) and exit.

    Raises:
        typer.Exit: Always, with ``code`` (bad input by default).
    """
    if as_json:
        kind = "BadInput" if code == EXIT_BAD_INPUT else "Failed"
        sys.stdout.write(json.dumps({"status": "error", "error": {"type": kind, "message": message}}) + "\n")
    print_error(message)
    raise typer.Exit(code)


def print_error(message: object) -> None:
    """Print ``Error: message`` on stderr as one line: no markup read from it, control characters escaped."""
    from budgetgraph.graph.console import printable

    line = Text.assemble(("Error:", "bold red"), " ", printable(str(message)))
    err.print(line, highlight=False, soft_wrap=True)


def settings_for(as_json: bool, **given: Any) -> Settings:
    """The settings of one command: its options (``None``: not given) over the environment.

    Exits with code 2 and one line per problem when a value is invalid.
    """
    try:
        return load_settings(**given)
    except ConfigError as exc:
        fail(config_message(exc), as_json)


def config_message(exc: ConfigError) -> str:
    """A configuration error as the CLI prints it: one line for one problem."""
    if len(exc.problems) == 1:
        where = f"{exc.path}: " if exc.path and not exc.problems[0].startswith(str(exc.path)) else ""
        return f"{where}{exc.problems[0]}"
    return str(exc)


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DONE",
    "EXIT_FAILED",
    "EXIT_PAUSED",
    "EXIT_WAITING",
    "BudgetsOpt",
    "CacheOpt",
    "CacheStoreOpt",
    "CheckpointerOpt",
    "JsonOpt",
    "LedgerOpt",
    "ModelsOpt",
    "TenantOpt",
    "ThresholdOpt",
    "config_message",
    "err",
    "fail",
    "print_error",
    "settings_for",
    "stdout_console",
]
