"""The gateway and the limits plugin, against a real OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import (
    BudgetExceededError,
    ConfigError,
    Gateway,
    ModelOutputError,
    load_budgets,
    load_models,
)
from budgetgraph.graph.builder import NODE_NAMES
from tests.fakes.openai_server import FakeOpenAIServer


class Answer(BaseModel):
    verdict: str
    score: int = Field(ge=1, le=5)


PROMPT = [SystemMessage("You are the CTO of a small company."), HumanMessage("Rate this plan " * 20)]


def local_answer() -> Answer:
    return Answer(verdict="local", score=1)


def gateway(tmp_path: Path, models_file: Path, budgets_yaml: str = "budgets: {}\n") -> Gateway:
    path = tmp_path / "budgets.yaml"
    path.write_text(budgets_yaml)
    return Gateway(load_models(models_file), load_budgets(path, node_names=NODE_NAMES))


def test_a_call_records_the_usage_the_server_reported(tmp_path, models_file, openai_server: FakeOpenAIServer):
    openai_server.set_usage(cached_tokens=10, reasoning_tokens=3)
    session = gateway(tmp_path, models_file).session("cto")

    answer = session.ask(PROMPT, Answer, local=local_answer)

    assert isinstance(answer, Answer) and answer.verdict != "local"
    (call,) = session.calls
    (served,) = openai_server.chat_requests()
    assert call["input_tokens"] == served.usage["prompt_tokens"]
    assert call["output_tokens"] == served.usage["completion_tokens"]
    assert (call["cache_read_tokens"], call["reasoning_tokens"]) == (10, 3)
    assert call["tier"] == "standard" and call["model"] == "gpt-4.1-mini" and call["priced"]


def test_the_token_budget_refuses_a_call_before_it_is_sent(tmp_path, models_file, openai_server):
    session = gateway(tmp_path, models_file, "budgets:\n  cto: {max_tokens: 100}\n").session("cto")

    with pytest.raises(BudgetExceededError) as info:
        session.ask(PROMPT, Answer, local=local_answer)

    assert (info.value.node, info.value.limit, info.value.spent, info.value.cap) == (
        "cto",
        "max_tokens",
        0,
        100,
    )
    assert openai_server.chat_requests() == []


def test_the_output_cap_shrinks_to_what_the_budgets_leave(tmp_path, models_file, openai_server):
    session = gateway(
        tmp_path, models_file, "budgets:\n  cto: {max_tokens: 700, max_cost_usd: 0.01}\n"
    ).session("cto")

    session.ask(PROMPT, Answer, local=local_answer)

    (served,) = openai_server.chat_requests()
    assert served.body["max_completion_tokens"] < 700


def test_the_task_budget_counts_every_nodes_spend(tmp_path, models_file, openai_server):
    gw = gateway(tmp_path, models_file, "budgets:\n  total_task_budget: {max_tokens: 900}\n")
    first = gw.session("planner")
    first.ask(PROMPT, Answer, local=local_answer)
    spent = first.calls[0]["input_tokens"] + first.calls[0]["output_tokens"]

    second = gw.session("cto", history=first.calls)
    with pytest.raises(BudgetExceededError) as info:
        for _ in range(10):
            second.ask(PROMPT, Answer, local=local_answer)
    assert info.value.limit == "total_task_budget.max_tokens"
    assert info.value.spent == spent + sum(c["input_tokens"] + c["output_tokens"] for c in second.calls)
    assert info.value.spent <= 900


def test_tool_calls_past_the_cap_are_refused(tmp_path, models_file, openai_server: FakeOpenAIServer):
    calls = [{"name": "calculate", "arguments": {"expression": "1+1"}}] * 2
    openai_server.script_tool_calls("cto", calls)
    session = gateway(tmp_path, models_file, "budgets:\n  cto: {max_tool_calls: 1}\n").session("cto")

    with pytest.raises(BudgetExceededError, match="max_tool_calls"):
        session.ask(PROMPT, Answer, local=local_answer, tools=[calculate])


def test_a_node_without_tool_budget_left_is_offered_no_tools(tmp_path, models_file, openai_server):
    session = gateway(tmp_path, models_file, "budgets:\n  cto: {max_tool_calls: 0}\n").session("cto")

    session.ask(PROMPT, Answer, local=local_answer, tools=[calculate])

    assert "tools" not in openai_server.chat_requests()[0].body


def test_the_latency_budget_becomes_the_request_timeout(
    tmp_path, models_file, openai_server: FakeOpenAIServer
):
    openai_server.delay("cto", 1.0)
    session = gateway(tmp_path, models_file, "budgets:\n  cto: {max_latency_ms: 300}\n").session("cto")

    with pytest.raises(BudgetExceededError) as info:
        session.ask(PROMPT, Answer, local=local_answer)

    assert info.value.limit == "max_latency_ms" and info.value.cap == 300


def test_an_answer_that_fails_its_schema_is_asked_for_again_once(tmp_path, models_file, openai_server):
    openai_server.set_fields("Answer", score=9)
    session = gateway(tmp_path, models_file).session("cto")

    with pytest.raises(ModelOutputError, match="`Answer`"):
        session.ask(PROMPT, Answer, local=local_answer)

    assert len(openai_server.chat_requests()) == 2
    assert len(session.calls) == 2  # both round trips are counted
    assert "did not match" in openai_server.chat_requests()[1].body["messages"][-1]["content"]


def test_an_unknown_plugin_fails_when_the_gateway_is_built(tmp_path, models_file):
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets: {}\n")
    with pytest.raises(ConfigError, match="unknown plugin `nope`"):
        Gateway(load_models(models_file), load_budgets(path, node_names=NODE_NAMES), default_chain=["nope"])


def test_an_answer_cut_at_the_completion_cap_is_counted_and_repaired(
    tmp_path, openai_server: FakeOpenAIServer
):
    from tests.conftest import write_models

    models = write_models(tmp_path / "short.yaml", openai_server.base_url, max_output_tokens=5)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets: {}\n")
    session = Gateway(load_models(models), load_budgets(budgets, node_names=NODE_NAMES)).session("cto")

    with pytest.raises(ModelOutputError):
        session.ask(PROMPT, Answer, local=local_answer)

    served = openai_server.chat_requests()
    assert [c["output_tokens"] for c in session.calls] == [5, 5]
    assert [c["input_tokens"] for c in session.calls] == [r.usage["prompt_tokens"] for r in served]


def test_a_chain_without_the_router_sends_a_tier_with_no_endpoint_local_and_closes_its_attempt(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "budgets.yaml"
    path.write_text("plugins: [limits]\n")
    gw = Gateway(load_models(None), load_budgets(path, node_names=NODE_NAMES))
    session = gw.session("cto")

    answer = session.ask(PROMPT, Answer, local=local_answer)

    (call,) = session.calls
    assert answer.verdict == "local" and call["tier"] == "local" and call["cost_micro_usd"] == 0
    assert any("has no model endpoint" in d["reason"] for d in call["decisions"])
    assert gw.ledger.open_attempts() == []  # nothing left open, nothing reserved
