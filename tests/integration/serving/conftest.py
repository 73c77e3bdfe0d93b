"""Fixtures of the tests that drive a served graph: one `langgraph dev` for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from tests.fakes.openai_server import FakeOpenAIServer
from tests.serving import ServedGraph, langgraph_dev, system_assistant_id


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGraph]:
    """`langgraph dev` with its fake model server, started once for the session."""
    with langgraph_dev(tmp_path_factory.mktemp("langgraph-dev")) as server:
        yield server


@pytest.fixture
def openai_server(served: ServedGraph) -> FakeOpenAIServer:
    """The served graph's model endpoint, with no requests or scripting left from earlier tests."""
    served.openai.reset()
    return served.openai


@pytest.fixture
def client(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    """An official LangGraph SDK client of the server."""
    with get_sync_client(url=served.url, api_key=None, timeout=60.0) as sdk:
        yield sdk


@pytest.fixture
def assistant_id(client: SyncLangGraphClient) -> str:
    """The system assistant of the `decision` graph."""
    return system_assistant_id(client)
