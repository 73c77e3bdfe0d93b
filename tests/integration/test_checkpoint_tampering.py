"""Checkpoints edited in the store to run code are refused, in SQLite and PostgreSQL; real runs still load."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import ormsgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_POS_ARGS, JsonPlusSerializer
from langgraph.types import Command

from budgetgraph.graph import Context, build_graph
from budgetgraph.graph.checkpoint import open_checkpointer
from budgetgraph.graph.serde import RefusedCheckpointError

TASK = "Should we hire two engineers?"


def config(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def os_system(marker: Path) -> ormsgpack.Ext:
    """What an attacker writes: an Ext LangGraph's default serializer loads by calling `os.system`."""
    return ormsgpack.Ext(
        EXT_CONSTRUCTOR_POS_ARGS, ormsgpack.packb(("os", "system", (f"touch {shlex.quote(str(marker))}",)))
    )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A checkpoint store other processes could write to."""
    if request.param == "postgres":
        return request.getfixturevalue("database_url")
    return f"sqlite:///{tmp_path}/checkpoints.sqlite"


@pytest.fixture
def thread(url: str) -> Iterator[str]:
    thread = f"tamper-{uuid.uuid4().hex[:12]}"
    yield thread
    with open_checkpointer(url) as saver:
        saver.delete_thread(thread)


def pause_a_run(url: str, thread: str) -> list[str]:
    """Run the graph offline until the review pauses it; return its checkpoint ids, newest first."""
    with open_checkpointer(url) as saver:
        graph = build_graph(checkpointer=saver, ledger="memory:")
        graph.invoke({"task": TASK}, config(thread), context=Context(review_threshold=1))
        assert graph.get_state(config(thread)).next == ("review",)
        return [t.config["configurable"]["checkpoint_id"] for t in saver.list(config(thread))]


def tamper(url: str, thread: str, payload: ormsgpack.Ext) -> None:
    """Put ``payload`` into the thread's stored state, as someone with write access to the store could."""
    if url.startswith("sqlite:///"):
        # SQLite keeps each checkpoint, channel values included, as one msgpack blob.
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            rows = conn.execute(
                "SELECT checkpoint_id, type, checkpoint FROM checkpoints WHERE thread_id = ?", (thread,)
            ).fetchall()
            for checkpoint_id, type_, blob in rows:
                checkpoint = JsonPlusSerializer().loads_typed((type_, blob))
                checkpoint["channel_values"]["task"] = payload
                _, tampered = JsonPlusSerializer().dumps_typed(checkpoint)
                conn.execute(
                    "UPDATE checkpoints SET checkpoint = ? WHERE thread_id = ? AND checkpoint_id = ?",
                    (tampered, thread, checkpoint_id),
                )
    else:
        # PostgreSQL keeps non-primitive channel values (here the spend rows) in checkpoint_blobs.
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            updated = conn.execute(
                "UPDATE checkpoint_blobs SET type = 'msgpack', blob = %s "
                "WHERE thread_id = %s AND channel = 'spend'",
                (ormsgpack.packb(payload), thread),
            ).rowcount
            assert updated > 0


@contextmanager
def langgraph_default_saver(url: str) -> Iterator[BaseCheckpointSaver]:
    """The store read as LangGraph reads it by default: every stored type rebuilt (with a warning)."""
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    if url.startswith("sqlite:///"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        with closing(sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False)) as conn:
            yield SqliteSaver(conn, serde=permissive)
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(url) as saver:
            saver.serde = permissive
            yield saver


def test_a_tampered_checkpoint_is_refused_and_its_command_never_runs(url: str, thread: str, tmp_path: Path):
    checkpoint_ids = pause_a_run(url, thread)
    marker = tmp_path / "marker"
    tamper(url, thread, os_system(marker))

    with open_checkpointer(url, create=False) as saver:
        graph = build_graph(checkpointer=saver, ledger="memory:")
        reads = {
            "get_tuple": lambda: saver.get_tuple(config(thread)),
            "list": lambda: list(saver.list(config(thread))),
            "history": lambda: list(graph.get_state_history(config(thread))),
            "get_state": lambda: graph.get_state(config(thread)),
            "resume": lambda: graph.invoke(Command(resume="approve"), config(thread)),
        }
        for read, call in reads.items():
            with pytest.raises(RefusedCheckpointError) as refused:
                call()
            error = refused.value
            assert (error.type_name, error.thread_id) == ("os.system", thread), read
            assert error.checkpoint_id in checkpoint_ids, read
            assert f"Refused checkpoint `{error.checkpoint_id}` of thread `{thread}`" in str(error)
            assert "touch" not in str(error) and str(marker) not in str(error)

    assert not marker.exists()


def test_without_strict_mode_the_same_tampered_checkpoint_runs_its_command(
    url: str, thread: str, tmp_path: Path
):
    """The control: the attack the refusal stops is real."""
    pause_a_run(url, thread)
    marker = tmp_path / "marker"
    tamper(url, thread, os_system(marker))

    with langgraph_default_saver(url) as saver:
        saver.get_tuple(config(thread))

    assert marker.exists()


def test_a_tampered_pending_write_is_refused(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/checkpoints.sqlite"
    thread = "t-writes"
    pause_a_run(url, thread)
    marker = tmp_path / "marker"
    with closing(sqlite3.connect(tmp_path / "checkpoints.sqlite")) as conn, conn:
        updated = conn.execute(
            "UPDATE writes SET type = 'msgpack', value = ? WHERE thread_id = ?",
            (ormsgpack.packb(os_system(marker)), thread),
        ).rowcount
    assert updated > 0

    with open_checkpointer(url, create=False) as saver, pytest.raises(RefusedCheckpointError) as refused:
        saver.get_tuple(config(thread))

    assert refused.value.thread_id == thread and refused.value.type_name == "os.system"
    assert not marker.exists()


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_a_runs_checkpoints_round_trip_under_strict_mode(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
):
    if store == "postgres":
        url = request.getfixturevalue("database_url")
    else:
        url = "memory:" if store == "memory" else f"sqlite:///{tmp_path}/checkpoints.sqlite"
    thread = f"strict-{uuid.uuid4().hex[:12]}"
    run = {"messages": [{"role": "user", "content": TASK}], "constraints": ["Budget under 300k USD"]}
    context = Context(review_threshold=1)
    with open_checkpointer(url) as saver:
        graph = build_graph(checkpointer=saver, ledger="memory:")
        try:
            paused = graph.invoke(run, config(thread), context=context)
            done = graph.invoke(Command(resume="approve"), config(thread), context=context)
            history = list(graph.get_state_history(config(thread)))
            strict = [(t.checkpoint, t.pending_writes) for t in saver.list(config(thread))]
            if store != "memory":
                with langgraph_default_saver(url) as default:
                    by_default = [(t.checkpoint, t.pending_writes) for t in default.list(config(thread))]
                assert strict == by_default, "strict mode loaded something differently"
        finally:
            saver.delete_thread(thread)

    assert paused["__interrupt__"][0].value["kind"] == "review"
    assert done["review"]["decision"] == "approved"
    assert [type(m) for m in done["messages"]] == [HumanMessage, AIMessage]
    assert history[0].values == done and len(history) >= 6
    assert any(i.value["kind"] == "review" for snap in history for i in snap.interrupts)


def test_budgetgraph_history_refuses_a_tampered_checkpoint_in_one_line(tmp_path: Path):
    budgetgraph = Path(sys.executable).parent / "budgetgraph"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_"))}
    store = ("--checkpointer", f"sqlite:///{tmp_path}/checkpoints.sqlite")
    ran = subprocess.run(
        [str(budgetgraph), "run", TASK, "--thread", "t1", "--review-threshold", "1", *store],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ran.returncode == 3, ran.stderr
    marker = tmp_path / "marker"
    tamper(store[1], "t1", os_system(marker))

    history = subprocess.run(
        [str(budgetgraph), "history", "t1", *store], capture_output=True, text=True, env=env, timeout=120
    )

    assert history.returncode == 1
    assert "Refused checkpoint" in history.stderr and "`os.system`" in history.stderr
    assert "Traceback" not in history.stderr and "touch" not in history.stderr + history.stdout
    assert not marker.exists()
