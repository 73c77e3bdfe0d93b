"""The cost dashboard in a real headless Chromium against `langgraph dev`, with auth and two tenants.

After a run of each tenant, each tenant's page (opened with its API key, typed
into the page's key form as a person would) shows that tenant's figures, and
only them, each equal to `budgetgraph report --json --tenant T` on the served
ledger; `/budgetgraph/api/report` returns that document exactly. A run's link
opens its calls and its trace.

The browser is Debian's `chromium` (``/usr/bin/chromium``, driven by Playwright
through ``executable_path``; nothing is downloaded). Screenshots go to the
test's temp folder; with ``UPDATE_DOCS_SCREENSHOT=1`` the acme page is
also copied to ``docs/dashboard.png`` (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import SyncLangGraphClient

from tests.conftest import CI
from tests.integration.serving.conftest import ACME_KEY, GLOBEX_KEY
from tests.serving import GRAPH_ID, REPO_ROOT, TEST_TIMEOUT_S, ServedGraph

pytestmark = [pytest.mark.server, pytest.mark.timeout(TEST_TIMEOUT_S + 120)]

CHROMIUM = Path("/usr/bin/chromium")
BUDGETGRAPH = Path(sys.executable).parent / "budgetgraph"
TASK = "Should we move our billing service to microservices this year? We have 6 engineers."
GROUPS = ("by_node", "by_model", "by_tier", "by_day", "by_hour")
LATENCY = ("latency.by_node", "latency.by_model")


def _browser_or_skip() -> Any:
    """Playwright's sync API, with Debian's Chromium; in CI a missing one fails instead."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing: apt-get install chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed: pip install playwright"
    if missing is not None:
        if CI:
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def run_once(client: SyncLangGraphClient, **context: Any) -> str:
    thread_id = str(client.threads.create()["thread_id"])
    task = {"task": TASK, "constraints": ["Keep card data in one region"]}
    client.runs.wait(thread_id, GRAPH_ID, input=task, context=context or None)
    return thread_id


def cli_report(served: ServedGraph, tenant: str) -> dict[str, Any]:
    """`budgetgraph report --json --tenant T` on the served ledger, as an operator would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETGRAPH_", "OPENAI_", "OTEL_"))}
    done = subprocess.run(
        [str(BUDGETGRAPH), "report", "--json", "--tenant", tenant, "--ledger", f"sqlite:///{served.ledger}"],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def at(document: Any, path: str) -> Any:
    for part in path.split("."):
        document = len(document) if part == "length" else document[part]
    return document


def same(shown: str | None, expected: Any) -> bool:
    """A figure's ``data-value`` (JavaScript's ``String(value)``) against the report's value."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return shown == ("" if expected is None else str(expected))
    return shown is not None and float(shown) == float(expected)


def open_dashboard(browser: Any, served: ServedGraph, key: str, errors: list[str]) -> Any:
    """A new browser session on the dashboard, signed in through the page's key form."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # The page's first request has no key and is refused (401): that is how it knows to ask for one.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served.url}/budgetgraph/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#api-key", key)
    page.click("#login-form button")
    page.wait_for_selector("body[data-ready='overview']")
    return page


def shown_figures(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#overview [data-figure]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.figure, n.dataset.value]))",
    )


def shown_rows(page: Any, group: str) -> dict[str, dict[str, str]]:
    return page.eval_on_selector_all(
        f"#overview tr[data-group='{group}']",
        """rows => Object.fromEntries(rows.map(r => [r.dataset.key, Object.fromEntries(
            [...r.querySelectorAll('td[data-field]')].map(td => [td.dataset.field, td.dataset.value]))]))""",
    )


def assert_page_shows(page: Any, report: dict[str, Any]) -> None:
    """Every figure and row on the page equals the report's."""
    figures = shown_figures(page)
    assert len(figures) >= 10, figures
    for path, value in figures.items():
        assert same(value, at(report, path)), (path, value, at(report, path))
    for group in (*GROUPS, *LATENCY):
        rows = shown_rows(page, group)
        expected = {str(row["key"]): row for row in at(report, group)}
        assert set(rows) == set(expected), group
        for key, cells in rows.items():
            for field, value in cells.items():
                assert same(value, expected[key][field]), (group, key, field, value)
    runs = shown_rows(page, "runs.recent")
    assert list(runs) == [r["thread_id"] for r in report["runs"]["recent"]]
    assert page.locator("#overview tr[data-group='alerts']").count() == len(report["alerts"])


def test_each_tenant_sees_its_own_figures_equal_to_report_json(
    browser: Any,
    served: ServedGraph,
    client: SyncLangGraphClient,
    globex: SyncLangGraphClient,
    openai_server: Any,
    tmp_path: Path,
):
    # acme also runs on the `tight` profile: its cto takes the local tier (a cap of 100 tokens)
    acme_thread, globex_thread = run_once(client), run_once(globex)
    tight_thread = run_once(client, profile="tight")
    expected = {"acme": cli_report(served, "acme"), "globex": cli_report(served, "globex")}
    assert expected["acme"]["total"]["calls"] > 0 and expected["globex"]["total"]["calls"] > 0
    assert "local" in {row["key"] for row in expected["acme"]["by_tier"]}
    assert all(a["tenant"] == "globex" for a in expected["globex"]["alerts"])
    for tenant, key in (("acme", ACME_KEY), ("globex", GLOBEX_KEY)):
        api = httpx.get(f"{served.url}/budgetgraph/api/report", headers={"x-api-key": key}, timeout=60)
        assert api.status_code == 200 and api.json() == expected[tenant]
    assert httpx.get(f"{served.url}/budgetgraph/api/report", timeout=60).status_code == 401

    errors: list[str] = []
    pages = {}
    for tenant, key in (("acme", ACME_KEY), ("globex", GLOBEX_KEY)):
        page = pages[tenant] = open_dashboard(browser, served, key, errors)
        assert page.inner_text("#tenant-name") == f"Tenant: {tenant}"
        assert_page_shows(page, expected[tenant])
        shot = tmp_path / f"dashboard-{tenant}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

    acme_runs = shown_rows(pages["acme"], "runs.recent")
    globex_runs = shown_rows(pages["globex"], "runs.recent")
    assert {acme_thread, tight_thread} <= set(acme_runs) and globex_thread not in acme_runs
    assert globex_thread in globex_runs and acme_thread not in globex_runs
    assert "globex" not in pages["acme"].inner_text("#overview")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "dashboard-acme.png", REPO_ROOT / "docs" / "dashboard.png")

    page = pages["acme"]
    page.click(f"#runs a[href$='{acme_thread}']")
    page.wait_for_selector("body[data-ready='run']")
    run_micro = sum(r["cost_micro_usd"] for r in served.ledger_records(acme_thread))
    assert same(
        page.get_attribute("#run-cards [data-figure='total.cost_usd']", "data-value"), run_micro / 1e6
    )
    assert page.locator("#run-calls tr[data-group='calls']").count() == len(
        served.ledger_records(acme_thread)
    )
    assert page.locator("#trace tr[data-group='spans']").count() > 0  # the served run's spans
    page.screenshot(path=str(tmp_path / "dashboard-run.png"), full_page=True)
    other = httpx.get(
        f"{served.url}/budgetgraph/api/runs/{globex_thread}", headers={"x-api-key": ACME_KEY}, timeout=60
    )
    assert other.status_code == 404
    assert errors == []
