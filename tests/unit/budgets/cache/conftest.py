"""Fixtures of the cache tests: a fake clock, embedders, and every store backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import redis

from budgetgraph.budgets.cache import Eviction
from budgetgraph.budgets.cache.base import EntryStore, Matrix
from budgetgraph.budgets.cache.embedders import LocalEmbedder
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cache.stores.redis import RedisStore
from budgetgraph.budgets.cache.stores.sqlite import SqliteStore
from tests.conftest import service_url
from tests.fakes.openai_server import embed_text


class FakeClock:
    """A clock tests move by hand (Unix seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HashingEmbedder:
    """Deterministic feature-hashing vectors: texts sharing words are similar (no model)."""

    name = "test:hashing"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def fits(self, text: str) -> bool:
        return len(text) < 2000

    def embed(self, texts: Sequence[str]) -> Matrix:
        self.calls += 1
        return np.asarray([embed_text(t, self.dim) for t in texts], dtype=np.float32)


@pytest.fixture(autouse=True)
def cache_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the cache: it is on whatever the suite's environment says."""
    monkeypatch.delenv("BUDGETGRAPH_CACHE", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the whole session."""
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture
def redis_url() -> str:
    return service_url("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"bgtest:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


StoreFactory = Callable[..., EntryStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[StoreFactory]:
    """Builds a store of each backend with the fake clock; ``redis`` needs a server."""
    opened: list[EntryStore] = []

    def build(eviction: Eviction | None = None) -> EntryStore:
        eviction = eviction or Eviction(ttl_s=None, max_entries=1000)
        if request.param == "memory":
            store: EntryStore = MemoryStore(eviction, clock=clock)
        elif request.param == "sqlite":
            store = SqliteStore(tmp_path / "cache", eviction, clock=clock)
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            store = RedisStore(url, eviction, prefix=prefix, clock=clock)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()
