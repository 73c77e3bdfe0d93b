r"""The shared store: Redis, for many processes or machines.

Every value is JSON or a plain string; nothing is pickled. Keys, under a
prefix ``P`` (default ``budgetgraph:cache``)::

    P:seq               INCR counter: entry ids, unique across processes
    P:epoch             random id of this incarnation of the keys (set when missing)
    P:e:{id}            the entry as JSON (vector as base64 float32), PX = TTL
    P:k:{ns}:{key}      exact key -> entry id, PX = TTL
    P:ids:{ns}          set of the namespace's entry ids (full reloads)
    P:meta              hash: entry id -> "{ns}\t{key}" (clean-up after expiry)
    P:lru               sorted set: entry id -> last use (ms), for LRU eviction
    P:exp               sorted set: entry id -> expiry (ms), for TTL eviction
    P:log:{ns}          stream of changes: op (add | del | mark), id
    P:ns                hash: namespace key -> label
    P:counts:{ns}       hash of counters (exact_hits, semantic_hits, ...)

Adding, removing and evicting run as Lua scripts, so each is atomic and a
size bound holds however many processes write. A lookup costs one round trip
on a connection the store keeps for lookups (one script reads the exact key,
the namespace's changes since the process's cursor and the nearest entries);
its counters are written on another kept connection without waiting for the
reply. Each process keeps a FAISS index per namespace and follows
``P:log:{ns}`` from its cursor, with an ``MGET`` of the new entries' vectors
when there are any. A process that
starts, or whose cursor is older than the stream's first entry (it fell more
than ``LOG_FACTOR * max_entries`` changes behind and the stream was trimmed
past it), reloads the namespace from ``P:ids:{ns}``; so does one whose cursor
names another ``P:epoch``: the keys were flushed (or Redis restarted without
persistence) and entry ids start again at 1, so the old index ids would name
other entries. The scripts compute key names, so this is for a standalone
Redis 7 or later, not Redis Cluster.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import hiredis
import redis
from redis.commands.core import Script

from budgetgraph.budgets.cache.base import (
    Counts,
    Entry,
    Eviction,
    Namespace,
    NamespaceStats,
    NewEntry,
    Sync,
)
from budgetgraph.budgets.cache.stores import DEFAULT_PREFIX

logger = logging.getLogger(__name__)

"""Key prefix when none is configured."""

_REMOVE_FN = """
local function remove(p, id, maxlen)
  local meta = redis.call('HGET', p .. ':meta', id)
  redis.call('DEL', p .. ':e:' .. id)
  redis.call('ZREM', p .. ':lru', id)
  redis.call('ZREM', p .. ':exp', id)
  redis.call('HDEL', p .. ':meta', id)
  if not meta then return 0 end
  local tab = string.find(meta, '\\t', 1, true)
  local ns = string.sub(meta, 1, tab - 1)
  local key = string.sub(meta, tab + 1)
  local kkey = p .. ':k:' .. ns .. ':' .. key
  if redis.call('GET', kkey) == id then redis.call('DEL', kkey) end
  if redis.call('SREM', p .. ':ids:' .. ns, id) == 1 then
    redis.call('XADD', p .. ':log:' .. ns, 'MAXLEN', '~', maxlen, '*', 'op', 'del', 'id', id)
  end
  return 1
end
local function evict(p, now, max_entries, maxlen)
  local n = 0
  local expired = redis.call('ZRANGEBYSCORE', p .. ':exp', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do n = n + remove(p, id, maxlen) end
  local excess = redis.call('ZCARD', p .. ':lru') - max_entries
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', p .. ':lru', excess)
    for i = 1, #oldest, 2 do n = n + remove(p, oldest[i], maxlen) end
  end
  return n
end
"""

# ARGV: prefix, id, ns, key, label, entry json, ttl ms (0: none), now ms, max entries,
#       log maxlen, has vector ("1" or "")
_ADD = (
    _REMOVE_FN
    + """
local p, id, ns, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, now, max_entries, maxlen = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local kkey = p .. ':k:' .. ns .. ':' .. key
local old = redis.call('GET', kkey)
if old and old ~= id then remove(p, old, maxlen) end
if ttl > 0 then
  redis.call('SET', p .. ':e:' .. id, ARGV[6], 'PX', ttl)
  redis.call('SET', kkey, id, 'PX', ttl)
  redis.call('ZADD', p .. ':exp', now + ttl, id)
else
  redis.call('SET', p .. ':e:' .. id, ARGV[6])
  redis.call('SET', kkey, id)
end
redis.call('ZADD', p .. ':lru', now, id)
redis.call('HSET', p .. ':meta', id, ns .. '\\t' .. key)
redis.call('HSETNX', p .. ':ns', ns, ARGV[5])
redis.call('SADD', p .. ':ids:' .. ns, id)
if ARGV[11] ~= '' then
  redis.call('XADD', p .. ':log:' .. ns, 'MAXLEN', '~', maxlen, '*', 'op', 'add', 'id', id)
end
return evict(p, now, max_entries, maxlen)
"""
)

# ARGV: prefix, now ms, max entries, log maxlen
_EVICT = _REMOVE_FN + "return evict(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])"

# ARGV: prefix, log maxlen, ids...
_REMOVE = (
    _REMOVE_FN
    + """
local n = 0
for i = 3, #ARGV do n = n + remove(ARGV[1], ARGV[i], ARGV[2]) end
return n
"""
)

# KEYS: exact key; ARGV: prefix
_FIND = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. ':e:' .. id)
"""

# KEYS: change stream, epoch key, exact key (optional); ARGV: prefix, last stream id seen, new epoch,
# entry ids to fetch on an exact miss... Returns {entry JSON or false, epoch, first stream id or "",
# {id, op, entry id, ...} after the cursor, {entry JSON or false, ...} of the ids}.
_CATCH_UP = """
local raw = false
if KEYS[3] then
  local id = redis.call('GET', KEYS[3])
  if id then raw = redis.call('GET', ARGV[1] .. ':e:' .. id) end
end
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local changes = {}
for _, item in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+')) do
  local op, entry = '', ''
  for i = 1, #item[2], 2 do
    if item[2][i] == 'op' then op = item[2][i + 1] elseif item[2][i] == 'id' then entry = item[2][i + 1] end
  end
  changes[#changes + 1] = item[1]
  changes[#changes + 1] = op
  changes[#changes + 1] = entry
end
local fetched = {}
if not raw and #ARGV > 3 then
  local keys = {}
  for i = 4, #ARGV do keys[#keys + 1] = ARGV[1] .. ':e:' .. ARGV[i] end
  fetched = redis.call('MGET', unpack(keys))
end
return {raw, epoch, first[1] and first[1][1] or '', changes, fetched}
"""

# KEYS: change stream, epoch key; ARGV: new epoch, log maxlen. Returns {epoch, last stream id}.
# An empty stream gets a `mark` change, so the cursor names a change that stays until trimmed.
_RELOAD_HEAD = """
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = last[1] and last[1][1]
if not last_id then
  last_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'op', 'mark')
end
return {redis.call('GET', KEYS[2]), last_id}
"""


class RedisStore:
    """Entries in Redis, shared by every process that uses the same URL and prefix.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        eviction: TTL and size bound (``max_entries`` counts the whole prefix).
        prefix: Key prefix; stores with different prefixes never meet.
        clock: Current Unix time (s).
        client: A ready client (tests); overrides ``url``.

    Raises:
        ValueError: The URL is not a Redis URL.
    """

    LOG_FACTOR = 2
    """Each namespace's change stream keeps about ``LOG_FACTOR * max_entries`` changes (ids only)."""

    def __init__(
        self,
        url: str,
        eviction: Eviction | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        client: redis.Redis | None = None,
    ) -> None:
        self.eviction = eviction or Eviction()
        self.prefix = prefix
        self._clock = clock
        self._redis = client or redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._add = self._redis.register_script(_ADD)
        self._evict = self._redis.register_script(_EVICT)
        self._remove = self._redis.register_script(_REMOVE)
        self._find = self._redis.register_script(_FIND)
        self._catch_up_script = self._redis.register_script(_CATCH_UP)
        self._reload_head = self._redis.register_script(_RELOAD_HEAD)
        self._maxlen = str(self.LOG_FACTOR * max(self.eviction.max_entries, 1))
        self._lookup_lock = threading.Lock()
        self._lookup_connection: Any = None
        self._lookup_pid = 0
        self._counter_lock = threading.Lock()
        self._counters: Any = None
        self._labelled: set[str] = set()
        self._unread = 0

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def find(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry with exact key ``key`` in ``namespace`` (one round trip)."""
        raw = self._run_lookup_script(self._find, [self._k("k", namespace, key)], [self.prefix])
        return self._decode(raw)

    def get(self, ids: Sequence[int]) -> dict[int, Entry]:
        """Return the live entries among ``ids`` (one ``MGET``)."""
        if not ids:
            return {}
        found = {}
        for raw in self._redis.mget([self._k("e", str(i)) for i in ids]):
            entry = self._decode(raw)
            if entry is not None:
                found[entry.id] = entry
        return found

    def add(self, new: NewEntry) -> Entry:
        """Store ``new`` atomically (replacing its key's entry), log it, and evict."""
        return self.add_many([new])[0]

    def add_many(self, news: Sequence[NewEntry]) -> list[Entry]:
        """Store several entries, one atomic script each, pipelined in one round trip."""
        if not news:
            return []
        now = self._clock()
        last = int(self._redis.incrby(self._k("seq"), len(news)))
        ttl_ms = 0 if self.eviction.ttl_s is None else max(1, int(self.eviction.ttl_s * 1000))
        pipe = self._redis.pipeline(transaction=False)
        entries = []
        for offset, new in enumerate(news):
            entry = Entry.of(new, id=last - len(news) + 1 + offset, created_at=now, ttl_s=self.eviction.ttl_s)
            entries.append(entry)
            self._add(
                args=[
                    self.prefix,
                    str(entry.id),
                    entry.namespace,
                    entry.key,
                    new.namespace.label,
                    entry.to_json(),
                    ttl_ms,
                    int(now * 1000),
                    self.eviction.max_entries,
                    self._maxlen,
                    "1" if entry.vector is not None else "",
                ],
                client=pipe,
            )
        pipe.execute()
        return entries

    def touch(self, ids: Sequence[int]) -> None:
        """Mark the entries as used now (only those still there)."""
        if ids:
            now = self._now_ms()
            self._redis.zadd(self._k("lru"), {str(i): now for i in ids}, xx=True)

    def find_and_sync(self, namespace: str, key: str, cursor: str | None) -> tuple[Entry | None, Sync | None]:
        """The exact read and the change-stream catch-up, in one round trip (one script)."""
        entry, sync, _ = self.find_sync_get(namespace, key, cursor, ())
        return entry, sync

    def find_sync_get(
        self, namespace: str, key: str, cursor: str | None, ids: Sequence[int]
    ) -> tuple[Entry | None, Sync | None, dict[int, Entry]]:
        """:meth:`find_and_sync` with the ``MGET`` of ``ids`` in the same script: one round trip.

        A first sync (``cursor`` is ``None``) reloads the namespace, but only on a miss.
        """
        if cursor is None:
            entry = self.find(namespace, key)
            if entry is not None:
                return entry, None, {}
            return None, self.sync(namespace, None), self.get(ids)
        raw, sync, fetched = self._catch_up(namespace, cursor, key, ids)
        entry = self._decode(raw)
        if entry is not None:
            return entry, sync, {}
        return None, sync, {e.id: e for e in map(self._decode, fetched) if e is not None}

    def sync(self, namespace: str, cursor: str | None) -> Sync:
        """Vector changes of ``namespace`` after ``cursor``, one round trip when in step.

        A cursor is ``{epoch}|{stream id}``: the keys' ``P:epoch`` and the last
        change read (a reload of a namespace without changes writes a ``mark``
        change to stand for it). When the epoch changed (the keys were
        flushed), or the stream's first change is newer than the cursor's (it
        was trimmed, and changes after it may be gone unread), the namespace is
        reloaded.
        """
        if cursor is None:
            return self._reload(namespace)
        return self._catch_up(namespace, cursor)[1]

    def _catch_up(
        self, namespace: str, cursor: str, key: str | None = None, ids: Sequence[int] = ()
    ) -> tuple[Any, Sync, list[Any]]:
        epoch, _, last_id = cursor.partition("|")
        keys = [self._k("log", namespace), self._k("epoch")]
        if key is not None:
            keys.append(self._k("k", namespace, key))
        raw, current, first, flat, fetched = self._run_lookup_script(
            self._catch_up_script, keys, [self.prefix, last_id, secrets.token_hex(16), *map(str, ids)]
        )
        if _text(current) != epoch:
            self._labelled.clear()  # the keys were flushed: labels go again with the next counts
            return raw, self._reload(namespace), fetched
        if not flat:  # in step: nothing follows the cursor, so nothing was trimmed past it either
            return raw, Sync(cursor=cursor), fetched
        if first and _stream_id(first) > _stream_id(last_id):  # the cursor's change was trimmed
            return raw, self._reload(namespace), fetched
        changes = [
            (_text(flat[i]), _text(flat[i + 1]), int(flat[i + 2] or 0)) for i in range(0, len(flat), 3)
        ]
        last = changes[-1][0] if changes else last_id
        return raw, self._changes(namespace, changes, f"{epoch}|{last}"), fetched

    def _run_lookup_script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run one of a lookup's scripts on the connection the store keeps for lookups.

        redis-py's command path around the round trip (taking a connection from the pool and
        giving it back, with a readiness check of the socket, locks, a retry wrapper and
        metrics) cost a tenth of a lookup at 100k entries on the 2-core benchmark machine
        (p50 0.308 -> 0.277 ms, interleaved runs). A lookup that finds the kept connection busy
        (another thread is looking up) or broken runs the script through the client instead,
        with the pool and its retries; the scripts only read (and set a missing epoch), so
        running one twice is safe.
        """
        if not self._lookup_lock.acquire(blocking=False):
            return script(keys=keys, args=args)
        try:
            if self._lookup_connection is None or self._lookup_pid != os.getpid():
                self._lookup_connection = self._redis.connection_pool.get_connection()
                self._lookup_pid = os.getpid()  # a forked child takes a connection of its own
            connection = self._lookup_connection
            try:
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                pass  # the server lost its scripts (a restart): the client loads it again below
            except (redis.ConnectionError, redis.TimeoutError):
                self._drop_lookup_connection()  # and the client tries again below
            except BaseException:
                self._drop_lookup_connection()  # a reply may be left unread: never reuse it
                raise
        finally:
            self._lookup_lock.release()
        return script(keys=keys, args=args)

    def _drop_lookup_connection(self) -> None:
        if self._lookup_connection is not None and self._lookup_pid == os.getpid():
            self._lookup_connection.disconnect()
            self._redis.connection_pool.release(self._lookup_connection)
        self._lookup_connection = None

    def _changes(self, namespace: str, changes: list[tuple[str, str, int]], cursor: str) -> Sync:
        sync = Sync(cursor=cursor)
        added = [entry_id for _, op, entry_id in changes if op == "add"]
        sync.removed.extend(entry_id for _, op, entry_id in changes if op == "del")
        if added:
            found = self.get(added)  # gone already: a later `del` follows, or it expired
            for entry_id in added:
                entry = found.get(entry_id)
                vector = entry.vector if entry is not None and entry.namespace == namespace else None
                if vector is not None:
                    sync.added.append((entry_id, vector))
        return sync

    def _reload(self, namespace: str) -> Sync:
        epoch, last = self._reload_head(
            keys=[self._k("log", namespace), self._k("epoch")], args=[secrets.token_hex(16), self._maxlen]
        )
        cursor = f"{_text(epoch)}|{_text(last)}"
        ids = sorted(int(i) for i in self._redis.smembers(self._k("ids", namespace)))
        added = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for raw in self._redis.mget([self._k("e", str(i)) for i in chunk]):
                entry = self._decode(raw)
                if entry is not None and entry.vector is not None and entry.namespace == namespace:
                    added.append((entry.id, entry.vector))
        return Sync(cursor=cursor, reset=True, added=added)

    def record(self, namespace: Namespace, counts: Counts, used: Sequence[int] = ()) -> None:
        """Add ``counts`` (``HINCRBY``) and mark ``used`` as just used (``ZADD XX``).

        The commands are written to a connection of their own without waiting
        for the replies, which are read (and checked) before the next write or
        on :meth:`close`: a lookup does not wait a round trip for its counters,
        and Redis has applied them by the time it reads anything sent later
        (in practice; strictly, only :meth:`close` waits for them).
        """
        commands: list[tuple[Any, ...]] = []
        if namespace.key not in self._labelled:  # once per namespace and process
            commands.append(("HSETNX", self._k("ns"), namespace.key, namespace.label))
        for name, value in counts.counters().items():
            if value:
                commands.append(("HINCRBY", self._k("counts", namespace.key), name, value))
        if used:
            now = self._now_ms()
            members = [part for i in used for part in (now, str(i))]
            commands.append(("ZADD", self._k("lru"), "XX", *members))
        if not commands:
            return
        with self._counter_lock:
            connection = self._counter_connection()
            try:
                self._drain(connection)
                # Packed by hiredis in one call each: redis-py's pack_commands cost 3% of a lookup.
                connection.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
                self._unread = len(commands)
                self._labelled.add(namespace.key)
            except redis.RedisError:
                self._drop_counter_connection()
                raise

    def _counter_connection(self) -> Any:
        if self._counters is None:
            self._counters = self._redis.connection_pool.get_connection()
        return self._counters

    def _drain(self, connection: Any) -> None:
        """Read the replies of the last counter write; a failed command is logged."""
        while self._unread:
            self._unread -= 1
            try:
                connection.read_response()
            except redis.ResponseError as exc:
                logger.warning("A cache counter update failed: %s", exc)

    def _drop_counter_connection(self) -> None:
        if self._counters is not None:
            self._counters.disconnect()
            self._redis.connection_pool.release(self._counters)
        self._counters, self._unread = None, 0

    def stats(self) -> list[NamespaceStats]:
        """Every namespace with entries or counters (expired entries are evicted first)."""
        self._evict(args=[self.prefix, self._now_ms(), self.eviction.max_entries, self._maxlen])
        labels = {_text(k): _text(v) for k, v in self._redis.hgetall(self._k("ns")).items()}
        keys = sorted(labels)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.scard(self._k("ids", key))
            pipe.hgetall(self._k("counts", key))
        replies = pipe.execute()
        result = []
        for index, key in enumerate(keys):
            size, raw_counts = replies[2 * index], replies[2 * index + 1]
            counts = Counts(**{_text(k): int(v) for k, v in raw_counts.items() if _text(k) in Counts.FIELDS})
            if size or any(counts.counters().values()):
                result.append(NamespaceStats(key=key, label=labels[key], entries=int(size), counts=counts))
        return result

    def clear(self, namespaces: Collection[str] | None = None, *, reset_stats: bool = False) -> int:
        """Remove the entries of ``namespaces`` (all when ``None``); other processes see ``del`` changes."""
        chosen = (
            list(namespaces)
            if namespaces is not None
            else [_text(k) for k in self._redis.hkeys(self._k("ns"))]
        )
        removed = 0
        for ns in chosen:
            ids = [_text(i) for i in self._redis.smembers(self._k("ids", ns))]
            for start in range(0, len(ids), 500):
                removed += int(self._remove(args=[self.prefix, self._maxlen, *ids[start : start + 500]]))
            if reset_stats:
                self._redis.delete(self._k("counts", ns))
        return removed

    def close(self) -> None:
        """Read the last counter replies, and close the connection pool."""
        with self._lookup_lock:
            self._drop_lookup_connection()
        with self._counter_lock:
            if self._counters is not None:
                try:
                    self._drain(self._counters)
                except redis.RedisError:
                    logger.warning("Could not confirm the last cache counter update", exc_info=True)
                self._drop_counter_connection()
        self._redis.close()

    def _decode(self, raw: Any) -> Entry | None:
        if not raw:
            return None
        try:
            entry = Entry.from_json(raw)
        except ValueError:
            logger.warning("Ignoring a cache entry that is not valid JSON under `%s`", self.prefix)
            return None
        return None if entry.expired(self._clock()) else entry


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: Any) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a pair that orders like the stream."""
    ms, _, seq = _text(value).partition("-")
    return int(ms or 0), int(seq or 0)


__all__ = ["DEFAULT_PREFIX", "RedisStore"]
