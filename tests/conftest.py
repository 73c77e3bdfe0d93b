"""Shared fixtures: a real OpenAI-compatible server on 127.0.0.1 and clean settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai_server import FakeOpenAIServer

CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No model endpoint or budgetgraph setting leaks in; the working directory is a temp dir."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "BUDGETGRAPH_", "OTEL_")):
            monkeypatch.delenv(name)
    # Most tests count model requests for prompts they repeat: the semantic cache is off
    # unless a test turns it on (the cache's own tests do).
    monkeypatch.setenv("BUDGETGRAPH_CACHE", "off")
    monkeypatch.setenv("LANGGRAPH_CLI_NO_ANALYTICS", "1")
    monkeypatch.setenv("LANGGRAPH_NO_VERSION_CHECK", "true")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI Chat Completions server, started for one test."""
    with FakeOpenAIServer() as server:
        yield server


def write_models(path: Path, base_url: str, **tier_settings: object) -> Path:
    """Write a models.yaml whose three tiers point at ``base_url``."""
    tiers = {
        tier: {"model": model, "base_url": base_url, "max_retries": 0, **tier_settings}
        for tier, model in (("economy", "gpt-4.1-nano"), ("standard", "gpt-4.1-mini"), ("premium", "gpt-4.1"))
    }
    path.write_text(yaml.safe_dump({"default_tier": "standard", "tiers": tiers}))
    return path


@pytest.fixture
def models_file(tmp_path: Path, openai_server: FakeOpenAIServer) -> Path:
    """A models.yaml pointing every tier at the fake server."""
    return write_models(tmp_path / "models.yaml", openai_server.base_url)


def service_url(variable: str, default: str) -> str:
    """Return a service URL, or skip (fail under CI) when nothing answers there."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get(variable, default)
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1):
            pass
    except OSError as exc:
        message = f"{variable}={url} is not reachable ({exc}); set {variable} to a running server"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def database_url() -> str:
    """A PostgreSQL URL from DATABASE_URL (default: local `test` database)."""
    return service_url("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def redis_url() -> str:
    """A Redis URL from REDIS_URL (default: local database 0)."""
    return service_url("REDIS_URL", "redis://127.0.0.1:6379/0")
