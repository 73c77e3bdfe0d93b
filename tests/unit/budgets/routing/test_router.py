"""The router plugin, through the gateway, against real OpenAI-compatible servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import yaml
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

import budgetgraph.budgets.plugins.router as router_module
from budgetgraph.budgets import ConfigError, Gateway, load_budgets, load_models
from budgetgraph.budgets.ledger import Charge, LedgerRecord, open_ledger
from budgetgraph.budgets.routing import Cooldowns
from budgetgraph.graph.builder import NODE_NAMES
from tests.fakes.openai_server import FakeOpenAIServer

LOOKUP = "What does DNS stand for?"
DESIGN = (
    "Compare moving our order service to a second region with active-active Postgres against a warm "
    "standby, given a 2-minute recovery objective, GDPR residency and our 5 engineers, and recommend one."
)


class Answer(BaseModel):
    answer: str


def ask(gateway: Gateway, text: str, *, tier=None, node: str = "cto", thread: str = "t") -> dict:
    session = gateway.session(node, thread_id=thread)
    session.ask(
        [SystemMessage("You are the CTO."), HumanMessage(text)],
        Answer,
        tier=tier,
        local=lambda: Answer(answer="local"),
    )
    return session.calls[-1]


def make_gateway(tmp_path: Path, models: Path, budgets_yaml: str = "budgets: {}\n", ledger=None) -> Gateway:
    path = tmp_path / "budgets.yaml"
    path.write_text(budgets_yaml)
    return Gateway(load_models(models), load_budgets(path, node_names=NODE_NAMES), ledger=ledger)


def models_served(server: FakeOpenAIServer) -> list[tuple[str, int]]:
    return [(r.body["model"], r.status) for r in server.requests if r.path.endswith("/chat/completions")]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The process's cooldowns on a clock the test moves."""
    now = [1000.0]
    monkeypatch.setattr(router_module, "COOLDOWNS", Cooldowns(clock=lambda: now[0]))
    return now


def spend(ledger, scope: str, micro_usd: int) -> None:
    record = LedgerRecord(
        ts="2026-11-20T00:00:00+00:00", tenant="default", thread_id="t", node="cto", tier="standard",
        model="gpt-4.1-mini", input_tokens=0, output_tokens=0, cost_micro_usd=micro_usd,
        saved_micro_usd=0, cache_hit=False, alerts=[],
    )  # fmt: skip
    ledger.record([scope], Charge(micro_usd=micro_usd), record)


def test_complexity_routing_serves_a_lookup_on_economy_and_a_design_question_on_premium(
    tmp_path, models_file, openai_server: FakeOpenAIServer
):
    gateway = make_gateway(tmp_path, models_file, "router: {complexity: {enabled: true}}\n")

    lookup = ask(gateway, LOOKUP, tier="premium")
    design = ask(gateway, DESIGN, tier="premium")

    assert models_served(openai_server) == [("gpt-4.1-nano", 200), ("gpt-4.1", 200)]
    assert (lookup["tier"], design["tier"]) == ("economy", "premium")
    ((decision,),) = [lookup["decisions"]]
    assert decision["plugin"] == "router" and decision["action"] == "route"
    assert "< standard_at 0.27" in decision["reason"] and decision["reason"].endswith("premium -> economy")


def test_without_a_router_section_a_call_keeps_its_tier_and_records_no_decision(
    tmp_path, models_file, openai_server
):
    call = ask(make_gateway(tmp_path, models_file), LOOKUP)

    assert (call["tier"], call["decisions"]) == ("standard", [])


def test_a_nodes_max_tier_caps_its_calls(tmp_path, models_file, openai_server):
    gateway = make_gateway(tmp_path, models_file, "router: {nodes: {cto: {max_tier: economy}}}\n")

    call = ask(gateway, DESIGN, tier="premium")

    assert call["tier"] == "economy" and call["model"] == "gpt-4.1-nano"
    assert call["decisions"][0]["reason"] == "`cto` has max_tier economy: premium -> economy"


def test_the_budget_left_in_the_ledger_moves_calls_down_a_tier_then_to_local(
    tmp_path, models_file, openai_server: FakeOpenAIServer
):
    ledger = open_ledger("memory:")
    gateway = make_gateway(tmp_path, models_file, "nodes:\n  cto: {max_cost_usd: 0.01}\n", ledger=ledger)
    spend(ledger, "run:t:node:cto", 6_000)  # 40% of the node's budget left

    degraded = ask(gateway, DESIGN)
    spend(ledger, "run:t:node:cto", 2_500)  # about 15% left, less what the last call cost
    local = ask(gateway, DESIGN + " Be brief.")

    assert degraded["tier"] == "economy" and degraded["decisions"][0]["action"] == "degrade"
    assert degraded["decisions"][0]["reason"].startswith("`max_cost_usd` on run:t:node:cto: 40% left (< 50%)")
    assert local["tier"] == "local" and local["decisions"][0]["action"] == "local"
    assert [model for model, _ in models_served(openai_server)] == ["gpt-4.1-nano"]


def test_a_rate_limited_model_rests_and_its_calls_fall_back_a_tier_until_the_cooldown_ends(
    tmp_path, models_file, openai_server: FakeOpenAIServer, clock
):
    gateway = make_gateway(tmp_path, models_file)
    openai_server.fail("Answer", status=429, times=1)

    first = ask(gateway, LOOKUP, thread="1")
    second = ask(gateway, LOOKUP, thread="2")
    clock[0] += 31
    third = ask(gateway, LOOKUP, thread="3")

    assert models_served(openai_server) == [
        ("gpt-4.1-mini", 429),
        ("gpt-4.1-nano", 200),
        ("gpt-4.1-nano", 200),  # the resting model was not tried
        ("gpt-4.1-mini", 200),
    ]
    assert (first["tier"], second["tier"], third["tier"]) == ("economy", "economy", "standard")
    assert first["decisions"] == [
        {
            "plugin": "router",
            "action": "fallback",
            "reason": "gpt-4.1-mini failed (HTTP 429) and rests 30 s: standard -> economy",
        }
    ]
    assert (
        second["decisions"][0]["reason"]
        == "gpt-4.1-mini rests after HTTP 429 (30 s left): standard -> economy"
    )
    assert third["decisions"] == []


def test_a_server_error_fails_the_call_unless_server_error_is_a_fallback_trigger(
    tmp_path, models_file, openai_server: FakeOpenAIServer, clock
):
    openai_server.fail("Answer", status=503, times=1)
    with pytest.raises(openai.InternalServerError):
        ask(make_gateway(tmp_path, models_file), LOOKUP)

    openai_server.fail("Answer", status=503, times=1)
    gateway = make_gateway(tmp_path, models_file, "router: {fallback: {errors: [server_error]}}\n")
    call = ask(gateway, LOOKUP, thread="u")

    assert call["tier"] == "economy" and "(HTTP 503)" in call["decisions"][0]["reason"]


def test_when_the_tiers_below_fail_a_dearer_one_serves_and_when_all_fail_the_error_is_raised(
    tmp_path, models_file, openai_server: FakeOpenAIServer, clock
):
    gateway = make_gateway(tmp_path, models_file)
    openai_server.fail("Answer", status=429, times=2)

    served = ask(gateway, LOOKUP)

    assert served["tier"] == "premium"
    assert [d["reason"].rsplit(": ", 1)[1] for d in served["decisions"]] == [
        "standard -> economy",
        "economy -> premium",
    ]

    clock[0] += 1000
    openai_server.fail("Answer", status=429, times=3)
    with pytest.raises(openai.RateLimitError):
        ask(gateway, LOOKUP, thread="u")
    assert [m for m, status in models_served(openai_server)[3:]] == [
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4.1",
    ]


def test_a_timeout_on_a_slow_server_falls_back_to_the_tier_on_a_fast_one(tmp_path, clock):
    with FakeOpenAIServer() as slow, FakeOpenAIServer() as fast:
        slow.delay("Answer", 2.0)
        tiers = {
            "economy": {"model": "gpt-4.1-nano", "base_url": fast.base_url, "max_retries": 0},
            "standard": {
                "model": "gpt-4.1-mini",
                "base_url": slow.base_url,
                "max_retries": 0,
                "timeout_s": 0.3,
            },
            "premium": {"model": "gpt-4.1", "base_url": fast.base_url, "max_retries": 0},
        }
        models = tmp_path / "models.yaml"
        models.write_text(yaml.safe_dump({"tiers": tiers}))

        call = ask(make_gateway(tmp_path, models), LOOKUP)

        assert call["tier"] == "economy" and fast.chat_requests()[0].body["model"] == "gpt-4.1-nano"
        assert (
            call["decisions"][0]["reason"]
            == "gpt-4.1-mini failed (timeout) and rests 30 s: standard -> economy"
        )


def test_a_bad_router_section_fails_when_the_gateway_is_built_naming_every_problem(tmp_path, models_file):
    text = (
        "router:\n"
        "  complexity: {enabled: true, standard_at: 2}\n"
        "  fallback: {errors: [teapot]}\n"
        "  nodes: {cto: {min_tier: premium, max_tier: economy}}\n"
        "  colour: blue\n"
    )

    with pytest.raises(ConfigError) as info:
        make_gateway(tmp_path, models_file, text)

    message = str(info.value)
    assert (
        "budgets.yaml:2: `router.complexity.standard_at`: Input should be less than or equal to 1" in message
    )
    assert "budgets.yaml:3: `router.fallback.errors.0`" in message
    assert "budgets.yaml:4: `router.nodes.cto`" in message and "`min_tier` (premium) is above" in message
    assert "budgets.yaml:5: `router.colour`: unknown key" in message
