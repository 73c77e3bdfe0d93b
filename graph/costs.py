"""The cost report as ``budgetgraph report`` and the dashboard serve it: one source, one document.

Both read the same ledger (the settings' ``ledger_url``) with the same files:
``models.yaml`` (to re-price calls at the default and premium tiers) and
``budgets.yaml`` (the calendar windows' caps). Those are the settings' own
(``--models`` / ``--budgets`` or ``BUDGETGRAPH_MODELS`` / ``BUDGETGRAPH_BUDGETS``);
when neither is set and a serving file is (``BUDGETGRAPH_SERVING``), its
default profile's, which is what the served graph runs with
(:func:`budgetgraph.graph.builder.make_graph`). So, for the same settings and
the same ledger, ``budgetgraph report --json`` and ``GET /budgetgraph/api/report``
return the same document (:func:`budgetgraph.budgets.report.build_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.report import build_report
from budgetgraph.settings import Settings


@dataclass(frozen=True)
class ReportConfig:
    """What a cost report is made with.

    Attributes:
        models: The loaded ``models.yaml``.
        budgets: The loaded ``budgets.yaml``.
        ledger_url: The ledger's URL (``None``: SQLite under ``.budgetgraph/``).
    """

    models: ModelsConfig
    budgets: BudgetsConfig
    ledger_url: str | None


def report_files(settings: Settings) -> tuple[Path | None, Path | None]:
    """The ``models.yaml`` and ``budgets.yaml`` a report uses (``None``: the packaged file).

    The settings' files; else, with a serving file, its default profile's.

    Raises:
        ConfigError: The serving file is invalid.
    """
    models, budgets = settings.models, settings.budgets
    if settings.serving is not None and (models is None or budgets is None):
        from budgetgraph.graph.serving import load_serving

        serving = load_serving(settings)
        default = serving.profiles[serving.default_profile]
        models = models if models is not None else default.models
        budgets = budgets if budgets is not None else default.budgets
    return models, budgets


def report_config(settings: Settings) -> ReportConfig:
    """Load the files and name the ledger a report of ``settings`` uses.

    Raises:
        ConfigError: A file is missing or invalid.
    """
    from budgetgraph.graph.builder import load_config

    models_path, budgets_path = report_files(settings)
    models, budgets = load_config(settings, models=models_path, budgets=budgets_path)
    return ReportConfig(models=models, budgets=budgets, ledger_url=settings.ledger_url)


def cost_report(
    config: ReportConfig,
    *,
    since: datetime | None = None,
    tenant: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The cost report document (see :func:`~budgetgraph.budgets.report.build_report`).

    Args:
        config: The files and the ledger (:func:`report_config`).
        since: Only spend from this time (a naive time is UTC).
        tenant: Only this tenant's spend, alerts and windows.
        now: The time whose calendar windows are shown (default: now).

    Raises:
        ConfigError: The ledger's URL is not one the ledger knows.
    """
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    ledger = open_ledger(config.ledger_url)
    try:
        return build_report(
            ledger, config.models, budgets=config.budgets, since=since, tenant=tenant, now=now
        )
    finally:
        ledger.close()


__all__ = ["ReportConfig", "cost_report", "report_config", "report_files"]
