"""Spend is never lost, faked or wedged: the gateway against a real server that misbehaves.

Usage is never taken on trust, every billed answer is repaired and recorded,
every attempt that may have been billed is accounted for, and retries stop at
the latency cap.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import (
    BudgetExceededError,
    CallRequest,
    Gateway,
    ModelOutputError,
    load_budgets,
    load_models,
)
from budgetgraph.budgets import chat as chat_module
from budgetgraph.budgets import request as request_module
from budgetgraph.budgets.chat import ChatModels, _implausible
from budgetgraph.budgets.gateway import ORPHANED
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.report import build_report, unsettled_attempts
from budgetgraph.budgets.request import count_tokens, tokenizer_name
from budgetgraph.graph.builder import NODE_NAMES
from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer


class Answer(BaseModel):
    verdict: str
    score: int = Field(ge=1, le=5)


PROMPT = [SystemMessage("You are the CTO of a small company."), HumanMessage("Rate this plan " * 20)]
FALLBACK_ON_EVERY_ERROR = (
    "router:\n  fallback: {errors: [rate_limit, server_error, timeout, connection], cooldown_s: 0}\n"
)


def local_answer() -> Answer:
    return Answer(verdict="local", score=1)


def gateway(
    tmp_path: Path, server: FakeOpenAIServer, budgets_yaml: str = "budgets: {}\n", **tier_settings: object
) -> Gateway:
    models = write_models(tmp_path / "models.yaml", server.base_url, **tier_settings)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(budgets_yaml)
    return Gateway(
        load_models(models),
        load_budgets(budgets, node_names=NODE_NAMES),
        ledger=open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite"),
    )


def request(**changes: object) -> CallRequest:
    return CallRequest(
        node="cto", messages=PROMPT, schema=Answer, tier="standard", local=local_answer
    ).evolve(**changes)


def spent_everywhere(gw: Gateway, thread: str = "unthreaded") -> list[int]:
    """Spent tokens and micro-USD on the run's, the node's and the tenant's day scopes."""
    scopes = [f"run:{thread}", f"run:{thread}:node:cto"]
    scopes += _tenant_scopes()
    out = []
    for scope in scopes:
        totals = gw.ledger.totals(scope)
        out += [totals.spent.tokens, totals.spent.micro_usd]
    return out


def _tenant_scopes() -> list[str]:
    from datetime import UTC, datetime

    from budgetgraph.budgets.caps import Scopes

    scopes = Scopes.named("cto", thread_id=None, tenant="default", now=datetime.now(UTC))
    return [scopes.hour, scopes.day, scopes.month]


# -- usage is never taken on trust ---------------------------------------------------------


def test_the_tokenizer_is_tiktoken_with_its_data_from_a_package_not_a_download():
    assert tokenizer_name("gpt-4.1-mini") == "tiktoken:o200k_base"
    assert tokenizer_name("gpt-4") == "tiktoken:cl100k_base"
    assert tokenizer_name("llama3.1:8b") == "tiktoken:o200k_base"  # any other model: o200k_base
    assert count_tokens("Hello world, this is a test of the tokenizer.", "gpt-4.1") == 11


def test_without_tokenizer_data_tokens_are_four_characters_each(monkeypatch, caplog):
    monkeypatch.setattr(request_module, "TOKENIZER_DATA_PACKAGE", "no_such_package_here")
    request_module._encoding.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert count_tokens("x" * 41, "gpt-4.1") == 11
        assert tokenizer_name("gpt-4.1") == "chars/4"
        assert "No tokenizer data" in caplog.text
    finally:
        request_module._encoding.cache_clear()


def test_a_response_without_usage_is_counted_by_tokenizer_priced_settled_and_marked(
    tmp_path, openai_server: FakeOpenAIServer, caplog
):
    openai_server.inject_faults({"missing_usage": 1.0})
    gw = gateway(tmp_path, openai_server)
    chat_module._warn_estimated.cache_clear()  # once per model and process

    with caplog.at_level(logging.WARNING, logger="budgetgraph.budgets.chat"):
        result = gw.call(request())
        gw.call(request())

    (call,) = result.calls
    assert call["usage"] == "estimated" and any(d["action"] == "estimate" for d in call["decisions"])
    assert call["output_tokens"] == count_tokens(result.message.text, "gpt-4.1-mini") > 0
    assert 0 < call["input_tokens"] <= request().estimate_input_tokens()
    assert call["input_tokens"] == request().count_input_tokens("gpt-4.1-mini")
    assert call["cost_micro_usd"] > 0 and call["priced"]
    assert gw.ledger.totals("run:unthreaded").spent.tokens == 2 * (
        call["input_tokens"] + call["output_tokens"]
    )
    assert [r["usage"] for r in gw.ledger.records()] == ["estimated", "estimated"]
    assert caplog.text.count("without usage") == 1  # once per model


def test_a_server_that_never_reports_usage_cannot_be_used_to_pass_a_cap(tmp_path, openai_server):
    openai_server.inject_faults({"missing_usage": 1.0})
    gw = gateway(tmp_path, openai_server, "budgets:\n  cto: {max_tokens: 3000}\n")
    session = gw.session("cto")

    with pytest.raises(BudgetExceededError, match="max_tokens"):
        for _ in range(60):
            session.ask(PROMPT, Answer, local=local_answer)

    spent = sum(c["input_tokens"] + c["output_tokens"] for c in session.calls)
    assert len(session.calls) > 1 and {c["usage"] for c in session.calls} == {"estimated"}
    assert spent == gw.ledger.totals("run:unthreaded:node:cto").spent.tokens <= 3000  # no overspend
    report = build_report(gw.ledger, gw.models)
    assert report["usage"]["estimated"] == {
        "calls": len(session.calls),
        "tokens": spent,
        "cost_micro_usd": sum(c["cost_micro_usd"] for c in session.calls),
        "cost_usd": pytest.approx(sum(c["cost_micro_usd"] for c in session.calls) / 1e6),
    }
    assert any("estimated by tokenizer" in line for line in report["recommendations"])


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("negative_usage", "negative"),
        ("absurd_usage", "over"),
        ("tiny_usage", "under the prompt's"),
        ("partial_usage", "under the prompt's"),
    ],
)
def test_impossible_usage_is_refused_and_the_call_counted_at_its_reservation(
    tmp_path, openai_server: FakeOpenAIServer, kind: str, why: str
):
    openai_server.inject_faults({kind: 1.0})
    gw = gateway(tmp_path, openai_server)

    result = gw.call(request())

    (call,) = result.calls
    sent = openai_server.chat_requests()[0].body
    assert call["usage"] == "refused"
    assert (call["input_tokens"], call["output_tokens"]) == (
        request().estimate_input_tokens(),
        sent["max_completion_tokens"],
    )
    refusal = next(d["reason"] for d in call["decisions"] if d["action"] == "refuse")
    assert why in refusal
    tokens = call["input_tokens"] + call["output_tokens"]
    assert all(0 <= v <= max(tokens, call["cost_micro_usd"]) for v in spent_everywhere(gw))
    assert gw.ledger.totals("run:unthreaded").spent.tokens == tokens
    assert gw.ledger.records()[0]["usage"] == "refused"


@pytest.mark.parametrize(
    ("figures", "problem"),
    [
        ((100, 50, 0, 0), None),
        ((100.0, 50, 0, 0), None),
        ((-1, 50, 0, 0), "negative"),
        ((100, 12.5, 0, 0), "not a whole number"),
        ((100, "50", 0, 0), "not a whole number"),
        ((100, True, 0, 0), "not a whole number"),
        ((100, 10 * 256 + 1, 0, 0), "completion cap"),
        ((100 * 40 + 1, 50, 0, 0), "estimate"),
        ((100, 50, 101, 0), "cached"),
        ((100, 50, 0, 51), "reasoning"),
        ((10_000_001, 50, 0, 0), "over 10000000"),
    ],
)
def test_usage_that_cannot_be_true_is_told_from_usage_that_can(figures, problem):
    found = _implausible(figures, max_out=256, estimate=40 if figures[0] < 10_000_000 else 10**6)

    assert (found is None) if problem is None else (problem in found)


def test_usage_below_what_the_text_can_hold_is_refused():
    assert (
        _implausible((100, 50, 0, 0), max_out=256, estimate=400, prompt_chars=1200, completion_chars=600)
        is None
    )
    tiny_in = _implausible((1, 50, 0, 0), max_out=256, estimate=400, prompt_chars=1200, completion_chars=600)
    tiny_out = _implausible(
        (100, 1, 0, 0), max_out=256, estimate=400, prompt_chars=1200, completion_chars=600
    )
    assert "under the prompt's 1200 characters" in tiny_in and "under the answer's 600 characters" in tiny_out


@pytest.mark.parametrize(("reported", "charged"), [("gpt-4.1-nano", "configured"), ("gpt-4.1", "reported")])
def test_a_call_is_priced_at_the_higher_of_the_reported_and_the_configured_model(
    tmp_path, openai_server: FakeOpenAIServer, reported: str, charged: str
):
    gw = gateway(tmp_path, openai_server)
    configured = gw.models.endpoints["standard"].settings.model
    openai_server.model = reported
    try:
        (call,) = gw.call(request()).calls
    finally:
        openai_server.model = None

    def at(model: str) -> int:
        return gw.prices.price(
            model, input_tokens=call["input_tokens"], output_tokens=call["output_tokens"]
        ).micro_usd

    assert call["model"] == reported and at(reported) != at(configured)
    assert call["cost_micro_usd"] == max(at(reported), at(configured))
    notes = [d["reason"] for d in call["decisions"] if d["action"] == "price"]
    if charged == "configured":
        assert notes == [
            f"the server reported `{reported}`, priced below the configured `{configured}`: "
            f"charged at `{configured}`"
        ]
    else:
        assert notes == []


# -- every billed answer is repaired and recorded ------------------------------------------


def test_a_bad_answer_to_a_tool_bound_call_is_repaired_and_both_answers_are_counted(tmp_path, openai_server):
    openai_server.inject_faults({"schema_violation": 1.0}, limit=1)
    gw = gateway(tmp_path, openai_server)
    session = gw.session("cto")

    answer = session.ask(PROMPT, Answer, local=local_answer, tools=[calculate])

    assert isinstance(answer, Answer) and answer.verdict != "local"
    served = openai_server.chat_requests()
    assert [r.fault for r in served] == ["schema_violation", None] and "tools" in served[0].body
    assert [(c["input_tokens"], c["output_tokens"]) for c in session.calls] == [
        (r.billed["prompt_tokens"], r.billed["completion_tokens"]) for r in served
    ]
    assert gw.ledger.totals("run:unthreaded").spent.tokens == openai_server.billed.tokens


def test_tool_call_arguments_that_are_not_json_get_the_repair_retry(tmp_path, openai_server):
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": '{"expression": "1+'}])
    gw = gateway(tmp_path, openai_server)
    session = gw.session("cto")

    answer = session.ask(PROMPT, Answer, local=local_answer, tools=[calculate])

    assert isinstance(answer, Answer) and len(session.calls) == 2
    assert "did not match" in openai_server.chat_requests()[1].body["messages"][-1]["content"]


def test_an_answer_that_failed_its_schema_is_never_replayed_a_resume_asks_again(tmp_path, openai_server):
    openai_server.inject_faults({"schema_violation": 1.0}, limit=2)
    gw = gateway(tmp_path, openai_server)

    with pytest.raises(ModelOutputError) as info:
        gw.session("cto", thread_id="t", step="s").ask(PROMPT, Answer, local=local_answer)
    assert "\n" not in str(info.value)  # a failed run's error is one line
    session = gw.session("cto", thread_id="t", step="s")
    answer = session.ask(PROMPT, Answer, local=local_answer)

    assert isinstance(answer, Answer) and len(openai_server.chat_requests()) == 3
    assert gw.ledger.totals("run:t").spent.tokens == openai_server.billed.tokens  # every answer, once


# -- attempts are accounted for --------------------------------------------------------------


def test_a_timed_out_attempt_is_kept_unsettled_at_its_reservation_and_reported(tmp_path, openai_server):
    openai_server.inject_faults({"hang": 1.0}, limit=1, hang_s=0.6)
    gw = gateway(tmp_path, openai_server, timeout_s=0.2)

    result = gw.call(request())  # the standard tier times out; the router falls back to economy

    assert result.calls[0]["tier"] == "economy"
    (unsettled,) = gw.ledger.unsettled()
    assert unsettled["usage"] == "unsettled" and unsettled["tier"] == "standard"
    assert "Timeout" in unsettled["reason"]
    reserved = unsettled["input_tokens"] + unsettled["output_tokens"]
    settled = result.calls[0]["input_tokens"] + result.calls[0]["output_tokens"]
    totals = gw.ledger.totals("run:unthreaded")
    assert totals.spent.tokens == reserved + settled and totals.reserved.tokens == 0
    assert openai_server.wait_idle(5)
    hung = next(r for r in openai_server.requests if r.fault == "hang")
    assert hung.billed["prompt_tokens"] + hung.billed["completion_tokens"] <= reserved  # an upper bound
    report = build_report(gw.ledger, gw.models)
    assert (report["unsettled"]["attempts"], report["unsettled"]["open"]) == (1, 0)
    assert report["unsettled"]["tokens"] == reserved
    assert any("never settled" in line for line in report["recommendations"])


def test_an_attempt_left_open_by_a_crash_is_closed_at_once_when_its_call_is_asked_again(
    tmp_path, openai_server, monkeypatch
):
    real_send = ChatModels._send

    def crash_with_the_answer_in_hand(self, chat, request):
        real_send(self, chat, request)
        raise SystemError("killed")

    monkeypatch.setattr(ChatModels, "_send", crash_with_the_answer_in_hand)
    gw = gateway(tmp_path, openai_server)
    with pytest.raises(SystemError):
        gw.session("cto", thread_id="t", step="s").ask(PROMPT, Answer, local=local_answer)
    monkeypatch.setattr(ChatModels, "_send", real_send)
    (left_open,) = gw.ledger.open_attempts()
    assert gw.ledger.totals("run:t").reserved.tokens == left_open.reservation.charge.tokens > 0
    assert build_report(gw.ledger, gw.models)["unsettled"]["open"] == 1
    assert [row["state"] for row in unsettled_attempts(gw.ledger, thread_id="t")] == ["open"]
    assert unsettled_attempts(gw.ledger, thread_id="another") == []

    session = gw.session("cto", thread_id="t", step="s")
    session.ask(PROMPT, Answer, local=local_answer)

    assert gw.ledger.open_attempts() == [] and gw.ledger.totals("run:t").reserved.tokens == 0
    (unsettled,) = gw.ledger.unsettled()
    assert unsettled["reason"] == ORPHANED and unsettled["thread_id"] == "t"
    assert [row["state"] for row in unsettled_attempts(gw.ledger, thread_id="t")] == ["unsettled"]
    charged = left_open.reservation.charge.tokens + sum(
        c["input_tokens"] + c["output_tokens"] for c in session.calls
    )
    assert gw.ledger.totals("run:t").spent.tokens == charged
    assert left_open.reservation.charge.tokens >= openai_server.requests[0].billed["prompt_tokens"]


# -- retries are bounded ----------------------------------------------------------------------


def test_a_server_answering_429_forever_is_given_up_within_a_small_latency_cap(tmp_path, openai_server):
    openai_server.inject_faults({"rate_limit": 1.0}, retry_after_s=0.05)
    # max_retries at its most (10): the latency cap stops it first
    gw = gateway(tmp_path, openai_server, "budgets:\n  cto: {max_latency_ms: 600}\n", max_retries=10)

    started = time.monotonic()
    with pytest.raises(BudgetExceededError) as info:
        gw.session("cto").ask(PROMPT, Answer, local=local_answer)
    elapsed = time.monotonic() - started

    assert info.value.limit == "max_latency_ms" and elapsed < 0.6 + 0.4
    assert len(openai_server.requests) < 100


def test_retry_after_is_waited_for_but_never_past_the_latency_cap(tmp_path, openai_server):
    gw = gateway(tmp_path, openai_server, "budgets:\n  cto: {max_latency_ms: 2000}\n", max_retries=2)
    openai_server.inject_faults({"rate_limit": 1.0}, retry_after_s=0.3, limit=3)  # every tier, once

    started = time.monotonic()
    result = gw.call(request())
    waited = time.monotonic() - started

    assert result.output is not None and waited >= 0.3
    assert any(d["action"] == "retry" and "HTTP 429" in d["reason"] for d in result.calls[0]["decisions"])

    openai_server.inject_faults({"rate_limit": 1.0}, retry_after_s=5, limit=3)
    started = time.monotonic()
    with pytest.raises(BudgetExceededError, match="max_latency_ms"):
        gw.call(request())
    assert time.monotonic() - started < 0.5  # it did not sleep the 5 s


def test_a_200_that_is_not_json_falls_back_to_another_tier(tmp_path, openai_server):
    openai_server.inject_faults({"non_json": 1.0}, models=["gpt-4.1-mini"])
    gw = gateway(tmp_path, openai_server, FALLBACK_ON_EVERY_ERROR)

    result = gw.call(request())

    assert result.output is not None and result.calls[0]["tier"] == "economy"
    assert any(d["action"] == "fallback" for d in result.calls[0]["decisions"])
    (unsettled,) = gw.ledger.unsettled()  # the page the model's answer was lost in may have been billed
    assert unsettled["tier"] == "standard" and "without a usable chat completion" in unsettled["reason"]


@pytest.mark.parametrize("kind", ["non_json", "malformed_json", "drop"])
def test_an_unusable_200_is_retried_like_a_broken_connection(tmp_path, openai_server, kind):
    openai_server.inject_faults({kind: 1.0}, limit=1)
    gw = gateway(tmp_path, openai_server, max_retries=1)

    result = gw.call(request())

    assert result.output is not None and result.calls[0]["tier"] == "standard"
    assert any(d["action"] == "retry" for d in result.calls[0]["decisions"])
    assert len(gw.ledger.unsettled()) == 1


def test_retries_of_answers_that_may_have_been_billed_stop_when_the_run_budget_is_spent(
    tmp_path, openai_server
):
    openai_server.inject_faults({"hang": 1.0}, hang_s=0.3)
    budgets = "budgets:\n  total_task_budget: {max_tokens: 7000}\n"
    gw = gateway(tmp_path, openai_server, budgets, timeout_s=0.1, max_retries=10)  # the most allowed

    with pytest.raises(BudgetExceededError, match="total_task_budget.max_tokens"):
        gw.session("cto").ask(PROMPT, Answer, local=local_answer)

    assert gw.ledger.totals("run:unthreaded").spent.tokens <= 7000  # every attempt at its reservation
    assert len(gw.ledger.unsettled()) == len(openai_server.requests) < 10
