"""Rich rendering of a run report for the terminal.

Every string shown comes from a run (a task, a constraint, a model's answer,
a thread id) and may hold terminal escape sequences: :func:`printable`
escapes control characters before anything reaches the console.

Table cells are never cut. Piped (not a terminal), a table that does not
fit widens the output to its full width (:func:`print_whole`), so a CI log
or a file shows ``0.000412`` and ``local-rules`` on one line, never
``0.0000…`` or ``local-r…``; on a narrow terminal a value too long for its
column folds onto the next line (:func:`_table`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Column, Table
from rich.text import Text

T = TypeVar("T")

_PANEL_MARGIN = 4
"""Columns a panel adds around its content: a border and a space of padding on each side."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: T) -> T:
    r"""``value`` with every control character (but newline and tab) in strings shown as ``\xNN``.

    Works through dicts, lists and tuples, so a whole report is made safe at once.
    """
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(printable(v) for v in value)  # type: ignore[return-value]
    return value


def print_whole(console: Console, renderable: RenderableType, table: Table, *, margin: int = 0) -> None:
    """Print ``renderable``, which is or holds ``table``, without cutting a cell of ``table``.

    On a terminal this is ``console.print``: rich fits the table to the
    screen. Piped, rich fits it to ``COLUMNS`` or the piped width and cuts what
    does not fit (``0.0000…``); there the console is widened, for this print
    only, to the table's full width (each row on one line) plus ``margin``.

    Args:
        console: The console.
        renderable: What to print: ``table``, or a panel around it.
        table: The table to keep whole.
        margin: Columns ``renderable`` adds around ``table`` (:data:`_PANEL_MARGIN` for a panel).
    """
    if console.is_terminal:
        console.print(renderable)
        return
    width = console.width
    unbounded = console.options.update_width(max(width, 10_000))
    needed = Measurement.get(console, unbounded, table).maximum + margin
    if needed <= width:
        console.print(renderable)
        return
    console.width = needed
    try:
        console.print(renderable)
    finally:
        console.width = width


def _table(*columns: str | Column, **options: Any) -> Table:
    """A table whose cells fold a value too long for its column onto the next line, never cut it (``…``).

    A ``no_wrap`` column keeps rich's ``…``: folding it would crop silently.
    """
    table = Table(*columns, **options)
    for column in table.columns:
        if not column.no_wrap:
            column.overflow = "fold"
    return table


def render_report(console: Console, report: dict[str, Any]) -> None:
    """Print the plan, the analyses, the reconciliation, the review and the spend table."""
    report = printable(report)
    if report.get("plan"):
        plan = report["plan"]
        print_whole(console, _plan(plan), plan_table(plan), margin=_PANEL_MARGIN)
    for name, analysis in (report.get("analyses") or {}).items():
        console.print(_analysis(name, analysis))
    if report.get("reconciliation"):
        console.print(_reconciliation(report["reconciliation"]))
    spend = _spend(report["spend"])
    print_whole(console, spend, spend)
    for line in _decisions(report["spend"]):
        console.print(line, highlight=False, markup=False)
    if "rerun" in report:
        console.print(
            Text(
                f"Edit: re-ran {', '.join(report['rerun']) or 'nothing'}; reused "
                f"{', '.join(report['reused']) or 'nothing'}; saved {report['saved_usd']:.6f} USD "
                "against a full re-run",
                style="bold",
            )
        )
    console.print(_status(report))


def plan_table(plan: dict[str, Any]) -> Table:
    """The plan's steps with their estimates."""
    steps = _table("step", "path", "tier", "est. tokens", "est. USD", "est. ms", "tool calls", "quality")
    for s in plan["steps"]:
        steps.add_row(
            s["node"],
            s["path"],
            s["tier"],
            str(s["estimated_tokens"]),
            f"{s['estimated_cost_usd']:.6f}",
            str(s.get("estimated_latency_ms", "")),
            str(s.get("estimated_tool_calls", "")),
            f"{s['expected_quality']:.2f}",
        )
    return steps


def _plan(plan: dict[str, Any]) -> Panel:
    questions = [
        f"{s['node'].upper()}:\n" + "\n".join(f"  - {q}" for q in s["questions"])
        for s in plan["steps"]
        if s["questions"]
    ]
    parts: list[Any] = [Text(plan["objective"], style="bold")]
    if plan.get("replan_note"):
        parts.append(Text(f"Re-plan note: {plan['replan_note']}", style="yellow"))
    parts += [
        plan_table(plan),
        Text(f"Estimated total: {plan['estimated_total_usd']:.6f} USD"),
        Text("\n".join(questions)),
    ]
    parts.append(Text("Assumptions: " + "; ".join(plan["assumptions"]), style="dim"))
    return Panel(Group(*parts), title="Plan", subtitle=f"written by {plan.get('authored_by', '?')}")


def _analysis(name: str, a: dict[str, Any]) -> Panel:
    risks = _table("severity", "risk", "mitigation", expand=True)
    for r in a["risks"]:
        risks.add_row(f"{r['severity']}/5", r["description"], r["mitigation"])
    cost = a["cost_estimate"]
    parts: list[Any] = [
        Text(a["summary"]),
        Text("Findings:\n" + "\n".join(f"  - {f}" for f in a["findings"])),
        risks,
        Text("Recommendations:\n" + "\n".join(f"  {i}. {r}" for i, r in enumerate(a["recommendations"], 1))),
        Text(
            f"Cost: {cost['engineer_weeks']:g} engineer-weeks, {cost['one_time_usd']:,.0f} USD one-time, "
            f"{cost['recurring_usd_per_month']:,.0f} USD/month ({cost['basis']})"
        ),
        Text(f"Confidence: {a['confidence']:.2f}", style="dim"),
    ]
    return Panel(
        Group(*parts), title=f"{name.upper()} analysis", subtitle=f"written by {a.get('authored_by', '?')}"
    )


def _reconciliation(r: dict[str, Any]) -> Panel:
    trades = _table("option", "gains", "costs", expand=True)
    for t in r["trade_offs"]:
        trades.add_row(t["option"], t["gains"], t["costs"])
    conflicts = "\n".join(
        f"  - {c['topic']}: CTO {c['cto_position']} / COO {c['coo_position']}" for c in r["conflicts"]
    )
    parts: list[Any] = [
        Text(r["summary"]),
        Text("Agreements:\n" + ("\n".join(f"  - {a}" for a in r["agreements"]) or "  (none)")),
        Text("Conflicts:\n" + (conflicts or "  (none)")),
        trades,
        Text(f"Risk score: {r['risk_score']}/5 - {r['risk_rationale']}", style="bold"),
        Text(f"Recommendation: {r['recommendation']}"),
    ]
    return Panel(Group(*parts), title="Reconciliation", subtitle=f"written by {r.get('authored_by', '?')}")


def _cache_cell(row: dict[str, Any]) -> str:
    """The cache column: ``exact``/``semantic`` hit, ``miss``, ``refused`` (by the guard) or ``-``."""
    return str(row.get("cache") or ("hit" if row["cache_hit"] else "-"))


def _spend(spend: dict[str, Any]) -> Table:
    table = _table(
        "#",
        "node",
        "tier",
        "model",
        "input tok",
        "output tok",
        "USD",
        "ms",
        "cache",
        title="Spend",
        show_footer=True,
    )
    for number, row in enumerate(spend["nodes"], 1):
        table.add_row(
            str(number),
            row["node"],
            row["tier"],
            row["model"],
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            f"{row['cost_usd']:.6f}" + ("" if row["priced"] else " (no price)"),
            str(row["latency_ms"]),
            _cache_cell(row),
        )
    total = spend["total"]
    table.columns[1].footer = "total"
    table.columns[4].footer = str(total["input_tokens"])
    table.columns[5].footer = str(total["output_tokens"])
    table.columns[6].footer = f"{total['cost_usd']:.6f}"
    table.columns[7].footer = str(total["latency_ms"])
    return table


def _decisions(spend: dict[str, Any]) -> list[str]:
    """One line per plugin decision, numbered by its row in the spend table."""
    return [
        f"  [{number}] {d['plugin']}: {d['action']} - {d['reason']}"
        for number, row in enumerate(spend["nodes"], 1)
        for d in row["decisions"]
    ]


def _status(report: dict[str, Any]) -> Text:
    thread = report["thread_id"]
    if report["status"] == "paused":
        interrupt = report.get("interrupt") or {}
        question, problem = interrupt.get("question", ""), interrupt.get("problem")
        budget = interrupt.get("kind") == "budget"
        text = f"Paused for {'a budget approval' if budget else 'review'}: {question}\n"
        if problem:
            text += f"{problem}\n"
        unit = interrupt.get("unit", "USD")
        answers = {
            "approve": f"--approve [--raise-cap {unit}]" if budget else "--approve",
            "reject": "--reject",
            "replan": '--replan "what to change"',
        }
        offered = [answers[a] for a in interrupt.get("actions") or ("approve", "reject") if a in answers]
        text += f"Resume with: budgetgraph resume {thread} {' | '.join(offered)}"
        return Text(text, style="bold yellow")
    if report["status"] == "waiting":
        waits = report.get("batches") or []
        nodes = ", ".join(dict.fromkeys(str(w.get("node")) for w in waits))
        batches = ", ".join(sorted({str(w["batch_id"]) for w in waits if w.get("batch_id")})) or "queued"
        return Text(
            f"Waiting for batch answers: {nodes} ({batches}).\n"
            f"Collect them with: budgetgraph collect --wait (it resumes {thread})",
            style="bold yellow",
        )
    if report["status"] == "failed":
        err = report.get("error") or {}
        where = ", ".join(report.get("next") or [])
        msg = f"Failed{f' at {where}' if where else ''}: {err.get('type', '')}: {err.get('message', '')}\n"
        return Text(msg + f"Resume with: budgetgraph resume {thread}", style="bold red")
    review = report.get("review") or {}
    note = f" ({review['note']})" if review.get("note") else ""
    return Text(f"Done. Review: {review.get('decision', '?')}{note}. Thread: {thread}", style="bold green")


def render_history(
    console: Console, thread: str, rows: list[dict[str, Any]], unsettled: Sequence[dict[str, Any]] = ()
) -> None:
    """Print a thread's checkpoints, newest first, then its unsettled attempts."""
    thread, rows, unsettled = printable(thread), printable(rows), printable(list(unsettled))
    table = _table(
        Column("checkpoint", no_wrap=True, min_width=36),  # copied whole into `fork --checkpoint`
        "step",
        "source",
        "written by",
        "next",
        "calls",
        "spend USD",
        "created",
        title=f"History of {thread}",
    )
    for row in rows:
        table.add_row(
            row["checkpoint_id"],
            str(row["step"]),
            str(row["source"]),
            ", ".join(row["written_by"]),
            ", ".join(row["next"]),
            str(row["calls"]),
            f"{row['spend_usd']:.6f}",
            str(row["created_at"])[:19],
        )
    print_whole(console, table, table)
    console.print(f"Fork one with: budgetgraph fork {thread} --checkpoint CHECKPOINT_ID", highlight=False)
    if unsettled:
        attempts = _table(
            "when", "node", "tier", "model", "USD at most", "state", "why", title="Unsettled attempts"
        )
        for row in unsettled:
            attempts.add_row(
                row["ts"],
                row["node"],
                row["tier"],
                row["model"],
                f"{row['cost_usd']:.6f}",
                row["state"],
                row["reason"],
            )
        print_whole(console, attempts, attempts)
