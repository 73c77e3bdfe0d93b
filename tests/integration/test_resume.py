"""Resuming runs: completed nodes and completed model calls are not repeated, spend is kept once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.graph import build_graph
from tests.fakes.openai_server import FakeOpenAIServer

TASK = "Should we move billing to microservices? We have 6 engineers and a PCI audit in 4 months."


def config(thread: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def saver(request: pytest.FixtureRequest, tmp_path: Path):
    """Each kind of checkpointer the graph is resumed from."""
    if request.param == "memory":
        yield InMemorySaver()
    elif request.param == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as saver:
            yield saver
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(request.getfixturevalue("database_url")) as saver:
            saver.setup()
            yield saver


def test_a_node_that_failed_mid_way_replays_its_completed_calls(
    tmp_path: Path, models_file: Path, openai_server: FakeOpenAIServer, saver
):
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    graph = build_graph(checkpointer=saver, models=models_file, ledger=ledger)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    openai_server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "6*4"}}])
    openai_server.fail("cto", status=500, times=1, after=1)  # the cto's second round trip fails once
    with pytest.raises(Exception, match="500|Internal"):
        graph.invoke({"task": TASK}, config(thread))
    served_before = [r.agent for r in openai_server.chat_requests()]

    result = graph.invoke(None, config(thread))

    served_after = [r.agent for r in openai_server.chat_requests()][len(served_before) :]
    assert served_after.count("cto") == 1  # only the call that had failed; the tool-call turn is replayed
    assert "coo" not in served_after and "planner" not in served_after
    cto_rows = [r for r in result["spend"] if r["node"] == "cto"]
    assert [r["tool_calls"] for r in cto_rows] == [1, 0]
    state_micro = sum(r["cost_micro_usd"] for r in result["spend"])
    assert ledger.totals(f"run:{thread}").spent.micro_usd == state_micro
    assert sum(r["cost_micro_usd"] for r in ledger.records()) == state_micro


def test_a_call_cut_off_after_the_server_answered_is_fetched_back_not_sent_again(
    tmp_path: Path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
):
    from budgetgraph.budgets.chat import ChatModels
    from tests.conftest import write_models

    models = write_models(tmp_path / "store.yaml", openai_server.base_url, store_completions=True)
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    graph = build_graph(checkpointer=InMemorySaver(), models=models, ledger=ledger)
    real_record = ChatModels._record

    def crash_after_the_answer(self, request, *args, **kwargs):  # the process "dies" with the answer in hand
        if request.node == "coo" and not request.recover:
            raise SystemError("killed")
        return real_record(self, request, *args, **kwargs)

    monkeypatch.setattr(ChatModels, "_record", crash_after_the_answer)
    with pytest.raises(SystemError):
        graph.invoke({"task": TASK}, config())
    monkeypatch.setattr(ChatModels, "_record", real_record)
    assert len(openai_server.chat_requests("coo")) == 1

    result = graph.invoke(None, config())

    assert len(openai_server.chat_requests("coo")) == 1  # fetched back from the server, not sent again
    coo_row = next(r for r in result["spend"] if r["node"] == "coo")
    (served,) = openai_server.chat_requests("coo")
    assert coo_row["input_tokens"] == served.usage["prompt_tokens"]
    assert any(d["action"] == "recovered" for d in coo_row["decisions"])
    assert ledger.totals("run:t1").spent.micro_usd == sum(r["cost_micro_usd"] for r in result["spend"])
