"""``budgetgraph plan``: the plan and its estimated cost, without calling any model.

The plan is made by the planner's own code (:func:`budgetgraph.agents.planner.estimate`,
the same search the graph's planner node runs), with the local rules' brief
instead of a model's, against the budgets and the ledger a ``run`` would use.
``--thread`` plans against the spend of an existing run (its node and task
caps), ``--tenant`` against that tenant's windows.

Exit codes: 0 a plan was made (feasible or not: see ``feasible`` and
``reason``), 2 bad input or configuration.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from budgetgraph.agents.planner import estimate
from budgetgraph.budgets import ConfigError, Gateway
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph.builder import load_config
from budgetgraph.graph.cli_common import (
    BudgetsOpt,
    JsonOpt,
    LedgerOpt,
    ModelsOpt,
    TenantOpt,
    config_message,
    fail,
    settings_for,
    stdout_console,
)
from budgetgraph.graph.console import plan_table, printable


def plan_command(
    task: Annotated[str, typer.Argument(help="The decision to plan for.")],
    constraint: Annotated[
        list[str] | None, typer.Option("--constraint", "-c", help="A constraint; repeatable.")
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", help="Plan against the spend of this run so far.")
    ] = None,
    tenant: TenantOpt = None,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the plan for a decision and its estimated cost, calling no model."""
    if not task.strip():
        fail("The task is empty: give the decision to plan for.", as_json)
    settings = settings_for(as_json, models=models, budgets=budgets, ledger_url=ledger, tenant=tenant)
    try:
        models_config, budgets_config = load_config(settings)
        gateway = Gateway(
            models_config, budgets_config, ledger=open_ledger(settings.ledger_url), settings=settings
        )
    except ConfigError as exc:
        fail(config_message(exc), as_json)
    try:
        made = estimate(
            gateway, task=task, constraints=list(constraint or []), thread_id=thread, tenant=settings.tenant
        )
    except ConfigError as exc:
        fail(config_message(exc), as_json)
    finally:
        gateway.ledger.close()
    document = made.model_dump(mode="json")
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        stdout_console().print(render_plan(document))


def render_plan(plan: dict[str, Any]) -> Panel:
    """The plan as a panel: steps with their estimates and reasons, the total, feasibility and caps."""
    plan = printable(plan)
    why: list[str] = []
    for s in plan["steps"]:
        line = f"{s['node']}: {s['estimate_source']}"
        if s["reason"]:
            line += f"; {s['reason']}"
        why.append(line)
    parts: list[Any] = [
        Text(plan["objective"], style="bold"),
        plan_table(plan),
        Text("\n".join(why), style="dim"),
        Text(
            f"Estimated total: {plan['estimated_total_usd']:.6f} USD, "
            f"{plan['estimated_total_tokens']} tokens",
            style="bold",
        ),
    ]
    if plan["feasible"]:
        parts.append(Text("Feasible: every step fits every cap that applies.", style="green"))
    else:
        parts.append(Text(f"Infeasible: {plan['reason']}", style="bold red"))
    if plan["caps"]:
        caps = Table("cap", "scope", "left", "of", "on exceed", title="Caps that apply")
        for c in plan["caps"]:
            caps.add_row(
                c["limit"], c["scope"], f"{c['left']:g} {c['unit']}", f"{c['cap']:g}", c["on_exceed"]
            )
        parts.append(caps)
    return Panel(Group(*parts), title="Plan (an estimate: no model was called)")


__all__ = ["plan_command", "render_plan"]
