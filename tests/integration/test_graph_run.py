"""The decision graph end to end, through Python, against a real OpenAI-compatible server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from budgetgraph.graph import Context, build_graph
from budgetgraph.graph.serving import Profile, ProfileError, Serving
from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)


def config(thread: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture
def graph(models_file: Path):
    return build_graph(checkpointer=InMemorySaver(), models=models_file)


def test_full_run_calls_every_agent_once_and_records_the_servers_usage(
    graph, openai_server: FakeOpenAIServer
):
    result = graph.invoke({"task": TASK, "constraints": ["Keep card data in one region"]}, config())

    agents = [r.agent for r in openai_server.chat_requests()]
    assert sorted(agents) == ["coo", "cto", "planner", "reconcile"]
    assert result["review"]["decision"] == "auto-approved"  # the server scores risk 3 by default
    assert set(result["analyses"]) == {"cto", "coo"}
    assert result["analyses"]["cto"]["authored_by"] == "gpt-4.1-mini (standard tier)"

    by_agent = {r.agent: r.usage for r in openai_server.chat_requests()}
    for row in result["spend"]:
        usage = by_agent[row["node"]]
        assert (row["input_tokens"], row["output_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        # the packaged router.decision plans this PCI migration's reconcile on premium
        expected_tier = "premium" if row["node"] == "reconcile" else "standard"
        assert row["tier"] == expected_tier
        assert row["model"] == {"standard": "gpt-4.1-mini", "premium": "gpt-4.1"}[expected_tier]
    # gpt-4.1-mini is $0.40 / $1.60 per million tokens in genai-prices
    row = result["spend"][0]
    expected = row["input_tokens"] * 0.40 + row["output_tokens"] * 1.60
    assert row["cost_micro_usd"] == round(expected)
    assert result["messages"][-1].name == "reconcile"


def test_cto_and_coo_run_in_parallel(graph, openai_server: FakeOpenAIServer):
    openai_server.delay("cto", 0.5)
    openai_server.delay("coo", 0.5)

    graph.invoke({"task": TASK}, config())

    (cto,) = openai_server.chat_requests("cto")
    (coo,) = openai_server.chat_requests("coo")
    assert cto.started < coo.finished and coo.started < cto.finished, "the two analyses did not overlap"


def test_structured_output_is_asked_for_with_a_strict_json_schema(graph, openai_server: FakeOpenAIServer):
    graph.invoke({"task": TASK}, config())

    (planner,) = openai_server.chat_requests("planner")
    response_format = planner.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "PlanBrief"
    assert response_format["json_schema"]["strict"] is True


def test_a_tool_call_runs_the_tool_and_counts_against_the_node(graph, openai_server: FakeOpenAIServer):
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "6 * 40 * 4"}}])

    result = graph.invoke({"task": TASK}, config())

    cto_requests = openai_server.chat_requests("cto")
    assert len(cto_requests) == 2
    tool_reply = cto_requests[1].body["messages"][-1]
    assert tool_reply["role"] == "tool" and tool_reply["content"] == "960"
    cto_rows = [r for r in result["spend"] if r["node"] == "cto"]
    assert [r["tool_calls"] for r in cto_rows] == [1, 0]


def test_streamed_completions_are_counted_from_the_final_usage_chunk(
    tmp_path: Path, openai_server: FakeOpenAIServer
):
    models = write_models(tmp_path / "streaming.yaml", openai_server.base_url, streaming=True)
    graph = build_graph(checkpointer=InMemorySaver(), models=models)

    result = graph.invoke({"task": TASK}, config())

    requests = openai_server.chat_requests()
    assert all(r.stream for r in requests)
    assert sum(r["input_tokens"] + r["output_tokens"] for r in result["spend"]) == sum(
        r.usage["total_tokens"] for r in requests
    )


def test_high_risk_pauses_for_review_and_approve_finishes(graph, openai_server: FakeOpenAIServer):
    openai_server.set_fields("Reconciliation", risk_score=4)

    paused = graph.invoke({"task": TASK}, config())
    (interrupt,) = paused["__interrupt__"]
    assert interrupt.value["risk_score"] == 4 and interrupt.value["actions"] == [
        "approve",
        "reject",
        "replan",
    ]

    done = graph.invoke(Command(resume={"action": "approve", "note": "accepted"}), config())
    assert done["review"] == {"decision": "approved", "by": "human", "note": "accepted"}
    assert len(openai_server.chat_requests()) == 4  # resuming re-ran nothing


def test_reject_ends_the_run_rejected(graph, openai_server: FakeOpenAIServer):
    openai_server.set_fields("Reconciliation", risk_score=5)
    graph.invoke({"task": TASK}, config())

    done = graph.invoke(Command(resume="reject"), config())

    assert done["review"]["decision"] == "rejected"
    assert graph.get_state(config()).next == ()


def test_replan_runs_the_agents_again_with_the_note(graph, openai_server: FakeOpenAIServer):
    openai_server.set_fields("Reconciliation", risk_score=4)
    graph.invoke({"task": TASK}, config())

    again = graph.invoke(Command(resume={"action": "replan", "note": "assume a contractor team"}), config())

    assert again["replans"] == 1
    assert again["plan"]["replan_note"] == "assume a contractor team"
    planner_calls = openai_server.chat_requests("planner")
    assert len(planner_calls) == 2
    assert "assume a contractor team" in planner_calls[1].body["messages"][-1]["content"]
    assert len(openai_server.chat_requests()) == 8
    assert len(again["spend"]) == 8  # spend of both loops is kept


def test_replan_loop_stops_at_three(graph, openai_server: FakeOpenAIServer):
    openai_server.set_fields("Reconciliation", risk_score=5)
    graph.invoke({"task": TASK}, config())
    for n in range(1, 4):
        state = graph.invoke(Command(resume={"action": "replan", "note": f"try {n}"}), config())
        assert state["replans"] == n
    (interrupt,) = state["__interrupt__"]
    assert interrupt.value["actions"] == ["approve", "reject"]

    refused = graph.invoke(Command(resume={"action": "replan", "note": "a fourth time"}), config())
    (interrupt,) = refused["__interrupt__"]
    assert "re-plan limit (3)" in interrupt.value["problem"]
    assert refused["replans"] == 3
    assert len(openai_server.chat_requests("planner")) == 4  # the first plan and three re-plans

    done = graph.invoke(Command(resume="approve"), config())
    assert done["review"]["decision"] == "approved"


def test_review_threshold_comes_from_the_context(graph, openai_server: FakeOpenAIServer):
    openai_server.set_fields("Reconciliation", risk_score=2)

    result = graph.invoke({"task": TASK}, config(), context=Context(review_threshold=2))

    assert "__interrupt__" in result


def test_resume_after_a_node_raised_reruns_only_that_node(graph, openai_server: FakeOpenAIServer):
    openai_server.fail("Reconciliation", status=500, times=1)

    with pytest.raises(Exception, match="500|Internal"):
        graph.invoke({"task": TASK}, config())
    assert graph.get_state(config()).next == ("reconcile",)
    assert len(openai_server.chat_requests()) == 3

    result = graph.invoke(None, config())

    assert result["review"]["decision"] == "auto-approved"
    agents = [r.agent for r in openai_server.chat_requests()]
    assert sorted(agents) == ["coo", "cto", "planner", "reconcile"]


def test_a_task_given_as_a_chat_message_is_reviewed(graph, openai_server: FakeOpenAIServer):
    result = graph.invoke({"messages": [{"role": "user", "content": TASK}]}, config())

    assert result["task"] == TASK
    assert result["messages"][-1].type == "ai"


def test_stream_and_ainvoke_work(graph, openai_server: FakeOpenAIServer):
    updates = [chunk for chunk in graph.stream({"task": TASK}, config("s"), stream_mode="updates")]
    assert {node for chunk in updates for node in chunk} >= {"planner", "cto", "coo", "reconcile", "review"}

    result = asyncio.run(graph.ainvoke({"task": TASK}, config("a")))
    assert result["review"]["decision"] == "auto-approved"


def test_without_an_endpoint_every_agent_takes_the_local_path(monkeypatch: pytest.MonkeyPatch):
    graph = build_graph(checkpointer=InMemorySaver())

    result = graph.invoke({"task": TASK}, config())

    assert {row["tier"] for row in result["spend"]} == {"local"}
    assert sum(row["cost_micro_usd"] for row in result["spend"]) == 0
    assert result["analyses"]["cto"]["authored_by"] == "local rules (no model)"
    assert result["reconciliation"]["summary"].startswith("No model wrote this")


def test_a_run_picks_a_declared_profile_with_its_own_budgets_and_models(
    models_file: Path, tmp_path: Path, openai_server: FakeOpenAIServer
):
    budgets = tmp_path / "frugal.yaml"
    budgets.write_text("nodes:\n  cto: {max_tokens: 100, on_exceed: local}\n")
    models = write_models(tmp_path / "cheap.yaml", openai_server.base_url)
    models.write_text(models.read_text().replace("default_tier: standard", "default_tier: economy"))
    serving = Serving(
        {
            "default": Profile("default", models_file, None),
            "frugal": Profile("frugal", models, budgets),
        },
        "default",
    )
    graph = build_graph(checkpointer=InMemorySaver(), models=models_file, serving=serving)

    frugal = graph.invoke({"task": TASK}, config("f"), context=Context(profile="frugal"))
    plain = graph.invoke({"task": TASK}, config("p"))
    with pytest.raises(ProfileError, match="No profile `gold`; declared: `default`, `frugal`"):
        graph.invoke({"task": TASK}, config("g"), context=Context(profile="gold"))

    assert {r["node"]: r["tier"] for r in frugal["spend"]}["cto"] == "local"
    assert {r["node"]: r["tier"] for r in plain["spend"]}["cto"] == "standard"
    assert {r["tier"] for r in frugal["spend"] if r["node"] != "cto"} == {"economy"}
