"""The semantic cache over its stores: exact and semantic hits, eviction, persistence, sharing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import redis

from budgetgraph.budgets.cache import Eviction, Guard, Namespace, SemanticCache
from budgetgraph.budgets.cache.base import exact_key
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cache.stores.redis import RedisStore
from budgetgraph.budgets.cache.stores.sqlite import SqliteStore
from tests.unit.budgets.cache.conftest import FakeClock, HashingEmbedder

REPO = Path(__file__).resolve().parents[4]

STORED = "please reset the password of my office account today"
SIMILAR = "please reset the password of my office account now"
UNRELATED = "what is the weather like in the mountains this weekend"


def namespace(tenant: str = "acme") -> Namespace:
    return Namespace(
        tenant=tenant,
        node="planner",
        tier="standard",
        model="gpt-4.1-mini",
        prompt="p",
        sampling="s",
        schema="PlanBrief@1",
        embedder=HashingEmbedder.name,
    )


def put(cache: SemanticCache, text: str, ns: Namespace | None = None, cost: int = 250) -> None:
    cache.put(
        ns or namespace(),
        key=exact_key(text),
        text=text,
        response={"answer": text},
        model="m",
        cost_micro_usd=cost,
    )


def lookup(cache: SemanticCache, text: str, ns: Namespace | None = None, threshold: float = 0.7):
    return cache.lookup(ns or namespace(), key=exact_key(text), text=text, threshold=threshold)


def cache_on(store, embedder: HashingEmbedder | None = None, **options) -> SemanticCache:
    return SemanticCache(store, embedder or HashingEmbedder(), guard=Guard(enabled=False), **options)


def test_an_identical_request_is_an_exact_hit_without_embedding(hashing_embedder: HashingEmbedder):
    cache = cache_on(MemoryStore(), hashing_embedder)
    put(cache, STORED)
    embedded = hashing_embedder.calls

    found = lookup(cache, STORED)

    assert found.outcome == "exact" and found.entry.response == {"answer": STORED}
    assert hashing_embedder.calls == embedded


def test_a_similar_request_is_a_semantic_hit_and_an_unrelated_one_a_miss():
    cache = cache_on(MemoryStore())
    put(cache, STORED)
    put(cache, UNRELATED)

    hit, miss = lookup(cache, SIMILAR), lookup(cache, "how many moons does jupiter have")

    assert hit.outcome == "semantic" and hit.entry.text == STORED and hit.similarity > 0.7
    assert miss.outcome == "miss" and miss.entry is None and miss.vector is not None
    assert "< 0.70" in miss.reason


def test_exact_only_requests_never_match_semantically():
    cache = cache_on(MemoryStore())
    put(cache, STORED)

    found = cache.lookup(namespace(), key=exact_key(SIMILAR), text=None, threshold=0.5)

    assert found.outcome == "miss" and found.reason == "no exact match (exact-only request)"


def test_counters_record_hits_misses_and_the_money_saved():
    store = MemoryStore()
    cache = cache_on(store, flush_s=0)
    put(cache, STORED, cost=250)

    lookup(cache, STORED)
    lookup(cache, SIMILAR)
    lookup(cache, UNRELATED)
    cache.flush()

    (row,) = store.stats()
    assert row.entries == 1
    assert row.counts.as_dict() == {
        "exact_hits": 1,
        "semantic_hits": 1,
        "misses": 1,
        "refusals": 0,
        "saved_micro_usd": 500,
    }


def test_an_expired_entry_is_not_served(clock: FakeClock):
    cache = cache_on(MemoryStore(Eviction(ttl_s=10, max_entries=10), clock=clock))
    put(cache, STORED)
    assert lookup(cache, SIMILAR).hit

    clock.advance(11)

    assert lookup(cache, STORED).outcome == "miss"
    assert lookup(cache, SIMILAR).outcome == "miss"


def test_the_least_recently_used_entry_is_evicted_past_the_size_bound(tmp_path: Path, clock: FakeClock):
    store = SqliteStore(tmp_path / "cache", Eviction(ttl_s=None, max_entries=2), clock=clock)
    cache = cache_on(store, flush_s=0)
    put(cache, STORED)
    clock.advance(1)
    put(cache, UNRELATED)
    clock.advance(1)
    assert lookup(cache, STORED).outcome == "exact"  # touched: now the most recently used
    clock.advance(1)

    put(cache, "a third request about invoices and refunds")

    assert lookup(cache, STORED).outcome == "exact"
    assert lookup(cache, UNRELATED).outcome == "miss"
    cache.close()


class CursorSpy(SqliteStore):
    """A disk store that notes the cursor of every catch-up (``None``: a full reload)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cursors: list[str | None] = []

    def sync(self, namespace: str, cursor: str | None):
        self.cursors.append(cursor)
        return super().sync(namespace, cursor)


def test_the_disk_cache_reloads_its_entries_and_index_after_a_restart(tmp_path: Path):
    folder = tmp_path / "cache"
    first = cache_on(SqliteStore(folder), index_dir=folder / "index")
    put(first, STORED)
    put(first, UNRELATED)
    first.close()
    snapshot = folder / "index" / f"{namespace().key}.faiss"
    assert snapshot.exists()

    store = CursorSpy(folder)
    second = cache_on(store, index_dir=folder / "index")
    found = lookup(second, SIMILAR)

    assert found.outcome == "semantic" and found.entry.text == STORED
    assert len(second._spaces[namespace().key].index) == 2
    # The index came from the snapshot: the store was asked only for what changed since.
    assert store.cursors and None not in store.cursors
    second.close()


def test_a_snapshot_of_a_deleted_store_file_is_not_applied_to_the_new_one(tmp_path: Path):
    folder = tmp_path / "cache"
    first = cache_on(SqliteStore(folder), index_dir=folder / "index")
    put(first, STORED)
    first.close()
    for file in folder.glob("entries.sqlite*"):
        file.unlink()
    fresh = cache_on(SqliteStore(folder), index_dir=folder / "index")
    put(fresh, UNRELATED)  # takes entry id 1 again, the id STORED had in the snapshot

    assert lookup(fresh, SIMILAR).outcome == "miss"
    fresh.close()


def test_a_stale_or_broken_index_snapshot_is_caught_up_from_the_store(tmp_path: Path):
    folder = tmp_path / "cache"
    first = cache_on(SqliteStore(folder), index_dir=folder / "index")
    put(first, UNRELATED)
    first.close()
    other = cache_on(SqliteStore(folder), index_dir=None)  # another process: no snapshot written
    put(other, STORED)
    other.close()

    caught_up = cache_on(SqliteStore(folder), index_dir=folder / "index")
    assert lookup(caught_up, SIMILAR).entry.text == STORED
    caught_up.close()

    (folder / "index" / f"{namespace().key}.faiss").write_bytes(b"not an index")
    rebuilt = cache_on(SqliteStore(folder), index_dir=folder / "index")
    assert lookup(rebuilt, SIMILAR).entry.text == STORED
    rebuilt.close()


CHILD = """
import json, sys
from budgetgraph.budgets.cache import Guard, SemanticCache
from budgetgraph.budgets.cache.base import exact_key
from budgetgraph.budgets.cache.stores.redis import RedisStore
from tests.unit.budgets.cache.conftest import HashingEmbedder
from tests.unit.budgets.cache.test_cache import STORED, SIMILAR, namespace

url, prefix = sys.argv[1:3]
cache = SemanticCache(RedisStore(url, prefix=prefix), HashingEmbedder(), guard=Guard(enabled=False))
seen = cache.lookup(namespace(), key=exact_key(SIMILAR), text=SIMILAR, threshold=0.7)
other = cache.lookup(namespace("globex"), key=exact_key(SIMILAR), text=SIMILAR, threshold=0.7)
text = "my laptop battery drains fast when the screen is on"
cache.put(namespace(), key=exact_key(text), text=text, response={"answer": "child"}, model="m")
cache.close()
print(json.dumps({"seen": seen.entry.response if seen.entry else None, "other_tenant": other.outcome}))
"""


def test_two_processes_sharing_redis_serve_each_others_entries_but_not_across_tenants(
    redis_url: str, redis_prefix: str
):
    cache = cache_on(RedisStore(redis_url, prefix=redis_prefix))
    assert lookup(cache, "why does my laptop battery drain fast with the screen on").outcome == "miss"
    put(cache, STORED)

    child = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, redis_prefix],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report == {"seen": {"answer": STORED}, "other_tenant": "miss"}
    # The parent's index follows the shared change log: it sees the child's entry...
    found = lookup(cache, "why does my laptop battery drain fast when the screen is on")
    assert found.hit and found.entry.response == {"answer": "child"}
    # ...and another tenant still does not.
    assert lookup(cache, SIMILAR, namespace("globex")).outcome == "miss"
    cache.close()


def test_after_redis_loses_its_keys_old_index_ids_never_serve_new_entries(redis_url: str, redis_prefix: str):
    reader = cache_on(RedisStore(redis_url, prefix=redis_prefix))
    put(reader, STORED)
    assert lookup(reader, SIMILAR).entry.text == STORED
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.scan_iter(match=f"{redis_prefix}:*"))  # FLUSHDB, or a restart without persistence
    client.close()
    writer = cache_on(RedisStore(redis_url, prefix=redis_prefix))
    # Entry ids start again at 1: an exact-only entry of the same namespace (no vector, so
    # no change logged for the reader's index) takes STORED's id, another tenant's the next.
    writer.put(namespace(), key="other", text=None, response={"answer": "another request"}, model="m")
    put(writer, SIMILAR, namespace("globex"))

    assert lookup(reader, SIMILAR).outcome == "miss"
    put(writer, UNRELATED)
    assert lookup(reader, UNRELATED.replace("weekend", "week")).entry.text == UNRELATED
    writer.close()
    reader.close()


def test_a_lookup_given_its_vector_fetches_its_candidates_in_the_catch_up_round_trip(
    redis_url: str, redis_prefix: str, monkeypatch
):
    store = RedisStore(redis_url, prefix=redis_prefix)
    cache = cache_on(store)
    put(cache, STORED)
    vector = HashingEmbedder().embed([SIMILAR])[0]
    lookup(cache, UNRELATED)  # in step with the store from here on
    separate_fetches = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda ids: separate_fetches.append(ids) or real_get(ids))

    steady = cache.lookup(namespace(), key=exact_key(SIMILAR), text=SIMILAR, threshold=0.7, vector=vector)
    assert steady.outcome == "semantic" and separate_fetches == []  # one round trip in all
    other = cache_on(RedisStore(redis_url, prefix=redis_prefix))
    put(other, "please reset the password of my office account tonight")  # a change to catch up on
    changed = cache.lookup(namespace(), key=exact_key(SIMILAR), text=SIMILAR, threshold=0.7, vector=vector)

    # After a change the index is searched again and the new nearest are fetched on their own.
    assert changed.outcome in ("semantic", "miss") and len(separate_fetches) >= 1
    other.close()
    cache.close()


def test_an_index_id_that_names_another_namespaces_entry_is_not_served():
    store = MemoryStore()
    cache = cache_on(store)
    put(cache, STORED)
    stale = cache._spaces[namespace().key].index
    assert stale is not None
    put(cache, SIMILAR, namespace("globex"))
    globex_id = next(iter(cache._spaces[namespace("globex").key].index._ids))
    stale.add([globex_id], HashingEmbedder().embed([SIMILAR]))  # an index out of step with its store

    found = lookup(cache, SIMILAR)

    assert found.entry is None or found.entry.namespace == namespace().key
    assert globex_id not in stale


def test_a_vector_given_by_the_caller_skips_the_embedder(hashing_embedder: HashingEmbedder):
    cache = cache_on(MemoryStore(), hashing_embedder)
    vector = np.asarray(HashingEmbedder().embed([STORED])[0])
    cache.put(namespace(), key="k", text=STORED, vector=vector, response={}, model="m")

    found = cache.lookup(namespace(), key="other", text=SIMILAR, threshold=0.99, vector=vector)

    assert found.outcome == "semantic" and hashing_embedder.calls == 0


def test_a_request_between_two_stored_ones_is_refused_as_ambiguous():
    cache = SemanticCache(MemoryStore(), HashingEmbedder(), guard=Guard())
    base = np.zeros(64, dtype=np.float32)
    base[0] = 1.0
    near_a, near_b = base.copy(), base.copy()
    near_a[1], near_b[2] = 0.2, 0.2
    for name, vector in (("a", near_a), ("b", near_b)):
        cache.put(
            namespace(),
            key=name,
            text=f"stored {name}",
            vector=vector / np.linalg.norm(vector),
            response={},
            model="m",
        )

    found = cache.lookup(namespace(), key="q", text="stored a", threshold=0.5, vector=base)

    assert found.outcome == "miss" and found.reason.startswith("ambiguous: two entries at 0.981 and 0.981")
    assert found.refused == (found.reason,)


def _at_cosine(similarity: float) -> tuple[np.ndarray, np.ndarray]:
    stored, query = np.zeros(64, dtype=np.float32), np.zeros(64, dtype=np.float32)
    stored[0] = 1.0
    query[0], query[1] = similarity, np.sqrt(1 - similarity**2)
    return stored, query


def test_an_abbreviation_written_out_is_served_under_the_threshold_and_nothing_else_is():
    cache = SemanticCache(MemoryStore(), HashingEmbedder(), guard=Guard())
    stored, query = _at_cosine(0.55)
    text = "Should we sign an MSA with the new MSP?"
    cache.put(namespace(), key=exact_key(text), text=text, vector=stored, response={"answer": 1}, model="m")

    def ask(asked: str, vector: np.ndarray):
        return cache.lookup(namespace(), key=exact_key(asked), text=asked, threshold=0.78, vector=vector)

    written_out = ask(
        "Should we sign a master services agreement with the new managed service provider?", query
    )
    assert written_out.outcome == "semantic" and written_out.reason.startswith("abbreviations written out")
    other = ask(
        "Should we cancel the master services agreement with the new managed service provider?", query
    )
    assert other.outcome == "miss" and other.reason == "nearest 0.550 < 0.78"
    _, far = _at_cosine(0.3)
    assert (
        ask("Should we sign a master services agreement with the new managed service provider?", far).outcome
        == "miss"
    )
