"""The spend ledger: reserve before a call, settle after, release on failure.

Backends, chosen by URL (``--ledger`` or ``BUDGETGRAPH_LEDGER_URL``):

- ``memory:``: an in-process SQLite database; nothing survives the process.
- ``sqlite:///PATH``: the embedded default (``.budgetgraph/ledger.sqlite``),
  shared by the processes of one machine, surviving restarts.
- ``redis://...``: shared by many processes and machines; every check and
  update is one Lua script, so it is atomic.

A reservation is checked against every cap that applies and recorded against
every scope in one atomic step, which is what keeps a cap from being
overshot when many runs in many processes spend at once.
"""

from __future__ import annotations

from budgetgraph.budgets.ledger.base import (
    HISTORY_KEPT,
    AlertCheck,
    Attempt,
    CallStart,
    Cap,
    Charge,
    Ledger,
    LedgerRecord,
    NotedAlert,
    Refusal,
    Reservation,
    ScopeTotals,
    open_ledger,
    scope_part,
)

__all__ = [
    "HISTORY_KEPT",
    "AlertCheck",
    "Attempt",
    "CallStart",
    "Cap",
    "Charge",
    "Ledger",
    "LedgerRecord",
    "NotedAlert",
    "Refusal",
    "Reservation",
    "ScopeTotals",
    "open_ledger",
    "scope_part",
]
