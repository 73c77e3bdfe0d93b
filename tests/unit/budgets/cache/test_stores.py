"""Every entry store behaves the same: memory, SQLite on disk, and Redis (a real server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from budgetgraph.budgets.cache import Counts, Eviction, Namespace, NewEntry
from budgetgraph.budgets.cache.stores.sqlite import SqliteStore
from tests.unit.budgets.cache.conftest import FakeClock, StoreFactory


def namespace(tenant: str = "acme", node: str = "cto") -> Namespace:
    return Namespace(
        tenant=tenant,
        node=node,
        tier="standard",
        model="gpt-4.1-mini",
        prompt="p1",
        sampling="s1",
        schema="Analysis@abc",
        embedder="test",
    )


def vector(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def new(key: str, ns: Namespace | None = None, *, cost: int = 100, seed: int = 0) -> NewEntry:
    return NewEntry(
        namespace=ns or namespace(),
        key=key,
        text=f"text of {key}",
        vector=vector(seed),
        response={"answer": key},
        model="gpt-4.1-mini",
        input_tokens=10,
        output_tokens=5,
        cost_micro_usd=cost,
    )


def test_an_entry_is_found_by_its_exact_key_only_in_its_namespace(make_store: StoreFactory):
    store = make_store()
    entry = store.add(new("k1"))

    found = store.find(namespace().key, "k1")

    assert found is not None and found.id == entry.id
    assert found.response == {"answer": "k1"} and found.cost_micro_usd == 100
    assert np.allclose(found.vector, vector(0))
    assert store.find(namespace(tenant="other").key, "k1") is None
    assert store.find(namespace().key, "k2") is None
    assert store.get([entry.id, 99999]) == {entry.id: found}


def test_adding_the_same_key_replaces_the_entry(make_store: StoreFactory):
    store = make_store()
    first = store.add(new("k1", cost=1))
    cursor = store.sync(namespace().key, None).cursor

    second = store.add(new("k1", cost=2))

    assert second.id != first.id
    assert store.find(namespace().key, "k1").cost_micro_usd == 2
    assert store.get([first.id]) == {}
    sync = store.sync(namespace().key, cursor)
    assert sync.removed == [first.id] and [i for i, _ in sync.added] == [second.id]


def test_sync_reports_adds_and_removals_after_a_cursor(make_store: StoreFactory):
    store = make_store(Eviction(ttl_s=None, max_entries=2))
    ns = namespace().key
    full = store.sync(ns, None)
    assert full.reset and full.added == []

    a = store.add(new("a", seed=1))
    b = store.add(new("b", seed=2))
    step = store.sync(ns, full.cursor)
    assert not step.reset and [i for i, _ in step.added] == [a.id, b.id]
    assert np.allclose(step.added[1][1], vector(2))

    c = store.add(new("c", seed=3))  # evicts `a`, the least recently used
    step2 = store.sync(ns, step.cursor)
    assert step2.removed == [a.id] and [i for i, _ in step2.added] == [c.id]
    assert store.sync(ns, step2.cursor).added == []
    assert sorted(i for i, _ in store.sync(ns, None).added) == [b.id, c.id]


def test_entries_expire_after_their_ttl(make_store: StoreFactory, clock: FakeClock):
    store = make_store(Eviction(ttl_s=60, max_entries=100))
    entry = store.add(new("k1"))
    clock.advance(59)
    assert store.find(namespace().key, "k1") is not None

    clock.advance(2)

    assert store.find(namespace().key, "k1") is None
    assert store.get([entry.id]) == {}
    assert store.sync(namespace().key, None).added == []
    store.add(new("k2"))  # adding evicts what expired, and logs it
    assert [s.entries for s in store.stats()] == [1]


def test_the_size_bound_evicts_the_least_recently_used(make_store: StoreFactory, clock: FakeClock):
    store = make_store(Eviction(ttl_s=None, max_entries=3))
    a = store.add(new("a"))
    clock.advance(1)
    b = store.add(new("b"))
    clock.advance(1)
    c = store.add(new("c"))
    clock.advance(1)
    store.touch([a.id])  # `a` was just used: `b` is now the least recently used
    clock.advance(1)

    store.add(new("d"))

    assert store.get([a.id, b.id, c.id]).keys() == {a.id, c.id}
    assert store.find(namespace().key, "b") is None
    assert sum(s.entries for s in store.stats()) == 3


def test_the_size_bound_counts_every_namespace(make_store: StoreFactory, clock: FakeClock):
    store = make_store(Eviction(ttl_s=None, max_entries=2))
    store.add(new("a", namespace(tenant="t1")))
    clock.advance(1)
    store.add(new("b", namespace(tenant="t2")))
    clock.advance(1)
    store.add(new("c", namespace(tenant="t3")))

    assert {s.label.split("/")[0]: s.entries for s in store.stats()} == {"t2": 1, "t3": 1}


def test_counters_add_up_and_survive_a_clear_unless_reset(make_store: StoreFactory):
    store = make_store()
    ns = namespace()
    store.add(new("a"))
    store.record(ns, Counts(exact_hits=1, saved_micro_usd=100))
    store.record(ns, Counts(semantic_hits=2, misses=3, refusals=1, saved_micro_usd=50))

    (row,) = store.stats()
    assert row.label.startswith("acme/cto/standard/gpt-4.1-mini/Analysis@abc") and row.entries == 1
    assert row.counts == Counts(exact_hits=1, semantic_hits=2, misses=3, refusals=1, saved_micro_usd=150)

    assert store.clear() == 1
    (row,) = store.stats()
    assert row.entries == 0 and row.counts.saved_micro_usd == 150
    store.clear(reset_stats=True)
    assert store.stats() == []


def test_clearing_one_namespace_leaves_the_others(make_store: StoreFactory):
    store = make_store()
    mine, theirs = namespace(tenant="mine"), namespace(tenant="theirs")
    a = store.add(new("a", mine))
    b = store.add(new("b", mine))
    kept = store.add(new("a", theirs))
    cursor = store.sync(mine.key, None).cursor

    assert store.clear([mine.key]) == 2

    assert store.find(mine.key, "a") is None
    assert store.find(theirs.key, "a").id == kept.id
    after = store.sync(mine.key, cursor)
    assert after.reset or sorted(after.removed) == [a.id, b.id]  # a `clear`, or one removal each


def test_the_disk_store_keeps_entries_and_counters_across_reopening(tmp_path: Path, clock: FakeClock):
    first = SqliteStore(tmp_path / "cache", Eviction(ttl_s=3600), clock=clock)
    entry = first.add(new("k1"))
    first.record(namespace(), Counts(exact_hits=4))
    first.close()

    second = SqliteStore(tmp_path / "cache", Eviction(ttl_s=3600), clock=clock)

    assert second.find(namespace().key, "k1").id == entry.id
    assert second.stats()[0].counts.exact_hits == 4
    assert (tmp_path / "cache" / "entries.sqlite").exists()
    second.close()


def test_adding_many_entries_at_once_is_the_same_as_adding_each(make_store: StoreFactory):
    store = make_store(Eviction(ttl_s=None, max_entries=3))
    ns = namespace().key
    cursor = store.sync(ns, None).cursor

    entries = store.add_many([new(f"k{i}", seed=i) for i in range(5)])

    assert len({e.id for e in entries}) == 5
    assert [store.find(ns, f"k{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert sorted(i for i, _ in store.sync(ns, None).added) == [e.id for e in entries[2:]]
    step = store.sync(ns, cursor)
    assert step.reset or {i for i, _ in step.added} - set(step.removed) == {e.id for e in entries[2:]}


def test_a_cursor_older_than_the_kept_change_log_gets_a_full_reload(make_store: StoreFactory):
    store = make_store(Eviction(ttl_s=None, max_entries=2))
    ns = namespace().key
    stale = store.sync(ns, None).cursor
    for start in range(0, 600, 100):
        store.add_many([new(f"k{i}", seed=i) for i in range(start, start + 100)])

    sync = store.sync(ns, stale)

    assert sync.reset
    assert sorted(i for i, _ in sync.added) == sorted(e.id for e in store.get(list(range(1, 2000))).values())
    assert len(sync.added) == 2


def test_the_redis_store_loads_its_scripts_again_when_the_server_lost_them(
    redis_url: str, redis_prefix: str, clock: FakeClock
):
    import redis

    from budgetgraph.budgets.cache.stores.redis import RedisStore

    store = RedisStore(redis_url, prefix=redis_prefix, clock=clock)
    entry = store.add(new("k1"))
    cursor = store.sync(namespace().key, None).cursor
    client = redis.Redis.from_url(redis_url)
    client.script_flush()  # as after a restart
    client.close()

    found, sync = store.find_and_sync(namespace().key, "k1", cursor)

    assert found.id == entry.id and sync is not None and not sync.reset
    store.close()


def test_a_redis_lookup_survives_the_server_closing_the_store_s_lookup_connection(
    redis_url: str, redis_prefix: str, clock: FakeClock
):
    import redis

    from budgetgraph.budgets.cache.stores.redis import RedisStore

    store = RedisStore(redis_url, prefix=redis_prefix, clock=clock)
    entry = store.add(new("k1"))
    cursor = store.sync(namespace().key, None).cursor
    store.find_and_sync(namespace().key, "k1", cursor)
    kept = store._lookup_connection  # noqa: SLF001  # the one to close, as a restart or `timeout` would
    kept.send_command("CLIENT", "ID")
    client = redis.Redis.from_url(redis_url)
    client.client_kill_filter(_id=kept.read_response())
    client.close()

    found, sync = store.find_and_sync(namespace().key, "k1", cursor)
    again, _ = store.find_and_sync(namespace().key, "k1", cursor)

    assert found.id == entry.id and again.id == entry.id and sync is not None and not sync.reset
    store.close()


def test_redis_lookups_from_many_threads_each_get_their_own_entry(
    redis_url: str, redis_prefix: str, clock: FakeClock
):
    from concurrent.futures import ThreadPoolExecutor

    from budgetgraph.budgets.cache.stores.redis import RedisStore

    store = RedisStore(redis_url, prefix=redis_prefix, clock=clock)
    ids = {f"k{i}": e.id for i, e in enumerate(store.add_many([new(f"k{i}", seed=i) for i in range(8)]))}
    cursor = store.sync(namespace().key, None).cursor

    def look_up(key: str) -> list[int | None]:
        found = [store.find_and_sync(namespace().key, key, cursor)[0] for _ in range(100)]
        return [e.id if e is not None else None for e in found]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(ids, pool.map(look_up, ids), strict=True))

    assert results == {key: [entry_id] * 100 for key, entry_id in ids.items()}
    store.close()
