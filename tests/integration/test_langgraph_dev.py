"""The decision graph served by `langgraph dev`, driven through the official LangGraph SDK.

One `langgraph dev` process is started for the module, from the repository root
(so it reads the real ``langgraph.json``), on a free port, with its model tiers
pointed at a :class:`FakeOpenAIServer` that lives as long as it does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.server

REPO_ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
READY_DEADLINE_S = 90.0
STOP_GRACE_S = 15.0
# Whichever test runs first also pays for the server's start-up (a few seconds
# here, READY_DEADLINE_S at worst), so every test gets that much on top of its run.
TEST_TIMEOUT_S = READY_DEADLINE_S + 30

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
CONSTRAINTS = ["Keep card data in one region"]
AGENTS = ["coo", "cto", "planner", "reconcile"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(openai_base_url: str, ledger: Path) -> dict[str, str]:
    """The parent's environment without model, budgetgraph, tracing or LangSmith settings.

    The spend ledger goes to ``ledger``: by default the served graph would keep it in
    ``.budgetgraph/`` of the working directory, i.e. in the repository, across test runs.
    """
    dropped = ("OPENAI_", "BUDGETGRAPH_", "OTEL_", "LANGSMITH_", "LANGCHAIN_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    env.update(
        OPENAI_BASE_URL=openai_base_url,
        OPENAI_API_KEY="test",
        BUDGETGRAPH_LEDGER_URL=f"sqlite:///{ledger}",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll ``GET /ok`` until it answers 200; fail with the server's output otherwise."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"`langgraph dev` exited with code {process.returncode} before it was ready:\n"
                f"{log.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{url}/ok", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"`langgraph dev` did not answer {url}/ok within {READY_DEADLINE_S:.0f} s:\n"
        f"{log.read_text(errors='replace')}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_GRACE_S)


@pytest.fixture(scope="module")
def fake_openai_for_server() -> Iterator[FakeOpenAIServer]:
    """The model endpoint of the `langgraph dev` process; it must outlive the process."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def langgraph_url(
    fake_openai_for_server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Start `langgraph dev` once for the module and return its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("langgraph-dev")
    log = workdir / "server.log"
    print(f"langgraph dev on {url}, output in {log}")  # shown with a failing test's setup output
    command = [
        str(LANGGRAPH),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=server_env(fake_openai_for_server.base_url, ledger=workdir / "ledger.sqlite"),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(process, url, log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def openai_server(fake_openai_for_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The served graph's model endpoint, with no requests or scripting left from earlier tests."""
    fake_openai_for_server.reset()
    return fake_openai_for_server


@pytest.fixture
def client(langgraph_url: str) -> Iterator[SyncLangGraphClient]:
    with get_sync_client(url=langgraph_url, api_key=None, timeout=60.0) as sdk:
        yield sdk


@pytest.fixture
def assistant_id(client: SyncLangGraphClient) -> str:
    """The assistant the server made for the `decision` graph of langgraph.json."""
    (assistant,) = [
        a
        for a in client.assistants.search(limit=100)
        if a["graph_id"] == "decision" and a["metadata"].get("created_by") == "system"
    ]
    return assistant["assistant_id"]


@pytest.fixture
def thread_id(client: SyncLangGraphClient) -> Iterator[str]:
    """A new thread, deleted afterwards (`langgraph dev` keeps threads in .langgraph_api/)."""
    thread = client.threads.create()
    yield thread["thread_id"]
    client.threads.delete(thread["thread_id"])


def run_input() -> dict[str, Any]:
    return {"task": TASK, "constraints": CONSTRAINTS}


@pytest.mark.timeout(TEST_TIMEOUT_S)
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


@pytest.mark.timeout(TEST_TIMEOUT_S)
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

    client.runs.wait(thread_id, assistant_id, command={"resume": {"action": "approve", "note": "accepted"}})

    done = client.threads.get_state(thread_id)
    assert done["next"] == []
    assert done["interrupts"] == []
    assert done["values"]["review"] == {"decision": "approved", "by": "human", "note": "accepted"}
    assert client.threads.get(thread_id)["status"] == "idle"
    assert len(openai_server.chat_requests()) == 4  # resuming re-ran no model call


@pytest.mark.timeout(TEST_TIMEOUT_S)
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
