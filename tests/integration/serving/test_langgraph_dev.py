"""The decision graph served by `langgraph dev`, driven through the official LangGraph SDK.

One `langgraph dev` process is started for the module (see :mod:`tests.serving`),
with the repository's real ``langgraph.json`` and its model tiers pointed at a
:class:`FakeOpenAIServer` that lives as long as it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.schema import Command

from tests.fakes.openai_server import FakeOpenAIServer
from tests.serving import GRAPH_ID, TEST_TIMEOUT_S, ServedGraph

pytestmark = [pytest.mark.server, pytest.mark.timeout(TEST_TIMEOUT_S)]

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
CONSTRAINTS = ["Keep card data in one region"]
AGENTS = ["coo", "cto", "planner", "reconcile"]
NodeTier = tuple[str, str]
DEFAULT_PLAN = {("planner", "standard"), ("cto", "standard"), ("coo", "standard"), ("reconcile", "premium")}
"""What the packaged router.decision plans for TASK (a PCI-bound billing migration)."""


@pytest.fixture
def thread_id(client: SyncLangGraphClient) -> str:
    return str(client.threads.create()["thread_id"])


@pytest.fixture
def make_assistant(client: SyncLangGraphClient, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create an assistant of the `decision` graph with a context; it is deleted after the test."""

    def make(**context: Any) -> str:
        assistant = client.assistants.create(GRAPH_ID, context=context, name=f"decision-{request.node.name}")
        request.addfinalizer(lambda: client.assistants.delete(assistant["assistant_id"]))
        return str(assistant["assistant_id"])

    return make


def run_input() -> dict[str, Any]:
    return {"task": TASK, "constraints": CONSTRAINTS}


def run_to_the_end(client: SyncLangGraphClient, assistant_id: str) -> dict[str, Any]:
    """Run the task on a new thread; return the final state's values with the thread's id."""
    thread_id = client.threads.create()["thread_id"]
    client.runs.wait(thread_id, assistant_id, input=run_input())
    state = client.threads.get_state(thread_id)
    assert state["next"] == [], state
    return {**state["values"], "thread_id": thread_id}


def tiers(spend: list[dict[str, Any]]) -> set[NodeTier]:
    return {(row["node"], row["tier"]) for row in spend}


def total_cost(spend: list[dict[str, Any]]) -> int:
    return sum(row["cost_micro_usd"] for row in spend)


def test_server_publishes_the_input_output_and_context_schemas(
    client: SyncLangGraphClient, assistant_id: str
):
    assistant = client.assistants.get(assistant_id)
    schemas = client.assistants.get_schemas(assistant_id)

    assert assistant["name"] == GRAPH_ID
    assert "risk score" in (assistant["description"] or "")  # from langgraph.json
    assert {"task", "constraints", "messages"} <= set(schemas["input_schema"]["properties"])
    assert {"plan", "analyses", "reconciliation", "review", "spend"} <= set(
        schemas["output_schema"]["properties"]
    )
    context = schemas["context_schema"]["properties"]
    assert {"review_threshold", "max_replans", "profile"} <= set(context)
    for key in ("models", "budgets"):  # kept only to refuse a client that still sends a path
        assert context[key].get("deprecated") is True
    assert (context["review_threshold"]["minimum"], context["review_threshold"]["maximum"]) == (1, 6)


def test_sdk_runs_the_decision_graph_to_completion(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    client.runs.wait(thread_id, assistant_id, input=run_input())

    state = client.threads.get_state(thread_id)
    values = state["values"]
    assert state["next"] == []
    assert values["plan"]["steps"]
    assert set(values["analyses"]) == {"cto", "coo"}
    assert 1 <= values["reconciliation"]["risk_score"] <= 5
    assert values["review"]["decision"] == "auto-approved"  # the fake scores the risk 3 by default
    assert [c["text"] for c in values["constraints"]] == CONSTRAINTS

    requests = openai_server.chat_requests()
    assert len(requests) == 4
    assert sorted(r.agent for r in requests) == AGENTS
    usage_by_agent = {r.agent: r.usage for r in requests}
    assert sorted(row["node"] for row in values["spend"]) == AGENTS
    for row in values["spend"]:
        usage = usage_by_agent[row["node"]]
        assert (row["input_tokens"], row["output_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        ), row["node"]


def test_sdk_takes_the_task_as_a_chat_message_and_answers_with_an_ai_message(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    client.runs.wait(thread_id, assistant_id, input={"messages": [{"role": "user", "content": TASK}]})

    values = client.threads.get_state(thread_id)["values"]
    assert values["task"] == TASK
    question, answer = values["messages"]
    assert (question["type"], answer["type"], answer["name"]) == ("human", "ai", "reconcile")
    assert f"Risk score: {values['reconciliation']['risk_score']}/5" in answer["content"]
    assert "Review: auto-approved" in answer["content"]


def test_sdk_resumes_a_high_risk_run_paused_for_review_with_an_approval(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    openai_server.set_fields("Reconciliation", risk_score=5)

    client.runs.wait(thread_id, assistant_id, input=run_input())

    paused = client.threads.get_state(thread_id)
    assert paused["next"] == ["review"]
    (interrupt,) = paused["interrupts"]
    assert interrupt["value"]["kind"] == "review"
    assert interrupt["value"]["risk_score"] == 5
    assert interrupt["value"]["actions"] == ["approve", "reject", "replan"]
    assert "review" not in paused["values"]
    assert client.threads.get(thread_id)["status"] == "interrupted"

    client.runs.wait(
        thread_id, assistant_id, command=Command(resume={"action": "approve", "note": "accepted"})
    )

    done = client.threads.get_state(thread_id)
    assert done["next"] == []
    assert done["interrupts"] == []
    assert done["values"]["review"] == {"decision": "approved", "by": "human", "note": "accepted"}
    assert client.threads.get(thread_id)["status"] == "idle"
    assert len(openai_server.chat_requests()) == 4  # resuming re-ran no model call


def test_sdk_streams_both_values_and_updates_of_a_run(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    parts = list(
        client.runs.stream(thread_id, assistant_id, input=run_input(), stream_mode=["values", "updates"])
    )

    events = [part.event for part in parts]
    assert "values" in events and "updates" in events
    assert "error" not in events
    updated_nodes = {node for part in parts if part.event == "updates" for node in part.data}
    assert {"planner", "cto", "coo", "reconcile", "review"} <= updated_nodes
    last_values = [part.data for part in parts if part.event == "values"][-1]
    assert last_values["review"]["decision"] == "auto-approved"
    assert len(openai_server.chat_requests()) == 4


def test_sdk_streams_the_review_interrupt_and_the_resumed_run_as_updates(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    openai_server.set_fields("Reconciliation", risk_score=5)

    first = list(client.runs.stream(thread_id, assistant_id, input=run_input(), stream_mode="updates"))
    second = list(
        client.runs.stream(thread_id, assistant_id, command=Command(resume="reject"), stream_mode="updates")
    )

    first_updates = [part.data for part in first if part.event == "updates"]
    second_updates = [part.data for part in second if part.event == "updates"]

    assert [list(update) for update in first_updates][-2:] == [["reconcile"], ["__interrupt__"]]
    (interrupt,) = first_updates[-1]["__interrupt__"]
    assert interrupt["value"]["question"].startswith("The reconciliation scores the risk 5 of 5")
    assert [list(update) for update in second_updates] == [["review"]]  # nothing before it ran again
    review = second_updates[0]["review"]
    assert review["review"] == {"decision": "rejected", "by": "human", "note": None}
    assert "Review: rejected" in review["messages"][-1]["content"]


def test_sdk_reads_the_history_of_a_paused_and_resumed_run_newest_first(
    client: SyncLangGraphClient, assistant_id: str, thread_id: str, openai_server: FakeOpenAIServer
):
    openai_server.set_fields("Reconciliation", risk_score=5)
    client.runs.wait(thread_id, assistant_id, input=run_input())
    client.runs.wait(thread_id, assistant_id, command=Command(resume={"action": "approve"}))

    history = client.threads.get_history(thread_id, limit=20)

    oldest_first = history[::-1]
    assert [sorted(h["next"]) for h in oldest_first] == [
        ["__start__"],
        ["planner"],
        ["coo", "cto"],
        ["reconcile"],
        ["review"],
        [],
    ]
    assert [h["metadata"]["step"] for h in oldest_first] == [-1, 0, 1, 2, 3, 4]
    assert history[0]["checkpoint"] == client.threads.get_state(thread_id)["checkpoint"]
    (paused_task,) = oldest_first[4]["tasks"]
    assert paused_task["name"] == "review"
    assert paused_task["interrupts"][0]["value"]["risk_score"] == 5
    spent_rows = [len(h["values"].get("spend", [])) for h in oldest_first]
    assert spent_rows == [0, 0, 1, 3, 4, 4]
    assert history[0]["values"]["review"]["decision"] == "approved"
    assert "review" not in history[1]["values"]


def test_an_assistant_on_a_profile_whose_budget_caps_the_cto_runs_it_locally_at_no_cost(
    client: SyncLangGraphClient,
    assistant_id: str,
    make_assistant: Callable[..., str],
    served: ServedGraph,
    openai_server: FakeOpenAIServer,
):
    capped = make_assistant(profile="tight")

    default_run = run_to_the_end(client, assistant_id)
    openai_server.reset()
    capped_run = run_to_the_end(client, capped)

    assert tiers(default_run["spend"]) == DEFAULT_PLAN
    assert tiers(capped_run["spend"]) == {
        ("planner", "standard"),
        ("cto", "local"),
        ("coo", "standard"),
        ("reconcile", "standard"),
    }
    (cto,) = [row for row in capped_run["spend"] if row["node"] == "cto"]
    assert (cto["model"], cto["input_tokens"], cto["cost_micro_usd"]) == ("local-rules", 0, 0)
    assert capped_run["analyses"]["cto"]["authored_by"] == "local rules (no model)"
    assert openai_server.chat_requests(agent="cto") == []
    assert total_cost(capped_run["spend"]) < total_cost(default_run["spend"])
    for run in (default_run, capped_run):  # the ledger holds the same rows as the run's state
        recorded = served.ledger_records(run["thread_id"])
        assert sorted((r["node"], r["tier"], r["cost_micro_usd"]) for r in recorded) == sorted(
            (row["node"], row["tier"], row["cost_micro_usd"]) for row in run["spend"]
        )


def test_an_assistant_on_the_economy_profile_spends_a_fraction_of_the_default(
    client: SyncLangGraphClient,
    assistant_id: str,
    make_assistant: Callable[..., str],
    served: ServedGraph,
):
    economy = make_assistant(profile="economy", tenant="frugal")  # the tenant is the caller's

    default_run = run_to_the_end(client, assistant_id)
    economy_run = run_to_the_end(client, economy)

    assert tiers(default_run["spend"]) == DEFAULT_PLAN
    assert tiers(economy_run["spend"]) == {(node, "economy") for node in AGENTS}
    assert {row["model"] for row in economy_run["spend"]} == {"gpt-4.1-nano"}
    assert total_cost(economy_run["spend"]) * 2 < total_cost(default_run["spend"])
    recorded = served.ledger_records(economy_run["thread_id"])
    assert {(r["node"], r["tier"], r["tenant"]) for r in recorded} == {(n, "economy", "acme") for n in AGENTS}
    assert sum(r["cost_micro_usd"] for r in recorded) == total_cost(economy_run["spend"])
