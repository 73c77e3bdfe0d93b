"""``budgetgraph report`` and ``budgetgraph dashboard``: the cost report in the terminal and in a browser.

Registered on the CLI as ``app.command(name="report")(report_command)`` and
``app.command(name="dashboard")(dashboard_command)``. Both read the report
through :mod:`budgetgraph.graph.costs`, so ``report --json`` and the
dashboard's ``/budgetgraph/api/report`` are the same document.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from budgetgraph.budgets import ConfigError
from budgetgraph.graph.cli_common import (
    EXIT_BAD_INPUT,
    BudgetsOpt,
    JsonOpt,
    LedgerOpt,
    ModelsOpt,
    config_message,
    err,
    fail,
    settings_for,
    stdout_console,
)

DASHBOARD_PORT = 8765
"""``budgetgraph dashboard``'s default port."""


def report_command(
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only spend from this date or time (UTC).")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's spend.")] = None,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show spend per node, model, tier, hour and tenant; budget windows, latency, savings and advice."""
    from budgetgraph.graph.costs import cost_report, report_config

    settings = settings_for(as_json, models=models, budgets=budgets, ledger_url=ledger)
    try:
        config = report_config(settings)
        summary = cost_report(config, since=since, tenant=tenant)
    except ConfigError as exc:
        fail(config_message(exc), as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        render_cost_report(stdout_console(), summary)


def dashboard_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; a loopback one shows every tenant.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = DASHBOARD_PORT,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    ledger: LedgerOpt = None,
) -> None:
    """Serve the cost dashboard at http://HOST:PORT/budgetgraph/ (the page `langgraph dev` also serves).

    On a loopback address (the default) it is the operator's view: every
    tenant, no API key. On any other address each request needs a client's
    API key from the serving file (BUDGETGRAPH_SERVING), and sees that
    client's tenant only; without declared clients it refuses to start.
    """
    import uvicorn

    from budgetgraph.graph.dashboard.app import PREFIX, create_app
    from budgetgraph.graph.serving import load_serving

    settings = settings_for(False, models=models, budgets=budgets, ledger_url=ledger)
    local = _is_loopback(host)
    if not local:
        try:
            serving = load_serving(settings)
        except ConfigError as exc:
            fail(config_message(exc), False)
        if not serving.auth_enabled:
            fail(
                f"`{host}` is not a loopback address: declare clients (API keys) in a serving file "
                "(BUDGETGRAPH_SERVING) so that each sees its own tenant, or listen on 127.0.0.1.",
                False,
                EXIT_BAD_INPUT,
            )
    where = f"[{host}]" if ":" in host else host
    err.print(
        f"budgetgraph dashboard on http://{where}:{port}{PREFIX}/ "
        f"({'every tenant' if local else 'per API key'}); Ctrl-C stops it.",
        highlight=False,
    )
    uvicorn.run(create_app(settings=settings, local=local), host=host, port=port, log_level="warning")


def render_cost_report(console: Console, report: dict[str, Any]) -> None:
    """Print ``budgetgraph report``: totals, groups, windows, latency, runs, cache, savings, advice."""
    from budgetgraph.graph.console import print_whole, printable

    report = printable(report)
    total = report["total"]
    scope = f" since {report['since']}" if report.get("since") else ""
    scope += f" for tenant {report['tenant']}" if report.get("tenant") else ""
    console.print(
        Text(
            f"Spend{scope}: {total['cost_usd']:.6f} USD over {total['calls']} calls, "
            f"{total['tokens']} tokens ({total['input_tokens']} in, {total['output_tokens']} out)",
            style="bold",
        )
    )
    for key, title in (
        ("by_node", "node"),
        ("by_model", "model"),
        ("by_tier", "tier"),
        ("by_day", "day"),
        ("by_hour", "hour (UTC)"),
        ("by_tenant", "tenant"),
    ):
        table = Table(title, "calls", "tokens", "USD", title=f"By {title}")
        for row in report[key]:
            table.add_row(str(row["key"]), str(row["calls"]), str(row["tokens"]), f"{row['cost_usd']:.6f}")
        print_whole(console, table, table)
    _render_windows(console, report["windows"])
    for key, title in (("by_node", "node"), ("by_model", "model")):
        table = Table(
            title, "calls", "p50 ms", "p95 ms", "p99 ms", "errors", "error rate", title=f"Latency by {title}"
        )
        for row in report["latency"][key]:
            table.add_row(
                str(row["key"]),
                str(row["calls"]),
                *(_ms(row[f"p{p}_ms"]) for p in (50, 95, 99)),
                f"{row['errors']} of {row['requests']}",
                f"{row['error_rate']:.1%}",
            )
        print_whole(console, table, table)
    runs, cache, routing, savings = report["runs"], report["cache"], report["routing"], report["savings"]
    console.print(
        f"Runs: {runs['count']}, {runs['calls_per_run']} calls and {runs['tokens_per_run']} tokens per run, "
        f"{runs['avg_cost_usd']:.6f} USD per run on average"
    )
    if runs["recent"]:
        table = Table("run", "tenant", "last spend", "calls", "USD", title="Recent runs")
        for row in runs["recent"]:
            table.add_row(
                row["thread_id"], row["tenant"], row["last"][:19], str(row["calls"]), f"{row['cost_usd']:.6f}"
            )
        print_whole(console, table, table)
    console.print(
        f"Cache: {cache['lookups']} lookups, {cache['hits']} hits ({cache['exact_hits']} exact, "
        f"{cache['semantic_hits']} semantic; {cache['hit_rate']:.0%}), {cache['misses']} misses "
        f"({cache['refusals']} refused by the guard), {cache['saved_usd']:.6f} USD saved"
    )
    console.print(
        f"Routing: {routing['calls']} routed calls ({routing['down']} down, {routing['up']} up, "
        f"{routing['local']} local) against the default tier `{routing['baseline_tier']}`: "
        f"{routing['baseline_usd']:.6f} USD there, {routing['actual_usd']:.6f} USD as routed; "
        f"routing saved {routing['saved_usd']:.6f} USD"
    )
    console.print(f"Net savings (cache and routing): {savings['net_usd']:.6f} USD")
    console.print(f"All at premium: {report['premium']['cost_usd']:.6f} USD")
    if report["alerts"]:
        console.print(Text("Alerts reached:", style="bold yellow"))
        for alert in report["alerts"]:
            console.print(
                f"  {alert['ts'][:19]}  `{alert['limit']}` on {alert['scope']} at {alert['threshold']:.0%}"
            )
    if report["recommendations"]:
        console.print(Text("Recommendations:", style="bold"))
        for line in report["recommendations"]:
            console.print(f"  - {line}", highlight=False)


def _render_windows(console: Console, windows: list[dict[str, Any]]) -> None:
    if not windows:
        return
    from budgetgraph.graph.console import print_whole

    now = datetime.now(UTC)
    table = Table(
        "tenant", "cap", "used", "left", "share", "pace", "this hour (pacing)", title="Budget windows"
    )
    for w in windows:
        start, end = datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"])
        elapsed = max(1e-3, min(1.0, (now - start) / (end - start)))
        projected = w["used"] / elapsed
        pace = f"{'ahead of pace' if projected > 1 else 'on pace'}: {projected:.0%} by {w['end'][:16]}"
        hour = (
            f"{w['pacing']['hour_spent_usd']:.6f} of {w['pacing']['hour_allowed_usd']:.6f} USD"
            if w["pacing"]
            else "-"
        )
        table.add_row(
            w["tenant"],
            w["limit"],
            _amount(w["unit"], w["spent"]),
            _amount(w["unit"], w["left"]),
            f"{w['used']:.1%}",
            pace,
            hour,
        )
    print_whole(console, table, table)


def _amount(unit: str, value: int) -> str:
    return f"{value / 1_000_000:.6f} USD" if unit == "micro_usd" else f"{value} tokens"


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["dashboard_command", "render_cost_report", "report_command"]
