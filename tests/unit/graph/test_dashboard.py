"""The cost dashboard's app over a real SQLite ledger: its page, its API, and who sees what."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from budgetgraph.budgets.caps import Scopes
from budgetgraph.budgets.ledger import Charge, LedgerRecord, open_ledger
from budgetgraph.graph import auth as graph_auth
from budgetgraph.graph.cli import app as cli
from budgetgraph.graph.dashboard.app import create_app
from budgetgraph.settings import Settings

ACME_KEY = "acme-dashboard-key"
GLOBEX_KEY = "globex-dashboard-key"
runner = CliRunner()


def spent(tenant: str, thread_id: str, node: str, cost: int, ts: datetime) -> LedgerRecord:
    record: dict[str, Any] = {
        "ts": ts.isoformat(),
        "tenant": tenant,
        "thread_id": thread_id,
        "node": node,
        "tier": "standard",
        "model": "gpt-4.1-mini",
        "input_tokens": 900,
        "output_tokens": 100,
        "cost_micro_usd": cost,
        "saved_micro_usd": 0,
        "cache_hit": False,
        "alerts": [],
        "latency_ms": 400 + cost,
        "decisions": [],
    }
    return record  # type: ignore[return-value]


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    ledger = open_ledger(url)
    now = datetime.now(UTC)
    for record in (
        spent("acme", "acme-1", "planner", 300, now),
        spent("acme", "acme-1", "cto", 500, now),
        spent("globex", "globex-1", "planner", 7000, now),
    ):
        scopes = Scopes.named(record["node"], thread_id=record["thread_id"], tenant=record["tenant"], now=now)
        ledger.record(scopes.all(), Charge(1000, record["cost_micro_usd"]), record)
    ledger.close()
    return url


@pytest.fixture
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two clients, as a served graph declares them; the graph's auth reads them afresh."""
    path = tmp_path / "serving.yaml"
    clients = [
        {"tenant": tenant, "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
        for tenant, key in (("acme", ACME_KEY), ("globex", GLOBEX_KEY))
    ]
    profiles = {"standard": {"budgets": "windows.yaml"}}  # what the served graph runs with
    path.write_text(json.dumps({"profiles": profiles, "clients": clients}))
    (tmp_path / "windows.yaml").write_text("windows:\n  daily: {max_cost_usd: 0.01, pacing: {factor: 2}}\n")
    monkeypatch.setenv("BUDGETGRAPH_SERVING", str(path))
    monkeypatch.setattr(graph_auth, "_serving", None)
    return path


@pytest.fixture
def served(ledger_url: str, serving: Path) -> Iterator[TestClient]:
    settings = Settings(ledger_url=ledger_url, serving=serving)
    with TestClient(create_app(settings=settings)) as client:
        yield client


def cli_report(ledger_url: str, *args: str) -> dict[str, Any]:
    done = runner.invoke(cli, ["report", "--ledger", ledger_url, *args, "--json"])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def test_the_page_and_its_chart_library_are_served_with_nothing_from_elsewhere(served: TestClient):
    page = served.get("/budgetgraph/")
    script = served.get("/budgetgraph/static/dashboard.js")
    chart = served.get("/budgetgraph/static/vendor/chart.umd.min.js")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    assert script.status_code == 200 and "https://" not in script.text
    assert chart.status_code == 200 and chart.text.startswith("/*!\n * Chart.js v4.6.1")
    assert served.get("/budgetgraph", follow_redirects=False).headers["location"] == "/budgetgraph/"
    assert served.get("/budgetgraph/runs/acme-1").text == page.text


def test_the_api_needs_a_clients_key(served: TestClient):
    assert served.get("/budgetgraph/api/report").status_code == 401
    assert served.get("/budgetgraph/api/me", headers={"x-api-key": "not-a-key"}).status_code == 401
    assert served.get("/budgetgraph/api/runs/acme-1").status_code == 401


def test_a_client_sees_its_own_tenants_report_exactly_as_report_json(served: TestClient, ledger_url: str):
    acme = served.get("/budgetgraph/api/report", headers={"x-api-key": ACME_KEY})
    globex = served.get("/budgetgraph/api/report", headers={"Authorization": f"Bearer {GLOBEX_KEY}"})

    assert acme.status_code == 200 and acme.headers["cache-control"] == "no-store"
    assert acme.json() == cli_report(ledger_url, "--tenant", "acme")
    assert globex.json() == cli_report(ledger_url, "--tenant", "globex")
    assert acme.json()["total"]["cost_micro_usd"] == 800 and globex.json()["total"]["cost_micro_usd"] == 7000
    assert [w["spent"] for w in acme.json()["windows"]] == [800]  # the serving file's default profile
    assert served.get("/budgetgraph/api/me", headers={"x-api-key": ACME_KEY}).json() == {
        "tenant": "acme",
        "all_tenants": False,
        "tenants": ["acme"],
    }


def test_a_client_cannot_see_another_tenants_spend_or_runs(served: TestClient):
    acme = {"x-api-key": ACME_KEY}

    assert served.get("/budgetgraph/api/report?tenant=globex", headers=acme).status_code == 403
    assert served.get("/budgetgraph/api/report?tenant=acme", headers=acme).status_code == 200
    assert served.get("/budgetgraph/api/runs/globex-1", headers=acme).status_code == 404
    own = served.get("/budgetgraph/api/runs/acme-1", headers=acme).json()
    assert own["tenant"] == "acme" and own["total"]["calls"] == 2 and own["total"]["cost_micro_usd"] == 800


def test_the_report_takes_reports_filters_and_refuses_others(served: TestClient, ledger_url: str):
    acme = {"x-api-key": ACME_KEY}
    tomorrow = datetime.now(UTC).date().replace(year=datetime.now(UTC).year + 1).isoformat()

    later = served.get(f"/budgetgraph/api/report?since={tomorrow}", headers=acme).json()

    assert later == cli_report(ledger_url, "--tenant", "acme", "--since", tomorrow)
    assert later["total"]["calls"] == 0
    assert served.get("/budgetgraph/api/report?since=yesterday", headers=acme).status_code == 400
    assert served.get("/budgetgraph/api/report?path=/etc", headers=acme).status_code == 400


def test_the_local_dashboard_shows_every_tenant_without_a_key(ledger_url: str):
    with TestClient(create_app(settings=Settings(ledger_url=ledger_url), local=True)) as local:
        me = local.get("/budgetgraph/api/me").json()
        everyone = local.get("/budgetgraph/api/report").json()
        globex = local.get("/budgetgraph/api/report?tenant=globex").json()

    assert me == {"tenant": None, "all_tenants": True, "tenants": ["acme", "globex"]}
    assert everyone == cli_report(ledger_url)
    assert globex == cli_report(ledger_url, "--tenant", "globex")


def test_budgetgraph_dashboard_refuses_a_public_address_without_api_keys():
    done = runner.invoke(cli, ["dashboard", "--host", "0.0.0.0"])

    assert done.exit_code == 2
    assert "not a loopback address" in done.output
