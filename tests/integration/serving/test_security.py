"""A served graph's clients are untrusted: auth, tenants, profiles and owned threads.

Driven against one `langgraph dev` with auth on (see the package's conftest):
the tenant comes from the API key, a run's context picks a declared profile by
name and never a file, and one tenant cannot reach another's threads, over the
HTTP API, MCP or A2A alike.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.schema import Command

from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.serving.conftest import ACME_KEY, GLOBEX_KEY
from tests.integration.serving.test_mcp_a2a import a2a_post, a2a_send, final_state, mcp_call, mcp_tools
from tests.serving import GRAPH_ID, TEST_TIMEOUT_S, ServedGraph

pytestmark = [pytest.mark.server, pytest.mark.timeout(TEST_TIMEOUT_S)]

TASK = "Should we move our billing service to microservices this year? We have 6 engineers."
SECRET_LINE = "root:$6$hunter2secret:19000:0:99999:7:::"


def run_error(client: SyncLangGraphClient, context: dict[str, Any]) -> str:
    """Run the task with ``context`` on a new thread; return the error the caller sees."""
    thread = client.threads.create()["thread_id"]
    try:
        result = client.runs.wait(thread, GRAPH_ID, input={"task": TASK}, context=context)
    except Exception as exc:  # the SDK raises the run's error, or the HTTP error
        return str(exc)
    error = result.get("__error__") if isinstance(result, dict) else None
    assert error is not None, f"the run with context {context} did not fail: {str(result)[:300]}"
    return str(error)


def test_a_request_without_a_known_api_key_is_refused(served: ServedGraph):
    for headers in ({}, {"x-api-key": "not-a-key"}, {"Authorization": "Bearer not-a-key"}):
        assert httpx.post(f"{served.url}/assistants/search", json={}, headers=headers).status_code == 401
        assert httpx.post(f"{served.url}/threads", json={}, headers=headers).status_code == 401
    bearer = {"Authorization": f"Bearer {ACME_KEY}"}
    assert httpx.post(f"{served.url}/assistants/search", json={}, headers=bearer).status_code == 200


def test_a_context_naming_a_file_fails_without_a_byte_of_the_file_or_a_request_with_the_key(
    client: SyncLangGraphClient, served: ServedGraph, openai_server: FakeOpenAIServer, tmp_path: Path
):
    shadow = tmp_path / "shadow"
    shadow.write_text(f"{SECRET_LINE}\ndaemon:*:19000:0:99999:7:::\n")
    with FakeOpenAIServer() as listener:
        hostile = tmp_path / "models.yaml"
        tier = {"model": "gpt-4.1", "base_url": listener.base_url, "api_key_env": "DATABASE_PASSWORD"}
        hostile.write_text(yaml.safe_dump({"tiers": {t: tier for t in ("economy", "standard", "premium")}}))
        contexts = [
            {"models": str(hostile)},
            {"budgets": str(shadow)},
            {"budgets": "/dev/null", "tenant": "victim"},
            {"profile": str(hostile)},
            {"profile": "../../etc/shadow"},
        ]
        errors = [run_error(client, context) for context in contexts]

        assert listener.requests == []
    for error in errors:
        assert "hunter2" not in error and "root:" not in error and "daemon" not in error
    assert openai_server.chat_requests() == []
    assert "hunter2" not in served.log.read_text(errors="replace")


def test_an_undeclared_profile_is_an_error_that_lists_the_declared_names(
    client: SyncLangGraphClient, openai_server: FakeOpenAIServer
):
    error = run_error(client, {"profile": "platinum"})

    assert "No profile `platinum`" in error
    assert "`economy`, `standard`, `tight`" in error
    assert openai_server.chat_requests() == []


def test_a_caller_may_use_only_the_profiles_its_key_allows(
    globex: SyncLangGraphClient, openai_server: FakeOpenAIServer
):
    error = run_error(globex, {"profile": "economy"})

    assert "Profile `economy` is not one this caller may use; allowed: `standard`" in error
    assert openai_server.chat_requests() == []


def test_the_tenant_is_the_callers_whatever_the_context_says(
    client: SyncLangGraphClient, globex: SyncLangGraphClient, served: ServedGraph
):
    threads = {}
    for name, sdk in (("acme", client), ("globex", globex)):
        thread = sdk.threads.create()["thread_id"]
        sdk.runs.wait(thread, GRAPH_ID, input={"task": TASK}, context={"tenant": "victim"})
        threads[name] = thread

    for name, thread in threads.items():
        recorded = served.ledger_records(thread)
        assert len(recorded) == 4 and {r["tenant"] for r in recorded} == {name}


def test_one_tenant_cannot_read_resume_or_fork_anothers_thread(
    client: SyncLangGraphClient,
    globex: SyncLangGraphClient,
    openai_server: FakeOpenAIServer,
):
    openai_server.set_fields("Reconciliation", risk_score=5)
    task = f"{TASK} ({uuid.uuid4().hex})"
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, GRAPH_ID, input={"task": task})
    paused = client.threads.get_state(thread)
    assert paused["next"] == ["review"]
    requests = len(openai_server.chat_requests())

    attempts = {
        "get": lambda: globex.threads.get(thread),
        "state": lambda: globex.threads.get_state(thread),
        "history": lambda: globex.threads.get_history(thread),
        "resume": lambda: globex.runs.wait(thread, GRAPH_ID, command=Command(resume={"action": "approve"})),
        "fork": lambda: globex.threads.copy(thread),
        "update": lambda: globex.threads.update_state(thread, {"task": "x"}),
        "delete": lambda: globex.threads.delete(thread),
    }
    for name, attempt in attempts.items():
        with pytest.raises(httpx.HTTPStatusError) as refused:
            attempt()
        assert refused.value.response.status_code in (403, 404, 409), name
    visible = globex.threads.search(limit=1000)
    assert thread not in {t["thread_id"] for t in visible}
    assert all((t.get("values") or {}).get("task") != task for t in visible)  # no copy was made
    assert thread in {t["thread_id"] for t in client.threads.search(limit=100)}
    assert client.threads.get_state(thread)["next"] == ["review"]  # untouched
    assert len(openai_server.chat_requests()) == requests


def test_a_tenant_cannot_hand_its_thread_or_cron_to_another_tenant_who_would_pay(
    client: SyncLangGraphClient, globex: SyncLangGraphClient
):
    thread = client.threads.create(metadata={"purpose": "handover"})["thread_id"]

    for metadata in ({"owner": "globex"}, {"owner": None}, {"owner": "acme ", "purpose": "x"}):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.threads.update(thread, metadata=metadata)
        assert refused.value.response.status_code == 403, metadata
    with pytest.raises(httpx.HTTPStatusError) as created:
        client.threads.create(metadata={"owner": "globex"})
    assert created.value.response.status_code == 403

    client.threads.update(thread, metadata={"purpose": "renamed"})  # its own metadata stays writable
    assert client.threads.get(thread)["metadata"]["owner"] == "acme"
    assert thread not in {t["thread_id"] for t in globex.threads.search(limit=1000)}


def test_a_served_client_cannot_write_a_threads_state_past_the_planner(
    client: SyncLangGraphClient, openai_server: FakeOpenAIServer
):
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, GRAPH_ID, input={"task": TASK})
    before = client.threads.get_state(thread)
    requests = len(openai_server.chat_requests())
    plan = before["values"]["plan"]
    steps = [{**step, "tier": "premium", "reason": "forged"} for step in plan["steps"]]
    forged = {"task": TASK, "plan": {**plan, "steps": steps}}

    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.threads.update_state(thread, forged, as_node="planner")
    assert refused.value.response.status_code == 403
    assert "cannot write a thread's state" in refused.value.response.text
    after = client.threads.get_state(thread)
    assert after["checkpoint"] == before["checkpoint"] and after["values"]["plan"] == before["values"]["plan"]
    assert len(openai_server.chat_requests()) == requests


def test_a_tenants_assistants_are_its_own_and_the_servers_are_everyones(
    client: SyncLangGraphClient, globex: SyncLangGraphClient, served: ServedGraph
):
    name = f"{GRAPH_ID}-acme-{uuid.uuid4().hex[:8]}"
    mine = client.assistants.create(GRAPH_ID, name=name, description="acme's own")["assistant_id"]
    try:
        with pytest.raises(httpx.HTTPStatusError) as hidden:
            globex.assistants.get(mine)
        assert hidden.value.response.status_code == 404
        assert mine not in {a["assistant_id"] for a in globex.assistants.search(limit=1000)}
        assert name not in {tool.name for tool in mcp_tools(served, GLOBEX_KEY)}
        assert name in {tool.name for tool in mcp_tools(served, ACME_KEY)}
        system = globex.assistants.search(graph_id=GRAPH_ID, metadata={"created_by": "system"})
        assert len(system) == 1  # the server's assistant stays everyone's

        for metadata in ({"created_by": "system"}, {"owner": "globex"}):
            with pytest.raises(httpx.HTTPStatusError) as claimed:
                client.assistants.create(GRAPH_ID, name=f"{name}-x", metadata=metadata)
            assert claimed.value.response.status_code == 403, metadata
            with pytest.raises(httpx.HTTPStatusError) as claimed:
                client.assistants.update(mine, metadata=metadata)
            assert claimed.value.response.status_code == 403, metadata
    finally:
        client.assistants.delete(mine)


def test_only_a_key_with_approve_budgets_may_approve_going_over_a_cap(
    client: SyncLangGraphClient, approver: SyncLangGraphClient, openai_server: FakeOpenAIServer
):
    thread = client.threads.create()["thread_id"]
    with pytest.raises(Exception, match="`reconcile` is over its `max_cost_usd` budget") as stopped:
        client.runs.wait(thread, GRAPH_ID, input={"task": TASK}, context={"profile": "approval"})
    # The client's run is never asked (an answer of its own would be replayed to the approver).
    assert "`approve_budgets`" in str(stopped.value)
    assert client.threads.get_state(thread)["interrupts"] == []
    assert openai_server.chat_requests("reconcile") == []

    approver.runs.wait(thread, GRAPH_ID, input=None, context={"profile": "approval"})  # continue the run
    (asked,) = approver.threads.get_state(thread)["interrupts"]
    assert asked["value"]["kind"] == "budget" and asked["value"]["node"] == "reconcile"

    done = approver.runs.wait(
        thread,
        GRAPH_ID,
        command=Command(resume={"action": "approve", "raise_by": 0.01}),
        context={"profile": "approval"},
    )
    assert done["reconciliation"] is not None
    assert len(openai_server.chat_requests("reconcile")) == 1


def test_mcp_runs_as_the_callers_tenant_and_refuses_a_caller_without_a_key(
    served: ServedGraph, openai_server: FakeOpenAIServer
):
    before = len(_all_records(served))
    state = final_state(mcp_call(served, GRAPH_ID, {"messages": TASK, "tenant": "victim"}, key=GLOBEX_KEY))

    assert {row["node"] for row in state["spend"]} == {"planner", "cto", "coo", "reconcile"}
    refused = httpx.post(
        f"{served.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert refused.status_code == 401
    new = _all_records(served)[before:]  # MCP's run has no thread of the caller's
    assert len(new) == 4 and {r["tenant"] for r in new} == {"globex"}


def test_a2a_runs_as_the_callers_tenant_and_a_task_of_another_tenant_cannot_be_continued(
    served: ServedGraph, client: SyncLangGraphClient, openai_server: FakeOpenAIServer
):
    openai_server.set_fields("Reconciliation", risk_score=5)
    (assistant,) = client.assistants.search(graph_id=GRAPH_ID, metadata={"created_by": "system"})
    paused = a2a_send(served, assistant["assistant_id"], TASK, key=ACME_KEY)
    assert paused["status"]["state"] == "input-required"

    hijack = a2a_post(served, assistant["assistant_id"], "approve", task=paused, key=GLOBEX_KEY)

    body = hijack.json()
    assert hijack.status_code >= 400 or "error" in body or body["result"]["status"]["state"] != "completed"
    assert {r["tenant"] for r in served.ledger_records(paused["contextId"])} == {"acme"}
    assert client.threads.get_state(paused["contextId"])["next"] == ["review"]
    no_key = httpx.post(f"{served.url}/a2a/{assistant['assistant_id']}", json={})
    assert no_key.status_code == 401


def _all_records(served: ServedGraph) -> list[dict[str, Any]]:
    """Every record of the served graph's ledger, oldest first."""
    from budgetgraph.budgets.ledger import open_ledger

    ledger = open_ledger(f"sqlite:///{served.ledger}")
    try:
        return [dict(r) for r in ledger.records()]
    finally:
        ledger.close()
