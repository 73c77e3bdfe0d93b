"""What every ``budgetgraph`` command shares: exit codes and how a refusal is reported.

Exit codes: 0 done, 3 paused for review, 2 bad input or configuration,
1 any other failure.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import typer
from rich.console import Console

EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PAUSED = 0, 1, 2, 3

err = Console(stderr=True)


def fail(message: str, as_json: bool, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Report ``message`` (on stderr, and as a JSON error document with ``--json``) and exit.

    Raises:
        typer.Exit: Always, with ``code`` (bad input by default).
    """
    if as_json:
        kind = "BadInput" if code == EXIT_BAD_INPUT else "Failed"
        sys.stdout.write(json.dumps({"status": "error", "error": {"type": kind, "message": message}}) + "\n")
    err.print(f"[bold red]Error:[/] {message}", highlight=False)
    raise typer.Exit(code)
