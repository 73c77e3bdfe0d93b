"""`budgetgraph dashboard`: the same app under uvicorn, every tenant on a loopback address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from budgetgraph.budgets.caps import Scopes
from budgetgraph.budgets.ledger import Charge, open_ledger
from tests.serving import REPO_ROOT, free_port

BUDGETGRAPH = Path(sys.executable).parent / "budgetgraph"

pytestmark = pytest.mark.timeout(120)


def seed(url: str) -> None:
    ledger = open_ledger(url)
    now = datetime.now(UTC)
    for tenant, thread, cost in (("acme", "a-1", 1200), ("globex", "g-1", 3400)):
        record = {
            "ts": now.isoformat(),
            "tenant": tenant,
            "thread_id": thread,
            "node": "cto",
            "tier": "standard",
            "model": "gpt-4.1-mini",
            "input_tokens": 800,
            "output_tokens": 200,
            "cost_micro_usd": cost,
            "saved_micro_usd": 0,
            "cache_hit": False,
            "alerts": [],
            "latency_ms": 900,
            "decisions": [],
        }
        scopes = Scopes.named("cto", thread_id=thread, tenant=tenant, now=now)
        ledger.record(scopes.all(), Charge(1000, cost), record)  # type: ignore[arg-type]
    ledger.close()


def test_budgetgraph_dashboard_serves_every_tenant_locally_equal_to_report_json(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    seed(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETGRAPH_", "OPENAI_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    server = subprocess.Popen(
        [str(BUDGETGRAPH), "dashboard", "--port", str(port), "--ledger", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/budgetgraph"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                me = httpx.get(f"{base}/api/me", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "`budgetgraph dashboard` did not answer"
                time.sleep(0.2)
        report = httpx.get(f"{base}/api/report", params={"tenant": "globex"}, timeout=30).json()
        page = httpx.get(f"{base}/", timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=15)

    expected = subprocess.run(
        [str(BUDGETGRAPH), "report", "--json", "--tenant", "globex", "--ledger", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert me.json() == {"tenant": None, "all_tenants": True, "tenants": ["acme", "globex"]}
    assert report == json.loads(expected.stdout)
    assert report["total"]["cost_micro_usd"] == 3400
    assert page.status_code == 200 and "budgetgraph" in page.text
