"""The decision graph served by `langgraph dev` to other agents, over MCP and A2A.

The LangGraph server exposes every assistant as an MCP tool at ``/mcp`` (named
after the assistant, described by its description, taking the graph's input
schema with ``messages`` as a plain string) and as an A2A agent at
``/a2a/{assistant_id}``, with its agent card at
``/.well-known/agent-card.json?assistant_id=...``. Both need ``messages`` in the
input schema; the graph's answer is its last AI message.

MCP is driven with the official ``mcp`` client; A2A with plain JSON-RPC over
httpx (no A2A client is installed).
"""

from __future__ import annotations

import ast
import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import SyncLangGraphClient
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.types import CallToolResult, TextContent, Tool

from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.serving.conftest import ACME_KEY
from tests.serving import GRAPH_ID, TEST_TIMEOUT_S, ServedGraph

pytestmark = [pytest.mark.server, pytest.mark.timeout(TEST_TIMEOUT_S)]

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
AGENTS = ["coo", "cto", "planner", "reconcile"]


@pytest.fixture
def make_assistant(client: SyncLangGraphClient, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a named assistant of the `decision` graph with a context; it is deleted after the test."""

    def make(name: str, **context: Any) -> str:
        assistant = client.assistants.create(GRAPH_ID, context=context, name=name)
        request.addfinalizer(lambda: client.assistants.delete(assistant["assistant_id"]))
        return str(assistant["assistant_id"])

    return make


# --------------------------------------------------------------------------- MCP


def mcp_client(served: ServedGraph, key: str | None = ACME_KEY) -> Client:
    """An MCP client of the server that sends ``key`` as its ``x-api-key``."""
    http = create_mcp_http_client(headers={"x-api-key": key} if key else None)
    return Client(streamable_http_client(f"{served.url}/mcp", http_client=http))


def mcp_tools(served: ServedGraph, key: str | None = ACME_KEY) -> list[Tool]:
    async def list_tools() -> list[Tool]:
        async with mcp_client(served, key) as mcp:
            return (await mcp.list_tools()).tools

    return asyncio.run(list_tools())


def mcp_call(
    served: ServedGraph, tool: str, arguments: dict[str, Any], key: str | None = ACME_KEY
) -> CallToolResult:
    async def call() -> CallToolResult:
        async with mcp_client(served, key) as mcp:
            return await mcp.call_tool(tool, arguments)

    return asyncio.run(call())


def final_state(result: CallToolResult) -> dict[str, Any]:
    """The run's final state, which the server sends as the ``repr`` of its JSON values."""
    assert not result.is_error, result
    (content,) = result.content
    assert isinstance(content, TextContent)
    state = ast.literal_eval(content.text)
    assert isinstance(state, dict)
    return state


def test_mcp_lists_the_graph_as_a_tool_named_and_described_by_its_assistant(served: ServedGraph):
    tools = {tool.name: tool for tool in mcp_tools(served)}

    decision = tools[GRAPH_ID]
    assert decision.description is not None and "risk score" in decision.description  # from langgraph.json
    properties = decision.input_schema["properties"]
    assert {"task", "constraints", "messages"} <= set(properties)
    assert properties["messages"]["type"] == "string"  # the server asks MCP callers for one user message


def test_mcp_call_runs_the_graph_and_returns_the_reconciliation(
    served: ServedGraph, openai_server: FakeOpenAIServer
):
    result = mcp_call(served, GRAPH_ID, {"messages": TASK})

    state = final_state(result)
    assert state["task"] == TASK
    assert state["reconciliation"]["risk_score"] == 3
    assert state["review"]["decision"] == "auto-approved"
    answer = state["messages"][-1]
    assert (answer["type"], answer["name"]) == ("ai", "reconcile")
    assert answer["content"].startswith(state["reconciliation"]["summary"])
    assert "Risk score: 3/5" in answer["content"]
    assert sorted(row["node"] for row in state["spend"]) == AGENTS
    assert sorted(r.agent for r in openai_server.chat_requests()) == AGENTS


def test_mcp_callers_get_a_high_risk_answer_only_from_an_assistant_that_never_pauses(
    served: ServedGraph, openai_server: FakeOpenAIServer, make_assistant: Callable[..., str]
):
    openai_server.set_fields("Reconciliation", risk_score=5)
    make_assistant("decision_unattended", review_threshold=6)

    paused = final_state(mcp_call(served, GRAPH_ID, {"task": TASK}))
    unattended = final_state(mcp_call(served, "decision_unattended", {"task": TASK}))

    # An MCP call is a run without a thread: a review interrupt ends it, with nothing to resume.
    (interrupt,) = paused["__interrupt__"]
    assert interrupt["value"]["kind"] == "review"
    assert "review" not in paused and paused["messages"] == []
    assert unattended["review"]["decision"] == "auto-approved"
    assert "Risk score: 5/5" in unattended["messages"][-1]["content"]


# --------------------------------------------------------------------------- A2A


def a2a_post(
    served: ServedGraph, assistant_id: str, text: str, *, task: dict[str, Any] | None = None, key: str
) -> httpx.Response:
    """POST one user message with JSON-RPC ``message/send`` as the client of ``key``."""
    message: dict[str, Any] = {
        "role": "user",
        "messageId": uuid.uuid4().hex,
        "parts": [{"kind": "text", "text": text}],
    }
    if task is not None:
        message.update(taskId=task["id"], contextId=task["contextId"])
    response = httpx.post(
        f"{served.url}/a2a/{assistant_id}",
        json={
            "jsonrpc": "2.0",
            "id": uuid.uuid4().hex,
            "method": "message/send",
            "params": {"message": message},
        },
        headers={"Accept": "application/json", "x-api-key": key},
        timeout=60.0,
    )
    return response


def a2a_send(
    served: ServedGraph,
    assistant_id: str,
    text: str,
    *,
    task: dict[str, Any] | None = None,
    key: str = ACME_KEY,
) -> dict[str, Any]:
    """Send one user message with JSON-RPC ``message/send``; return the task it answers with.

    ``task`` continues an earlier task (its ``id`` and ``contextId``).
    """
    response = a2a_post(served, assistant_id, text, task=task, key=key)
    response.raise_for_status()
    body = response.json()
    assert "error" not in body, body
    result: dict[str, Any] = body["result"]
    assert result["kind"] == "task"
    return result


def reply_text(task: dict[str, Any]) -> str:
    (artifact,) = task["artifacts"]
    return "".join(part["text"] for part in artifact["parts"] if part["kind"] == "text")


def test_a2a_agent_card_describes_the_assistant_and_points_at_its_endpoint(
    served: ServedGraph, assistant_id: str
):
    headers = {"x-api-key": ACME_KEY}
    card = httpx.get(
        f"{served.url}/.well-known/agent-card.json", params={"assistant_id": assistant_id}, headers=headers
    ).json()
    same_card = httpx.get(
        f"{served.url}/a2a/{assistant_id}/.well-known/agent-card.json", headers=headers
    ).json()
    no_card = httpx.get(f"{served.url}/.well-known/agent-card.json", headers=headers).json()

    assert card["name"] == GRAPH_ID
    assert "risk score" in card["description"]  # from langgraph.json
    assert card["url"] == f"{served.url}/a2a/{assistant_id}"
    assert card["supportedInterfaces"][0]["protocolBinding"] == "JSONRPC"
    (skill,) = card["skills"]
    assert skill["metadata"]["inputSchema"]["supportsA2A"] is True
    assert "text/plain" in card["defaultInputModes"]
    assert same_card == card
    assert no_card["error"]["message"] == "Missing required query parameter: assistant_id"


def test_a2a_message_send_returns_the_reconciliation_as_the_agents_reply(
    served: ServedGraph, client: SyncLangGraphClient, assistant_id: str, openai_server: FakeOpenAIServer
):
    task = a2a_send(served, assistant_id, TASK)

    assert task["status"]["state"] == "completed"
    reconciliation = client.threads.get_state(task["contextId"])["values"]["reconciliation"]
    reply = reply_text(task)
    assert reply.startswith(reconciliation["summary"])
    assert f"Risk score: {reconciliation['risk_score']}/5" in reply
    assert f"Recommendation: {reconciliation['recommendation']}" in reply
    assert "Review: auto-approved" in reply
    assert [m["role"] for m in task["history"]] == ["user", "agent"]
    assert task["history"][-1]["parts"][0]["text"] == reply
    assert len(openai_server.chat_requests()) == 4


def test_a2a_task_paused_for_review_completes_when_the_caller_answers_approve(
    served: ServedGraph, assistant_id: str, openai_server: FakeOpenAIServer
):
    openai_server.set_fields("Reconciliation", risk_score=5)

    paused = a2a_send(served, assistant_id, TASK)
    done = a2a_send(served, assistant_id, "approve", task=paused)

    assert paused["status"]["state"] == "input-required"
    (artifact,) = paused["artifacts"]
    (part,) = artifact["parts"]
    assert part["data"]["value"]["kind"] == "review"
    assert part["data"]["value"]["actions"] == ["approve", "reject", "replan"]
    assert (done["id"], done["status"]["state"]) == (paused["id"], "completed")
    assert "Risk score: 5/5" in reply_text(done)
    assert "Review: approved" in reply_text(done)
    assert len(openai_server.chat_requests()) == 4  # the answer resumed the run; nothing ran twice
