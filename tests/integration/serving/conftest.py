"""Fixtures of the tests that drive a served graph: one `langgraph dev` for the whole session.

The server runs with auth on: a serving file (``BUDGETGRAPH_SERVING``) declares
three profiles and two clients, each an API key mapped to a tenant:

- ``acme`` (:data:`ACME_KEY`) may use every profile;
- ``acme`` again (:data:`ACME_APPROVER_KEY`, ``approve_budgets``): may also
  approve going over a cap;
- ``globex`` (:data:`GLOBEX_KEY`) only ``standard``.

Profiles: ``standard`` (the packaged files, the default), ``economy`` (every
node on the economy tier), ``tight`` (the cto capped at 100 tokens, run
locally beyond) and ``approval`` (reconcile capped at $0.0001, approve beyond).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from tests.fakes.openai_server import FakeOpenAIServer
from tests.serving import ServedGraph, langgraph_dev, system_assistant_id

ACME_KEY = "acme-test-key-1f3a"
GLOBEX_KEY = "globex-test-key-9c2e"
ACME_APPROVER_KEY = "acme-approver-key-77d0"


def write_serving(folder: Path) -> Path:
    """Write the serving file and its profiles' files into ``folder``; return the serving file."""
    (folder / "economy-models.yaml").write_text(yaml.safe_dump({"default_tier": "economy"}))
    # every node on models.yaml's default tier: no routing by the decision
    (folder / "economy-budgets.yaml").write_text(yaml.safe_dump({"router": {"decision": {"enabled": False}}}))
    (folder / "tight-budgets.yaml").write_text(
        yaml.safe_dump({"nodes": {"cto": {"max_tokens": 100, "on_exceed": "local"}}})
    )
    (folder / "approval-budgets.yaml").write_text(
        yaml.safe_dump({"nodes": {"reconcile": {"max_cost_usd": 0.0001, "on_exceed": "approve"}}})
    )
    serving = {
        "profiles": {
            "standard": {},
            "economy": {"models": "economy-models.yaml", "budgets": "economy-budgets.yaml"},
            "tight": {"budgets": "tight-budgets.yaml"},
            "approval": {"budgets": "approval-budgets.yaml"},
        },
        "default_profile": "standard",
        "clients": [
            {"tenant": "acme", "key_sha256": hashlib.sha256(ACME_KEY.encode()).hexdigest()},
            {
                "tenant": "acme",
                "key_sha256": hashlib.sha256(ACME_APPROVER_KEY.encode()).hexdigest(),
                "approve_budgets": True,
            },
            {
                "tenant": "globex",
                "key_sha256": hashlib.sha256(GLOBEX_KEY.encode()).hexdigest(),
                "profiles": ["standard"],
            },
        ],
    }
    path = folder / "serving.yaml"
    path.write_text(yaml.safe_dump(serving, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGraph]:
    """`langgraph dev` with its fake model server and auth on, started once for the session."""
    workdir = tmp_path_factory.mktemp("langgraph-dev")
    config = tmp_path_factory.mktemp("serving-config")
    with langgraph_dev(workdir, serving=write_serving(config)) as server:
        yield server


@pytest.fixture
def openai_server(served: ServedGraph) -> FakeOpenAIServer:
    """The served graph's model endpoint, with no requests or scripting left from earlier tests."""
    served.openai.reset()
    return served.openai


@pytest.fixture
def client(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    """An official LangGraph SDK client of the server, as tenant `acme`."""
    with get_sync_client(url=served.url, api_key=ACME_KEY, timeout=60.0) as sdk:
        yield sdk


@pytest.fixture
def approver(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    """A client of the server as tenant `acme`, with the key that may approve going over a cap."""
    with get_sync_client(url=served.url, api_key=ACME_APPROVER_KEY, timeout=60.0) as sdk:
        yield sdk


@pytest.fixture
def globex(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    """A client of the server as tenant `globex` (profile `standard` only)."""
    with get_sync_client(url=served.url, api_key=GLOBEX_KEY, timeout=60.0) as sdk:
        yield sdk


@pytest.fixture
def assistant_id(client: SyncLangGraphClient) -> str:
    """The system assistant of the `decision` graph."""
    return system_assistant_id(client)
