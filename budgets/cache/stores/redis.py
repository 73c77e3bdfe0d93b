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
    P:log:{ns}          stream of changes: op (add | del), id
    P:ns                hash: namespace key -> label
    P:counts:{ns}       hash of counters (exact_hits, semantic_hits, ...)

Adding, removing and evicting run as Lua scripts, so each is atomic and a
size bound holds however many processes write. A lookup costs one round trip
(the exact read pipelined with the change-stream catch-up), plus an ``MGET``
when a candidate clears the threshold; its counters are written without
waiting for the reply. Each process keeps a FAISS
index per namespace and follows ``P:log:{ns}`` from its cursor: one
pipelined ``XRANGE`` per lookup, and an ``MGET`` of the new entries' vectors
when there are any. A process that starts, or whose cursor fell behind the
trimmed stream (``LOG_FACTOR * max_entries`` changes per namespace), reloads
the namespace from ``P:ids:{ns}``; so does one whose cursor names another
``P:epoch``: the keys were flushed (or Redis restarted without persistence)
and entry ids start again at 1, so the old index ids would name other
entries. The scripts compute key names, so this is for
a standalone Redis 7 or later (``XINFO STREAM``'s ``entries-added``), not
Redis Cluster.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis

from budgets.cache.base import (
    Counts,
    Entry,
    Eviction,
    Namespace,
    NamespaceStats,
    NewEntry,
    Sync,
)

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "budgetgraph:cache"
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
        self._maxlen = str(self.LOG_FACTOR * max(self.eviction.max_entries, 1))
        self._counter_lock = threading.Lock()
        self._counters: Any = None
        self._unread = 0

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def find(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry with exact key ``key`` in ``namespace`` (one round trip)."""
        raw = self._find(keys=[self._k("k", namespace, key)], args=[self.prefix])
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
        """The exact read and the change-stream catch-up, in one round trip (``MULTI``).

        A first sync (``cursor`` is ``None``) reloads the namespace, but only on a miss.
        """
        if cursor is None:
            entry = self.find(namespace, key)
            return (entry, None) if entry is not None else (None, self.sync(namespace, None))
        raw, sync = self._catch_up(namespace, cursor, key)
        return self._decode(raw), sync

    def sync(self, namespace: str, cursor: str | None) -> Sync:
        """Vector changes of ``namespace`` after ``cursor``, one round trip when in step.

        A cursor is ``{epoch}|{stream id}|{entries added}``: the keys'
        ``P:epoch``, the stream's last id seen and how many entries the stream
        had ever been given then. When the epoch changed (the keys were
        flushed), or more entries were added since than the stream still holds
        after the cursor (some were trimmed before this process read them),
        the namespace is reloaded.
        """
        if cursor is None:
            return self._reload(namespace)
        return self._catch_up(namespace, cursor)[1]

    def _catch_up(self, namespace: str, cursor: str, key: str | None = None) -> tuple[Any, Sync]:
        log = self._k("log", namespace)
        epoch, last_id, seen = (cursor.split("|") + ["", "", ""])[:3]
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=True)  # XRANGE and XINFO see the same stream
            if key is not None:
                # EVALSHA directly: a Script object in a pipeline first asks SCRIPT EXISTS (a round trip).
                pipe.evalsha(self._find.sha, 1, self._k("k", namespace, key), self.prefix)
            self._epoch(pipe)
            pipe.xrange(log, min=f"({last_id or '0-0'}", max="+")
            pipe.xinfo_stream(log)
            replies = pipe.execute(raise_on_error=False)
            if key is not None and isinstance(replies[0], redis.exceptions.NoScriptError) and attempt == 1:
                self._find.sha = self._redis.script_load(_FIND)  # the server restarted or flushed its scripts
                continue
            break
        raw = replies[0] if key is not None else None
        changes, info = replies[-2], replies[-1]
        for reply in (raw, changes):
            if isinstance(reply, Exception):
                raise reply
        added_total = _entries_added(info)
        if _text(replies[-3]) != epoch or added_total - int(seen or 0) > len(changes):
            return raw, self._reload(namespace)
        last = _text(changes[-1][0]) if changes else last_id
        return raw, self._changes(namespace, changes, f"{epoch}|{last}|{added_total}")

    def _epoch(self, pipe: Any) -> None:
        """Queue ``SET P:epoch NX`` and ``GET P:epoch`` (the reply to read is the last one)."""
        pipe.set(self._k("epoch"), uuid.uuid4().hex, nx=True)
        pipe.get(self._k("epoch"))

    def _changes(self, namespace: str, changes: list[Any], cursor: str) -> Sync:
        sync = Sync(cursor=cursor)
        added: list[int] = []
        for _, fields in changes:
            values = {_text(k): _text(v) for k, v in fields.items()}
            entry_id = int(values.get("id", "0"))
            if values.get("op") == "add":
                added.append(entry_id)
            elif values.get("op") == "del":
                sync.removed.append(entry_id)
        if added:
            found = self.get(added)  # gone already: a later `del` follows, or it expired
            for entry_id in added:
                entry = found.get(entry_id)
                vector = entry.vector if entry is not None and entry.namespace == namespace else None
                if vector is not None:
                    sync.added.append((entry_id, vector))
        return sync

    def _reload(self, namespace: str) -> Sync:
        log = self._k("log", namespace)
        pipe = self._redis.pipeline(transaction=True)
        self._epoch(pipe)
        pipe.xrevrange(log, max="+", min="-", count=1)
        pipe.xinfo_stream(log)
        _, epoch, last, info = pipe.execute(raise_on_error=False)
        if isinstance(last, Exception):
            raise last
        cursor = f"{_text(epoch)}|{_text(last[0][0]) if last else '0-0'}|{_entries_added(info)}"
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
        commands: list[tuple[Any, ...]] = [("HSETNX", self._k("ns"), namespace.key, namespace.label)]
        for name, value in counts.as_dict().items():
            if value:
                commands.append(("HINCRBY", self._k("counts", namespace.key), name, value))
        if used:
            now = self._now_ms()
            members = [part for i in used for part in (now, str(i))]
            commands.append(("ZADD", self._k("lru"), "XX", *members))
        with self._counter_lock:
            connection = self._counter_connection()
            try:
                self._drain(connection)
                connection.send_packed_command(connection.pack_commands(commands))
                self._unread = len(commands)
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
            if size or any(counts.as_dict().values()):
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


def _entries_added(info: Any) -> int:
    """How many entries a stream was ever given, from ``XINFO STREAM`` (0 when there is no stream)."""
    return int(info.get("entries-added", 0)) if isinstance(info, dict) else 0


__all__ = ["DEFAULT_PREFIX", "RedisStore"]
