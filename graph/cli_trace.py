"""``budgetgraph trace THREAD``: a run's spans from the local span store, as a waterfall.

Registered on the CLI as ``app.command(name="trace")(trace_command)``. Reads
``.budgetgraph/traces.sqlite`` (or ``--store`` / ``BUDGETGRAPH_TRACE_STORE``),
which every run writes unless ``OTEL_SDK_DISABLED=true``; no collector or
Jaeger is needed. A missing store is reported, never created.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from budgetgraph.graph.cli_common import JsonOpt, fail, settings_for, stdout_console
from budgetgraph.graph.console import print_whole
from budgetgraph.settings import env_name
from budgetgraph.tracing.store import SpanStore
from budgetgraph.tracing.view import SpanRow, TraceView, build_view, usd

BAR_WIDTH = 20
"""Characters of the waterfall column."""

_STYLES = {
    "run": "bold",
    "node": "cyan",
    "call": "blue",
    "chat": "green",
    "step": "dim",
    "tool": "magenta",
    "other": "dim",
}


def trace_command(
    thread: Annotated[str, typer.Argument(help="The run's thread.")],
    as_json: JsonOpt = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar=env_name("trace_store"),
            help="The span store's file (default: .budgetgraph/traces.sqlite).",
        ),
    ] = None,
) -> None:
    """Show a run's spans as a waterfall: duration, tokens and USD per span, and totals."""
    path = settings_for(as_json, trace_store=store).trace_store_path()
    if path is None:
        fail(f"The span store is off ({env_name('trace_store')}=off): give --store PATH.", as_json)
    if not path.is_file():
        fail(f"No spans for thread `{thread}`: {path} does not exist.", as_json)
    spans = SpanStore(path).spans(thread)
    if not spans:
        where = str(path) if path.exists() else f"{path} (it does not exist)"
        fail(
            f"No spans for thread `{thread}` in {where}. Runs record spans there unless "
            "OTEL_SDK_DISABLED=true.",
            as_json,
        )
        return
    view = build_view(thread, spans)
    if as_json:
        sys.stdout.write(json.dumps(view.to_json(), indent=2) + "\n")
    else:
        render_trace(stdout_console(), view)


def render_trace(console: Console, view: TraceView) -> None:
    """Print the waterfall table and the totals line.

    Each span's bar starts at its offset from the thread's first span and is
    as long as its duration, on one scale for the whole thread (a resumed run
    that came hours later sits at the right end).
    """
    span_ms = max(view.totals.duration_ms, 1e-6)
    table = Table(title=f"Trace of thread {view.thread_id}", show_footer=True, title_justify="left")
    table.add_column("span", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("waterfall", no_wrap=True, min_width=BAR_WIDTH)
    for heading in ("in tok", "out tok", "USD"):
        table.add_column(heading, justify="right", no_wrap=True)
    table.add_column("", min_width=11)
    for row in view.rows:
        table.add_row(
            Text("  " * row.depth + row.span.name, style=_STYLES[row.kind]),
            f"{row.duration_ms:,.1f}",
            _bar(row, span_ms),
            _int(row.input_tokens),
            _int(row.output_tokens),
            "" if row.cost_micro_usd is None else f"{usd(row.cost_micro_usd):.6f}",
            _note(row),
        )
    totals = view.totals
    table.columns[0].footer = "total (model calls)"
    table.columns[1].footer = f"{totals.duration_ms:,.1f}"
    table.columns[3].footer = str(totals.input_tokens)
    table.columns[4].footer = str(totals.output_tokens)
    table.columns[5].footer = f"{usd(totals.cost_micro_usd):.6f}"
    print_whole(console, table, table)
    console.print(
        f"{totals.runs} run span(s), {totals.calls} model call(s), {totals.tool_calls} tool call(s), "
        f"{totals.input_tokens + totals.output_tokens} tokens, {usd(totals.cost_micro_usd):.6f} USD. "
        f"Trace {', '.join(view.trace_ids)}",
        highlight=False,
    )


def _bar(row: SpanRow, span_ms: float) -> Text:
    start = min(int(row.offset_ms / span_ms * BAR_WIDTH), BAR_WIDTH - 1)
    length = max(1, round(row.duration_ms / span_ms * BAR_WIDTH))
    length = min(length, BAR_WIDTH - start)
    style = "red" if row.span.status == "ERROR" else _STYLES[row.kind]
    return Text(" " * start + "█" * length + " " * (BAR_WIDTH - start - length), style=style)


def _int(value: int | None) -> str:
    return "" if value is None else str(value)


def _note(row: SpanRow) -> str:
    a = row.span.attributes
    notes: list[str] = []
    if row.kind in ("call", "chat"):
        notes.append(str(a.get("budgetgraph.tier", "?")))
        if a.get("budgetgraph.cache_hit"):
            notes.append("cache hit")
    if row.kind == "step" and a.get("budgetgraph.outcome"):
        notes.append(str(a["budgetgraph.outcome"]))
    if row.kind == "run" and a.get("budgetgraph.run.status"):
        notes.append(str(a["budgetgraph.run.status"]))
    if row.kind == "run" and a.get("budgetgraph.run.resumed"):
        notes.append("resumed")
    if a.get("budgetgraph.interrupted"):
        notes.append("interrupted")
    if row.span.status == "ERROR":
        notes.append(f"error: {a.get('error.type', '?')}")
    return ", ".join(notes)
