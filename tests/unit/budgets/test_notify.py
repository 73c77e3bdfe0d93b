"""Budget alerts reach a real webhook receiver on 127.0.0.1 through apprise, once per cap and level."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from budgetgraph.budgets.config import AlertsSettings
from budgetgraph.budgets.ledger import AlertCheck, Cap, Charge, Ledger, Reservation, open_ledger
from budgetgraph.budgets.notify import AlertNotifier, notifier_for

DAY = "tenant:acme:day:2026-11-20"
NODE = "run:t-1:node:cto"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/budget-alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def spend(ledger: Ledger, notifier: AlertNotifier, micro_usd: int, checks: list[AlertCheck]) -> None:
    """One call's settlement, as the limits plugin makes it: reserve, settle, send what was noted first."""
    scopes = [check.cap.scope for check in checks]
    reservation = ledger.reserve(Charge(micro_usd=micro_usd), scopes, [])
    assert isinstance(reservation, Reservation)
    noted = ledger.settle(reservation, Charge(micro_usd=micro_usd), None, alerts=checks)
    notifier.send(noted, tenant="acme", node="cto", thread_id="t-1")


def checks() -> list[AlertCheck]:
    return [
        AlertCheck(Cap(DAY, "daily.max_cost_usd", "micro_usd", 1000), (0.7, 0.9, 1.0)),
        AlertCheck(Cap(NODE, "max_cost_usd", "micro_usd", 2000), (0.5, 1.0)),
    ]


def test_an_alert_reaches_the_webhook_once_per_cap_and_level_across_processes(
    receiver: Receiver, tmp_path: Path
):
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    one, other = open_ledger(url), open_ledger(url)  # two processes' ledgers on one file
    notifier = AlertNotifier(AlertsSettings(notify=(receiver.url,)))

    for ledger, micro_usd in [(one, 500), (one, 300), (other, 150), (one, 100), (other, 50), (one, 1000)]:
        spend(ledger, notifier, micro_usd, checks())
    assert notifier.flush(timeout_s=30)

    sent = [body["title"] for body in receiver.bodies]
    assert sorted(sent) == sorted(
        [
            "budgetgraph: `daily.max_cost_usd` at 80% of its cap (alert at 70%)",
            "budgetgraph: `daily.max_cost_usd` at 95% of its cap (alert at 90%)",
            "budgetgraph: `daily.max_cost_usd` at 105% of its cap (alert at 100%)",
            "budgetgraph: `max_cost_usd` at 52% of its cap (alert at 50%)",
            "budgetgraph: `max_cost_usd` at 105% of its cap (alert at 100%)",
        ]
    )
    full = next(b for b in receiver.bodies if "alert at 100%" in b["title"] and "daily" in b["title"])
    assert full["type"] == "failure" and DAY in full["message"] and "Tenant: acme" in full["message"]
    assert {a["threshold"] for a in one.alerts() if a["scope"] == DAY} == {0.7, 0.9, 1.0}

    again = AlertNotifier(AlertsSettings(notify=(receiver.url,)))  # a restarted process
    spend(open_ledger(url), again, 500, checks())
    assert again.flush(timeout_s=30) and len(receiver.bodies) == 5


def test_only_the_configured_levels_are_sent(receiver: Receiver):
    ledger = open_ledger("memory:")
    notifier = AlertNotifier(AlertsSettings(notify=(receiver.url,), levels=(1.0,)))

    for micro_usd in (800, 150, 100):
        spend(ledger, notifier, micro_usd, checks()[:1])
    assert notifier.flush(timeout_s=30)

    assert [b["title"] for b in receiver.bodies] == [
        "budgetgraph: `daily.max_cost_usd` at 105% of its cap (alert at 100%)"
    ]
    assert len(ledger.alerts()) == 3  # every threshold is still recorded


def test_a_failed_delivery_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture):
    with Receiver(status=500) as failing:
        refused = failing.url.replace("json://", "json://user:SECRET@")
        notifier = AlertNotifier(AlertsSettings(notify=(refused, failing.url)))
        ledger = open_ledger("memory:")
        with caplog.at_level(logging.WARNING, logger="budgetgraph.budgets.notify"):
            spend(ledger, notifier, 2000, checks()[:1])
            assert notifier.flush(timeout_s=30)

    assert len(failing.bodies) == 6  # three alerts, each tried at both URLs
    warnings = [r.getMessage() for r in caplog.records if r.name == "budgetgraph.budgets.notify"]
    assert len(warnings) == 6 and all("not delivered to json://127.0.0.1" in w for w in warnings)
    assert not any("SECRET" in w for w in warnings)


def test_no_url_sends_nothing_and_starts_nothing():
    assert notifier_for(AlertsSettings()) is None
    idle = AlertNotifier(AlertsSettings())
    spend(open_ledger("memory:"), idle, 5000, checks())
    assert idle.flush(timeout_s=0) and idle._executor is None


def test_budgets_yaml_names_the_urls_and_levels_and_refuses_one_apprise_cannot_use(tmp_path: Path):
    from budgetgraph.budgets import ConfigError
    from budgetgraph.budgets.config import load_budgets

    nodes = {name: name for name in ("planner", "cto", "coo", "reconcile")}
    nodes |= {"orchestrator": "planner", "cto_agent": "cto", "coo_agent": "coo", "reconcile_gpt": "reconcile"}
    good = tmp_path / "good.yaml"
    good.write_text("alerts:\n  notify: ['json://127.0.0.1:9/hook']\n  levels: [0.9, 1]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  notify:\n    - json://127.0.0.1:9/hook\n    - nosuch://user:SECRET@host\n")

    alerts = load_budgets(good, node_names=nodes).alerts
    with pytest.raises(ConfigError) as refused:
        load_budgets(bad, node_names=nodes)

    assert alerts == AlertsSettings(notify=("json://127.0.0.1:9/hook",), levels=(0.9, 1.0))
    assert f"{bad}:4: `alerts.notify.1`: " in str(refused.value) and "SECRET" not in str(refused.value)
    assert load_budgets(None, node_names=nodes).alerts == AlertsSettings()
