"""The strict checkpoint serializer: what it rebuilds, what it refuses, and that refusing runs nothing."""

from __future__ import annotations

import pickle
import shlex
import uuid
from datetime import UTC, datetime
from pathlib import Path

import ormsgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.serde.jsonplus import (
    EXT_CONSTRUCTOR_KW_ARGS,
    EXT_CONSTRUCTOR_POS_ARGS,
    EXT_CONSTRUCTOR_SINGLE_ARG,
    EXT_METHOD_SINGLE_ARG,
    EXT_PYDANTIC_V2,
    JsonPlusSerializer,
)
from langgraph.types import Interrupt, Send

from budgetgraph.budgets import BudgetgraphError
from budgetgraph.graph.checkpoint import open_checkpointer
from budgetgraph.graph.serde import RefusedCheckpointError, StrictSerializer, strict_serde


def ext(code: int, *fields: object) -> ormsgpack.Ext:
    """A msgpack Ext as LangGraph's serializer writes one: ``(module, name, args...)``."""
    return ormsgpack.Ext(code, ormsgpack.packb(fields))


def os_system(marker: Path) -> ormsgpack.Ext:
    """The attack: an Ext whose loading runs ``touch MARKER`` in a shell."""
    return ext(EXT_CONSTRUCTOR_POS_ARGS, "os", "system", (f"touch {shlex.quote(str(marker))}",))


def msgpack(value: object) -> tuple[str, bytes]:
    return "msgpack", ormsgpack.packb(value)


def gadgets(marker: Path) -> dict[str, ormsgpack.Ext]:
    """One Ext per way LangGraph rebuilds an object, each creating ``marker`` if it is rebuilt."""
    return {
        "single-arg constructor": ext(EXT_CONSTRUCTOR_SINGLE_ARG, "os", "mkdir", str(marker)),
        "positional constructor": os_system(marker),
        "keyword constructor": ext(EXT_CONSTRUCTOR_KW_ARGS, "os", "makedirs", {"name": str(marker)}),
        "method call": ext(EXT_METHOD_SINGLE_ARG, "os", "mkdir", str(marker), "__call__"),
        "pydantic model": ext(EXT_PYDANTIC_V2, "os", "mkdir", {"path": str(marker)}, "model_validate_json"),
    }


GADGETS = list(gadgets(Path("x")))


def test_the_types_a_run_stores_round_trip():
    serde = strict_serde()
    value = {
        "messages": [
            HumanMessage("Should we hire?", id="h1"),
            AIMessage("Yes.", id="a1", name="reconcile"),
            ToolMessage("960", tool_call_id="c1"),
        ],
        "send": Send("cto", {"task": "x", "step": {"n": 1}}),
        "interrupt": Interrupt(value={"kind": "review", "risk_score": 4}, id="i1"),
        "at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "id": uuid.UUID(int=7),
        "spend": [{"node": "cto", "cost_micro_usd": 12, "priced": True}],
    }

    assert serde.loads_typed(serde.dumps_typed(value)) == value


@pytest.mark.parametrize("kind", GADGETS)
def test_an_ext_naming_a_callable_is_refused_and_never_called(tmp_path: Path, kind: str):
    marker = tmp_path / "marker"
    data = msgpack({"task": "hire?", "evil": gadgets(marker)[kind]})

    with pytest.raises(RefusedCheckpointError) as refused:
        strict_serde().loads_typed(data)

    assert not marker.exists()
    assert refused.value.type_name.startswith("os.")
    assert str(marker) not in str(refused.value), "the error echoes the checkpoint's content"


def test_without_the_allow_list_the_same_payloads_run(tmp_path: Path):
    """The control: LangGraph's default (permissive) serializer rebuilds, i.e. calls, them."""
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    made = {
        kind: tmp_path / kind.replace(" ", "-")
        for kind in ("single-arg constructor", "positional constructor")
    }

    for kind, marker in made.items():
        permissive.loads_typed(msgpack(gadgets(marker)[kind]))

    assert all(marker.exists() for marker in made.values())


def test_a_blocked_type_nested_in_an_allowed_message_is_refused(tmp_path: Path):
    marker = tmp_path / "marker"
    message = AIMessage("ok", additional_kwargs={"x": os_system(marker)})
    _, data = JsonPlusSerializer().dumps_typed({"messages": [message]})

    with pytest.raises(RefusedCheckpointError, match="`os.system`"):
        strict_serde().loads_typed(("msgpack", data))
    assert not marker.exists()


def test_a_pydantic_model_the_state_never_stores_is_refused():
    from budgetgraph.agents.schemas import Risk

    _, data = JsonPlusSerializer().dumps_typed({"risk": Risk(description="d", severity=2, mitigation="m")})

    with pytest.raises(RefusedCheckpointError, match="`budgetgraph.agents.schemas.Risk`"):
        strict_serde().loads_typed(("msgpack", data))
    assert strict_serde(allowed=[Risk]).loads_typed(("msgpack", data))["risk"].severity == 2


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        ("pickle", pickle.dumps(Path("/tmp"))),
        ("json", b'{"lc": 2, "type": "constructor", "id": ["os", "system"], "args": ["true"]}'),
        ("cloudpickle", b"\x80\x05."),
    ],
)
def test_data_in_a_format_budgetgraph_never_writes_is_refused(tag: str, data: bytes):
    with pytest.raises(RefusedCheckpointError) as refused:
        strict_serde().loads_typed((tag, data))

    assert refused.value.type_name == tag


def test_the_refusal_names_the_checkpoint_it_was_found_in(tmp_path: Path):
    checkpoint = {
        "v": 4,
        "id": "ck-1",
        "channel_versions": {},
        "channel_values": {"task": os_system(tmp_path)},
    }

    with pytest.raises(RefusedCheckpointError) as refused:
        strict_serde().loads_typed(msgpack(checkpoint))

    assert refused.value.checkpoint_id == "ck-1"
    located = refused.value.located(thread_id="t-9", checkpoint_id="other")
    assert str(located) == (
        "Refused checkpoint `ck-1` of thread `t-9`: it holds `os.system`, which budgetgraph "
        "does not load from checkpoints (it may have been tampered with)."
    )


def test_the_refusal_is_a_budgetgraph_error_and_a_value_error():
    assert issubclass(RefusedCheckpointError, BudgetgraphError)
    assert issubclass(RefusedCheckpointError, ValueError)


def test_a_type_name_that_is_not_a_python_name_is_clipped_to_one_line():
    data = msgpack(ext(EXT_CONSTRUCTOR_SINGLE_ARG, "os\n\x1b[31mrm -rf /" + "x" * 500, "system", "true"))

    with pytest.raises(RefusedCheckpointError) as refused:
        strict_serde().loads_typed(data)

    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 300


def test_a_graph_that_adds_its_schema_types_keeps_refusing(tmp_path: Path):
    """``compile()`` under LANGGRAPH_STRICT_MSGPACK=true merges the graph's types with ``with_allowlist``."""
    with open_checkpointer("memory:") as saver:
        merged = saver.with_allowlist({("budgetgraph.agents.schemas", "Risk")})

    assert isinstance(merged.serde, StrictSerializer)
    with pytest.raises(RefusedCheckpointError):
        merged.serde.loads_typed(msgpack(os_system(tmp_path / "marker")))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("url", ["memory:", "sqlite:///checkpoints.sqlite"])
def test_every_checkpointer_opened_reads_strictly(url: str):
    with open_checkpointer(url) as saver:
        assert isinstance(saver.serde, StrictSerializer)
