"""A run's progress as it happens: each node starting and finishing, with what it spent.

The CLI streams the graph with :data:`STREAM_MODES`. LangGraph's ``tasks``
mode says when each node execution (a task) starts, and, when it ends, what
it wrote (its ``spend`` rows, :class:`~budgetgraph.budgets.ModelCall`: tiers,
models, tokens, USD), its error or its interrupts. The ``updates`` mode adds
the one thing ``tasks`` leaves out: on a resume, a node that finished before
the run stopped is announced but not run again, and only ``updates`` says so
(``__metadata__.cached``).

On a terminal the progress is a live table (:class:`rich.live.Live`);
otherwise it is one line per event, written and flushed at once, so a CI log
or ``2> file`` shows it as it happens::

    12:00:01 planner started
    12:00:03 planner done: economy gpt-4.1-nano, 1,234 tokens, 0.000412 USD, 1.52 s

Progress always goes to stderr: stdout keeps the report (or the ``--json``
document) alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal, Protocol

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Column, Table
from rich.text import Text

from budgetgraph.graph.console import printable
from budgetgraph.graph.report import spend_total

STREAM_MODES: tuple[Literal["tasks", "updates"], ...] = ("tasks", "updates")
"""The stream modes progress reads; pass them with ``version="v2"``."""

Outcome = Literal["done", "failed", "paused", "kept"]


@dataclass(frozen=True)
class NodeResult:
    """How one node execution ended, and what it spent.

    Attributes:
        node: The node.
        outcome: ``done``; ``failed``; ``paused`` (an interrupt: a review or a
            budget approval); or ``kept`` (it finished before the run stopped,
            so a resume does not run it again).
        models: Each ``tier model`` it called, once, in order (``local local-rules``
            for the local rules).
        tokens: Input and output tokens of its calls.
        cost_usd: What its calls cost (USD).
        calls: Its model calls and local steps.
        cache_hits: Those answered from the cache.
        seconds: From its start to its end, as the stream showed them.
        note: The error (on one line), what the pause waits for, the review's
            decision, or that the node found its inputs unchanged and reused its result.
    """

    node: str
    outcome: Outcome
    models: tuple[str, ...] = ()
    tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    note: str = ""


def node_result(payload: Mapping[str, Any], seconds: float) -> NodeResult:
    """Read a ``tasks`` stream result (LangGraph's ``TaskResultPayload``).

    Args:
        payload: ``{"name", "error", "interrupts", "result"}``; ``result`` maps
            each state key the node wrote to its value.
        seconds: How long the node ran.
    """
    node, result = str(payload["name"]), payload.get("result") or {}
    error = payload.get("error")
    if error is not None:
        note = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        return NodeResult(node, "failed", seconds=seconds, note=" ".join(note.split()))
    if payload.get("interrupts"):
        value = payload["interrupts"][0].get("value")
        kind = value.get("kind") if isinstance(value, Mapping) else None
        notes = {"budget": "waiting for a budget approval", "deferred": "waiting for its batch answer"}
        return NodeResult(node, "paused", seconds=seconds, note=notes.get(str(kind), "waiting for review"))
    calls = list(result.get("spend") or [])
    total = spend_total(calls)
    note = ""
    if any(run.get("reused") for run in result.get("node_runs") or []):
        note = "reused: its inputs are unchanged"
    elif isinstance(result.get("review"), Mapping):
        note = str(result["review"].get("decision", ""))
    return NodeResult(
        node,
        "done",
        models=tuple(dict.fromkeys(f"{c['tier']} {c['model']}" for c in calls)),
        tokens=total["input_tokens"] + total["output_tokens"],
        cost_usd=total["cost_usd"],
        calls=len(calls),
        cache_hits=sum(1 for c in calls if c["cache_hit"]),
        seconds=seconds,
        note=note,
    )


def started_line(node: str, at: datetime) -> str:
    """``12:00:01 planner started``."""
    return f"{at:%H:%M:%S} {node} started"


def finished_line(result: NodeResult, at: datetime) -> str:
    """One line for a node's end, control characters escaped.

    ``12:00:03 planner done: economy gpt-4.1-nano, 1,234 tokens, 0.000412 USD, 1.52 s``;
    ``12:00:04 coo failed after 0.41 s: APIError: ...``;
    ``12:00:05 review paused: waiting for review, 0.00 s``.
    """
    head = f"{at:%H:%M:%S} {result.node}"
    if result.outcome == "failed":
        return printable(f"{head} failed after {result.seconds:.2f} s: {result.note}")
    if result.outcome == "kept":
        return f"{head} kept: {result.note}"
    if result.outcome == "paused":
        return f"{head} paused: {result.note}, {result.seconds:.2f} s"
    parts = [result.note] if result.note else []
    parts += _spend_parts(result)
    parts.append(f"{result.seconds:.2f} s")
    return printable(f"{head} done: {', '.join(parts)}")


def _spend_parts(result: NodeResult) -> list[str]:
    if not result.calls:
        return ["no model call"]
    parts = [" + ".join(result.models), f"{result.tokens:,} tokens", f"{result.cost_usd:.6f} USD"]
    if result.cache_hits:
        parts.append(f"{result.cache_hits} from the cache")
    return parts


class ProgressView(Protocol):
    """Where progress is shown."""

    def started(self, task_id: str, node: str, at: datetime) -> None:
        """A node execution started."""

    def finished(self, task_id: str, result: NodeResult, at: datetime) -> None:
        """A node execution ended (done, failed, paused or kept)."""


class RunProgress:
    """Follows a run's stream parts and tells a view when each node starts and ends.

    Call it with every part of ``graph.stream(..., stream_mode=STREAM_MODES,
    version="v2")``; parts of other modes are ignored.
    """

    def __init__(
        self,
        view: ProgressView,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        """Show progress on ``view``; ``clock`` times nodes (seconds), ``now`` stamps events."""
        self.view = view
        self._clock = clock
        self._now = now
        self._running: dict[str, tuple[str, float]] = {}  # task id -> (node, start on the clock)

    def __call__(self, part: Mapping[str, Any]) -> None:
        """Show one stream part (``{"type", "ns", "data"}``)."""
        data = part["data"]
        if part["type"] == "tasks":
            if "triggers" in data:  # a start (TaskPayload); a result has no triggers
                self._running[data["id"]] = (data["name"], self._clock())
                self.view.started(data["id"], data["name"], self._now())
                return
            ended = self._clock()
            _, began = self._running.pop(data["id"], (data["name"], ended))
            self.view.finished(data["id"], node_result(data, ended - began), self._now())
        elif part["type"] == "updates" and (data.get("__metadata__") or {}).get("cached"):
            for node in data:
                task_id = next((t for t, (n, _) in self._running.items() if n == node), None)
                if task_id is not None:
                    del self._running[task_id]
                    kept = NodeResult(node, "kept", note="it finished before the run stopped; not run again")
                    self.view.finished(task_id, kept, self._now())


class LineView:
    """One line per event on a file (stderr, not a terminal), flushed at once."""

    def __init__(self, file: IO[str]) -> None:
        """Write to ``file``."""
        self.file = file

    def started(self, task_id: str, node: str, at: datetime) -> None:
        """Write ``12:00:01 planner started``."""
        self._write(started_line(node, at))

    def finished(self, task_id: str, result: NodeResult, at: datetime) -> None:
        """Write the node's end (:func:`finished_line`)."""
        self._write(finished_line(result, at))

    def _write(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()


_STYLES: dict[Outcome, str] = {"done": "green", "failed": "red", "paused": "yellow", "kept": "dim"}


@dataclass
class _Row:
    node: str
    began: float
    result: NodeResult | None = None


class LiveView:
    """A table of the run's node executions, redrawn by :class:`rich.live.Live`.

    A running node shows a spinner and its seconds so far; an ended one, its
    tiers and models, tokens, USD and seconds.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Time running nodes with ``clock`` (seconds)."""
        self.clock = clock
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()  # Live redraws from its own thread

    def started(self, task_id: str, node: str, at: datetime) -> None:
        """Add a running row."""
        with self._lock:
            self._rows[task_id] = _Row(node, self.clock())

    def finished(self, task_id: str, result: NodeResult, at: datetime) -> None:
        """Show how the node ended."""
        with self._lock:
            row = self._rows.setdefault(task_id, _Row(result.node, self.clock()))
            row.result = result

    def __rich__(self) -> Table:
        """The table as it stands now."""
        table = Table(
            "node",
            Column("state", no_wrap=True),
            Column("tier and model", overflow="fold"),
            Column("tokens", justify="right", no_wrap=True),
            Column("USD", justify="right", no_wrap=True),
            Column("seconds", justify="right", no_wrap=True),
            Column("note", overflow="fold"),
            title="Progress",
            title_justify="left",
        )
        with self._lock:
            rows = list(self._rows.values())
        for row in rows:
            table.add_row(*self._cells(row))
        return table

    def _cells(self, row: _Row) -> tuple[RenderableType, ...]:
        result = row.result
        if result is None:
            elapsed = f"{self.clock() - row.began:.1f}"
            return (row.node, Spinner("dots", text="running"), "", "", "", elapsed, "")
        spent = result.calls > 0
        note = result.note or ("no model call" if result.outcome == "done" and not spent else "")
        return (
            row.node,
            Text(result.outcome, style=_STYLES[result.outcome]),
            " + ".join(result.models),
            f"{result.tokens:,}" if spent else "",
            f"{result.cost_usd:.6f}" if spent else "",
            "" if result.outcome == "kept" else f"{result.seconds:.2f}",
            Text(printable(note)),
        )


@contextmanager
def show_progress(
    *, quiet: bool = False, console: Console | None = None
) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """Show a run's progress while the block streams it.

    Yields a function to call with each stream part (see :class:`RunProgress`).

    Args:
        quiet: Show nothing.
        console: Where to show it (default: stderr). A terminal gets a live
            table; anything else one line per event.
    """
    if quiet:
        yield lambda part: None
        return
    console = console or Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        yield RunProgress(LineView(console.file))
        return
    view = LiveView()
    with Live(view, console=console, refresh_per_second=4):
        yield RunProgress(view)


__all__ = [
    "STREAM_MODES",
    "LineView",
    "LiveView",
    "NodeResult",
    "ProgressView",
    "RunProgress",
    "finished_line",
    "node_result",
    "show_progress",
    "started_line",
]
