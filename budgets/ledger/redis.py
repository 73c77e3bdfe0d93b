"""The Redis ledger: shared by many processes and machines.

Every operation that reads and writes is one Lua script, so Redis runs it
atomically: a reservation's check against all its caps and its update of all
its scopes cannot interleave with another's. Records are JSON, never pickle.

Keys, under a prefix (default ``budgetgraph:ledger:``): ``scope:<scope>``
(hash: spent, reserved and granted tokens and micro-USD), ``reservations``
(hash id -> JSON) with ``reservation-expiry`` (sorted set), ``records`` (list
of JSON), ``usage:<node>|<tier>|<model>`` (the latest
:data:`~budgetgraph.budgets.ledger.base.HISTORY_KEPT` calls' tokens, newest
first), ``alerts`` (hash), ``journal:<thread>`` (hash: the rest of the call's
journal key -> JSON), ``attempts:<call>`` (hash: attempt key -> JSON) with
``attempt-calls`` (set of calls with open attempts) and ``unsettled`` (list of
JSON). Reclaiming expired reservations touches scope keys named inside the
script, which plain Redis allows (Redis Cluster does not).

A model call makes at most four round trips: one pipelined read of its
journal entry, open attempts and scope totals (:meth:`RedisLedger.open_call`),
the reservation script (which opens the attempt), the settlement script
(which closes it and notes the alerts crossed), and one pipelined write of
its journal entry and records (:meth:`RedisLedger.finish_call`).

Time is the Redis server's: the scripts read ``TIME``, so every client sees a
reservation expire, and a calendar window turn, at the same moment however its
own clock is set. A reservation on calendar window scopes
(``tenant:T:hour:YYYY-MM-DDTHH``, ``tenant:T:day:YYYY-MM-DD``,
``tenant:T:month:YYYY-MM``, as :class:`~budgetgraph.budgets.caps.Scopes`
names them from the client's clock) that are not the current ones by the
server's clock is answered with the current names, and made on those. So a
client whose clock is off can neither reclaim another's live reservation nor
take a window cap's spend into another hour, day or month.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from budgetgraph.budgets.ledger.base import (
    HISTORY_KEPT,
    RESERVATION_TTL_S,
    AlertCheck,
    Attempt,
    CallStart,
    Cap,
    Charge,
    Ledger,
    LedgerRecord,
    NotedAlert,
    Refusal,
    Reservation,
    ScopeTotals,
    in_usage_history,
)

logger = logging.getLogger(__name__)

JOURNAL_TTL_S = 30 * 24 * 3600
"""How long a completed call is kept for replay (s): 30 days."""

_RESERVE_ATTEMPTS = 3
"""Tries at a reservation whose calendar windows the server renames: the second
names them by the server's clock, a third covers a window turning in between."""

SKEW_WARNING_S = 2.0
"""A host clock this far (s) from the Redis server's is logged as a warning when
the server renames a window; nearer, the rename is a window turning mid-call."""

# Defines window(scope, t): the scope a calendar window scope names at Unix time t
# (s, UTC), named as budgetgraph.budgets.caps.Scopes names it; other scopes
# as given. civil(days) is H. Hinnant's civil_from_days
# (https://howardhinnant.github.io/date_algorithms.html), proleptic Gregorian.
_WINDOWS = """
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function window(scope, t)
  local secs = math.floor(t)
  local y, m, d = civil(math.floor(secs / 86400))
  local head = string.match(scope, '^(tenant:.+:hour:)%d%d%d%d%-%d%d%-%d%dT%d%d$')
  if head then
    return head .. string.format('%04d-%02d-%02dT%02d', y, m, d, math.floor(secs % 86400 / 3600))
  end
  head = string.match(scope, '^(tenant:.+:day:)%d%d%d%d%-%d%d%-%d%d$')
  if head then return head .. string.format('%04d-%02d-%02d', y, m, d) end
  head = string.match(scope, '^(tenant:.+:month:)%d%d%d%d%-%d%d$')
  if head then return head .. string.format('%04d-%02d', y, m) end
  return scope
end
"""

# KEYS[1] reservations hash, KEYS[2] expiry zset, KEYS[3] the call's attempts hash,
# KEYS[4] the set of calls with open attempts, KEYS[5..] scope hashes.
# ARGV: ttl (s), id, tokens, micro_usd, prefix, ncaps, then per cap: index into the
# scope keys (1-based), unit, cap; then the attempt's key ('' for none), its call
# key and its record (JSON). Answers {1}: reserved; {0, cap index, spent,
# reserved, granted, amount}: refused; {2, server time (s), scope...}: a calendar
# window scope is not the current one, here is every scope by the server's clock.
# Runs with _WINDOWS in front of it (see RedisLedger.__init__).
_RESERVE = """
local function reclaim(prefix, now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, rid in ipairs(expired) do
    local raw = redis.call('HGET', KEYS[1], rid)
    if raw then
      local r = cjson.decode(raw)
      for _, scope in ipairs(r.scopes) do
        redis.call('HINCRBY', prefix .. 'scope:' .. scope, 'r_tokens', 0 - r.tokens)
        redis.call('HINCRBY', prefix .. 'scope:' .. scope, 'r_micro_usd', 0 - r.micro_usd)
      end
      redis.call('HDEL', KEYS[1], rid)
    end
    redis.call('ZREM', KEYS[2], rid)
  end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl, prefix = tonumber(ARGV[1]), ARGV[5]
local tokens, micro = tonumber(ARGV[3]), tonumber(ARGV[4])
local scopes, renamed = {}, false
for k = 5, #KEYS do
  local scope = string.sub(KEYS[k], #prefix + 7)
  scopes[k - 4] = window(scope, now)
  if scopes[k - 4] ~= scope then renamed = true end
end
if renamed then return {2, clock[1], unpack(scopes)} end
reclaim(prefix, now)
local ncaps = tonumber(ARGV[6])
for i = 0, ncaps - 1 do
  local key = KEYS[4 + tonumber(ARGV[7 + 3 * i])]
  local unit = ARGV[8 + 3 * i]
  local cap = tonumber(ARGV[9 + 3 * i])
  local spent = tonumber(redis.call('HGET', key, unit) or '0')
  local reserved = tonumber(redis.call('HGET', key, 'r_' .. unit) or '0')
  local granted = tonumber(redis.call('HGET', key, 'g_' .. unit) or '0')
  local amount = tokens
  if unit == 'micro_usd' then amount = micro end
  if spent + reserved + amount > cap + granted then
    return {0, i, spent, reserved, granted, amount}
  end
end
for k = 5, #KEYS do
  redis.call('HINCRBY', KEYS[k], 'r_tokens', tokens)
  redis.call('HINCRBY', KEYS[k], 'r_micro_usd', micro)
end
local entry = {scopes = scopes, tokens = tokens, micro_usd = micro}
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
local at = 7 + 3 * ncaps
if ARGV[at] ~= '' then
  local reservation = {id = ARGV[2], scopes = scopes, tokens = tokens, micro_usd = micro}
  local attempt = '{"key": ' .. cjson.encode(ARGV[at]) .. ', "reservation": ' .. cjson.encode(reservation)
    .. ', "record": ' .. ARGV[at + 2] .. '}'
  redis.call('HSET', KEYS[3], ARGV[at], attempt)
  redis.call('SADD', KEYS[4], ARGV[at + 1])
end
return {1}
"""

# KEYS[1] reservations, KEYS[2] expiry, KEYS[3] records, KEYS[4] the call's attempts
# hash, KEYS[5] alerts hash, KEYS[6] the record's usage history list, KEYS[7..] scope
# hashes. ARGV: id, tokens, micro_usd, record JSON ('' for none), settle (1) or
# release (0), the attempt's key to close ('' for none), the time (ISO 8601) to note
# alerts at, the number of alert checks, the usage history entry ('' for none), the
# number of scope keys, the journal field ('' for none; its hash is the key after the
# scopes), the journal entry (JSON) and its TTL (s), then per check: index into the
# scope keys (1-based), unit, cap, the number of thresholds, the limit's name and
# the scope's, and per threshold: the threshold and its field in the alerts hash.
# The record's JSON ends with its `alerts` list; each
# alert noted is added to it as NotedAlert.reason words it. The journal entry is kept
# only when no alert is noted (the caller then keeps it with the alerts' decisions).
# Answers the alerts noted: {check index (0-based), threshold index (0-based),
# used share in millionths}... flattened.
_SETTLE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local r = cjson.decode(raw)
  for k = 7, 6 + tonumber(ARGV[10]) do
    redis.call('HINCRBY', KEYS[k], 'r_tokens', 0 - r.tokens)
    redis.call('HINCRBY', KEYS[k], 'r_micro_usd', 0 - r.micro_usd)
  end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[5] == '1' then
  for k = 7, 6 + tonumber(ARGV[10]) do
    redis.call('HINCRBY', KEYS[k], 'tokens', tonumber(ARGV[2]))
    redis.call('HINCRBY', KEYS[k], 'micro_usd', tonumber(ARGV[3]))
  end
  if ARGV[9] ~= '' then
    redis.call('LPUSH', KEYS[6], ARGV[9])
    redis.call('LTRIM', KEYS[6], 0, HISTORY_KEPT - 1)
  end
end
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[4], ARGV[6]) end
local noted, reasons, at = {}, {}, 14
for i = 0, tonumber(ARGV[8]) - 1 do
  local key, unit = KEYS[6 + tonumber(ARGV[at])], ARGV[at + 1]
  local cap, n = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local limit, scope = ARGV[at + 4], ARGV[at + 5]
  local room = cap + tonumber(redis.call('HGET', key, 'g_' .. unit) or '0')
  local used = 0
  if room > 0 then used = tonumber(redis.call('HGET', key, unit) or '0') / room end
  at = at + 6
  for j = 0, n - 1 do
    local threshold = tonumber(ARGV[at])
    local reached = room > 0 and used >= threshold
    if reached and redis.call('HSETNX', KEYS[5], ARGV[at + 1], ARGV[7]) == 1 then
      table.insert(noted, i)
      table.insert(noted, j)
      table.insert(noted, math.floor(used * 1000000))
      table.insert(reasons, cjson.encode(string.format('`%s` on %s reached %.0f%% (alert at %.0f%%)',
        limit, scope, used * 100, threshold * 100)))
    end
    at = at + 2
  end
end
if ARGV[5] == '1' and ARGV[4] ~= '' then
  local record = ARGV[4]
  if #reasons > 0 then
    local head = string.sub(record, 1, #record - 2)
    if string.sub(record, -3) == '[]}' then
      record = string.sub(record, 1, #record - 3) .. '[' .. table.concat(reasons, ', ') .. ']}'
    else
      record = head .. ', ' .. table.concat(reasons, ', ') .. ']}'
    end
  end
  redis.call('RPUSH', KEYS[3], record)
end
if ARGV[11] ~= '' and #noted == 0 then
  local journal = KEYS[7 + tonumber(ARGV[10])]
  redis.call('HSET', journal, ARGV[11], ARGV[12])
  redis.call('EXPIRE', journal, tonumber(ARGV[13]))
end
return noted
"""


class RedisLedger(Ledger):
    """A ledger in Redis.

    Args:
        client: A ``redis.Redis`` client (``decode_responses`` is not needed).
        prefix: Key prefix, so several ledgers can share one database.
        reservation_ttl_s: How long a reservation lives (s, by the Redis server's
            clock) before it is reclaimed; ``None``: :data:`RESERVATION_TTL_S`.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "budgetgraph:ledger:",
        reservation_ttl_s: float | None = None,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._reservation_ttl_s = reservation_ttl_s
        self._reserve = client.register_script(_WINDOWS + _RESERVE)
        self._settle = client.register_script(f"local HISTORY_KEPT = {HISTORY_KEPT}\n" + _SETTLE)
        self._journal_ttl_s = JOURNAL_TTL_S

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "budgetgraph:ledger:", reservation_ttl_s: float | None = None
    ) -> RedisLedger:
        """Connect to ``url`` (``redis://HOST:PORT/DB``); the options are the constructor's."""
        return cls(redis.Redis.from_url(url), prefix=prefix, reservation_ttl_s=reservation_ttl_s)

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _scope(self, scope: str) -> str:
        return self._key("scope:" + scope)

    def reserve(
        self,
        charge: Charge,
        scopes: Sequence[str],
        caps: Sequence[Cap],
        *,
        attempt: tuple[str, LedgerRecord] | None = None,
        ttl_s: float | None = None,
    ) -> Reservation | Refusal:
        """See :meth:`Ledger.reserve`.

        By the Redis server's clock, not this host's: expired reservations are
        reclaimed, this one expires after the reservation TTL, and a calendar
        window scope in ``scopes`` or the caps' scopes that is not the current
        one is replaced by the current one (a second round trip). The
        reservation's ``scopes`` are the names reserved on; a refusal's cap is
        the cap as given, its figures those of the scope checked.

        Raises:
            RuntimeError: The server renamed the windows on every attempt; not
                expected, since a window turns at most once in a few milliseconds.
        """
        current = {name: name for name in [*scopes, *(c.scope for c in caps)]}  # as given -> as reserved
        rid = uuid.uuid4().hex
        ttl = RESERVATION_TTL_S if self._reservation_ttl_s is None else self._reservation_ttl_s
        ttl = ttl if ttl_s is None else ttl_s
        call, record = attempt if attempt is not None else ("", None)
        key = f"{call}#{rid}" if attempt is not None else ""
        for _ in range(_RESERVE_ATTEMPTS):
            names = tuple(dict.fromkeys(current.values()))
            args: list[Any] = [ttl, rid, charge.tokens, charge.micro_usd, self._prefix, len(caps)]
            for cap in caps:
                args += [names.index(current[cap.scope]) + 1, cap.unit, cap.cap]
            args += [key, call, json.dumps(record) if record is not None else ""]
            keys = [
                self._key("reservations"),
                self._key("reservation-expiry"),
                self._attempts_key(call),
                self._key("attempt-calls"),
                *map(self._scope, names),
            ]
            answer = self._reserve(keys=keys, args=args)
            if int(answer[0]) == 2:  # a calendar window is another by the server's clock
                server = dict(zip(names, map(_text, answer[2:]), strict=True))
                _log_renamed(server, server_time=int(answer[1]))
                current = {given: server[name] for given, name in current.items()}
                continue
            if int(answer[0]) == 1:
                return Reservation(id=rid, scopes=names, charge=charge, attempt=key or None)
            index, spent, reserved, granted, amount = (int(x) for x in answer[1:])
            return Refusal(caps[index], spent, reserved, granted, amount)
        raise RuntimeError(
            f"Redis renamed the calendar windows of {list(current)} on each of {_RESERVE_ATTEMPTS} attempts"
        )

    def settle(
        self,
        reservation: Reservation,
        actual: Charge,
        record: LedgerRecord | None,
        *,
        alerts: Sequence[AlertCheck] = (),
        journal: tuple[str, dict[str, Any]] | None = None,
    ) -> list[NotedAlert]:
        """See :meth:`Ledger.settle`: one script.

        It also closes the attempt, notes the alerts and keeps the journal entry.

        An alert's cap on a calendar window that the server renamed when
        reserving is checked on the window reserved on.
        """
        return self._finish(
            reservation.id,
            reservation.scopes,
            actual,
            record,
            settle=True,
            attempt=reservation.attempt,
            alerts=alerts,
            journal=journal,
        )

    def release(self, reservation: Reservation) -> None:
        """See :meth:`Ledger.release`."""
        self._finish(reservation.id, reservation.scopes, Charge(), None, settle=False)

    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """See :meth:`Ledger.record`; ``scopes`` are kept as named, a past window's included."""
        self._finish("", tuple(dict.fromkeys(scopes)), actual, record, settle=True)

    def _finish(
        self,
        rid: str,
        scopes: Sequence[str],
        actual: Charge,
        record: LedgerRecord | None,
        *,
        settle: bool,
        attempt: str | None = None,
        alerts: Sequence[AlertCheck] = (),
        journal: tuple[str, dict[str, Any]] | None = None,
    ) -> list[NotedAlert]:
        names = list(dict.fromkeys(scopes))
        checks: list[tuple[AlertCheck, str]] = []
        for check in alerts:
            scope = _reserved_as(check.cap.scope, names)
            if scope in names:  # a cap is on a scope its reservation holds (limits reserves on every one)
                checks.append((check, scope))
        usage_key, usage = self._usage(record) if record is not None else (self._key("usage:"), "")
        keys = [
            self._key("reservations"),
            self._key("reservation-expiry"),
            self._key("records"),
            self._attempts_key(attempt.rsplit("#", 1)[0] if attempt else ""),
            self._key("alerts"),
            usage_key,
            *map(self._scope, names),
        ]
        payload = _alerts_last(record) if record is not None else ""
        args: list[Any] = [
            rid,
            actual.tokens,
            actual.micro_usd,
            payload,
            "1" if settle else "0",
            attempt or "",
            datetime.now(UTC).isoformat(),
            len(checks),
            usage,
            len(names),
        ]
        if journal is not None:
            hash_name, field = self._journal_field(journal[0])
            keys.append(hash_name)
            args += [field, json.dumps(journal[1]), self._journal_ttl_s]
        else:
            args += ["", "", 0]
        for check, scope in checks:
            args += [names.index(scope) + 1, check.cap.unit, check.cap.cap, len(check.thresholds)]
            args += [check.cap.limit, scope]
            for threshold in check.thresholds:
                args += [threshold, json.dumps([scope, check.cap.limit, threshold])]
        answer = self._settle(keys=keys, args=args)
        return _noted(answer, checks)

    def totals(self, scope: str) -> ScopeTotals:
        """See :meth:`Ledger.totals`."""
        return self.totals_of([scope])[scope]

    def totals_of(self, scopes: Sequence[str]) -> dict[str, ScopeTotals]:
        """See :meth:`Ledger.totals_of`: one pipelined round trip."""
        unique = list(dict.fromkeys(scopes))
        pipe = self._redis.pipeline(transaction=False)
        for scope in unique:
            pipe.hgetall(self._scope(scope))
        return dict(zip(unique, map(_scope_totals, pipe.execute()), strict=True))

    def open_call(self, journal_key: str | None, scopes: Sequence[str]) -> CallStart:
        """See :meth:`Ledger.open_call`: one pipelined round trip."""
        unique = list(dict.fromkeys(scopes))
        pipe = self._redis.pipeline(transaction=False)
        if journal_key is not None:
            pipe.hget(*self._journal_field(journal_key))
            pipe.hgetall(self._attempts_key(journal_key))
        for scope in unique:
            pipe.hgetall(self._scope(scope))
        answers = pipe.execute()
        journal, attempts = None, []
        if journal_key is not None:
            raw, found = answers[0], answers[1]
            answers = answers[2:]
            journal = json.loads(raw) if raw else None
            attempts = _attempts(found.values())
        return CallStart(journal, attempts, dict(zip(unique, map(_scope_totals, answers), strict=True)))

    def finish_call(
        self, journal_key: str | None, entry: dict[str, Any] | None, records: Sequence[LedgerRecord]
    ) -> None:
        """See :meth:`Ledger.finish_call`: one pipelined round trip."""
        if (journal_key is None or entry is None) and not records:
            return
        pipe = self._redis.pipeline(transaction=True)
        if journal_key is not None and entry is not None:
            name, field = self._journal_field(journal_key)
            pipe.hset(name, field, json.dumps(entry))
            pipe.expire(name, self._journal_ttl_s)
        for record in records:
            pipe.rpush(self._key("records"), json.dumps(record))
            usage_key, usage = self._usage(record)
            if usage:
                pipe.lpush(usage_key, usage)
                pipe.ltrim(usage_key, 0, HISTORY_KEPT - 1)
        pipe.execute()

    def _usage(self, record: LedgerRecord) -> tuple[str, str]:
        """The usage history list of ``record``'s node, tier and model, and its entry ('' for none)."""
        key = self._key(f"usage:{record['node']}|{record['tier']}|{record['model']}")
        if not in_usage_history(record):
            return key, ""
        return key, json.dumps([record["ts"], record["input_tokens"], record["output_tokens"]])

    def recent_usage(
        self, node: str, tier: str, model: str, *, limit: int, since: datetime | None = None
    ) -> list[tuple[int, int]]:
        """See :meth:`Ledger.recent_usage`: one read of a list capped at :data:`HISTORY_KEPT`."""
        if limit <= 0:
            return []
        raw = self._redis.lrange(self._key(f"usage:{node}|{tier}|{model}"), 0, min(limit, HISTORY_KEPT) - 1)
        cutoff = since.astimezone(UTC).isoformat() if since is not None else None
        out: list[tuple[int, int]] = []
        for item in raw:
            ts, tokens_in, tokens_out = json.loads(item)
            if cutoff is None or ts >= cutoff:
                out.append((int(tokens_in), int(tokens_out)))
        return out

    def recent_usage_of(
        self, keys: Sequence[tuple[str, str, str]], *, limit: int, since: datetime | None = None
    ) -> dict[tuple[str, str, str], list[tuple[int, int]]]:
        """See :meth:`Ledger.recent_usage_of`: one pipelined round trip."""
        unique = list(dict.fromkeys(keys))
        if limit <= 0 or not unique:
            return {key: [] for key in unique}
        pipe = self._redis.pipeline(transaction=False)
        for node, tier, model in unique:
            pipe.lrange(self._key(f"usage:{node}|{tier}|{model}"), 0, min(limit, HISTORY_KEPT) - 1)
        cutoff = since.astimezone(UTC).isoformat() if since is not None else None
        out: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        for key, raw in zip(unique, pipe.execute(), strict=True):
            rows = [json.loads(item) for item in raw]
            out[key] = [(int(i), int(o)) for ts, i, o in rows if cutoff is None or ts >= cutoff]
        return out

    def prune_journal(self, thread_prefix: str) -> int:
        """See :meth:`Ledger.prune_journal`: drops the thread's journal hash."""
        thread = thread_prefix.removesuffix(":")
        if not thread or ":" in thread:
            return 0
        return int(self._redis.delete(self._key("journal:" + thread)))

    def grant(self, scope: str, extra: Charge) -> None:
        """See :meth:`Ledger.grant`."""
        pipe = self._redis.pipeline()
        pipe.hincrby(self._scope(scope), "g_tokens", extra.tokens)
        pipe.hincrby(self._scope(scope), "g_micro_usd", extra.micro_usd)
        pipe.execute()

    def note_alert(self, scope: str, limit: str, threshold: float) -> bool:
        """See :meth:`Ledger.note_alert`."""
        field = json.dumps([scope, limit, threshold])
        return bool(self._redis.hsetnx(self._key("alerts"), field, datetime.now(UTC).isoformat()))

    def records(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """See :meth:`Ledger.records`."""
        cutoff = since.astimezone(UTC).isoformat() if since is not None else None
        out: list[LedgerRecord] = []
        for raw in self._redis.lrange(self._key("records"), 0, -1):
            record: LedgerRecord = json.loads(raw)
            if cutoff is not None and record["ts"] < cutoff:
                continue
            if tenant is not None and record["tenant"] != tenant:
                continue
            out.append(record)
        return out

    def alerts(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """See :meth:`Ledger.alerts`."""
        cutoff = since.astimezone(UTC).isoformat() if since is not None else None
        out = []
        for field, ts in self._redis.hgetall(self._key("alerts")).items():
            scope, limit, threshold = json.loads(field)
            if cutoff is None or _text(ts) >= cutoff:
                out.append({"scope": scope, "limit": limit, "threshold": threshold, "ts": _text(ts)})
        return sorted(out, key=lambda a: a["ts"])

    def journal_get(self, key: str) -> dict[str, Any] | None:
        """See :meth:`Ledger.journal_get`."""
        raw = self._redis.hget(*self._journal_field(key))
        return json.loads(raw) if raw else None

    def journal_put(self, key: str, entry: dict[str, Any]) -> None:
        """See :meth:`Ledger.journal_put`; a thread's entries expire :data:`JOURNAL_TTL_S` after its last."""
        self.finish_call(key, entry, ())

    def _journal_field(self, key: str) -> tuple[str, str]:
        """The hash (one per thread: the key's first part) and field of journal key ``key``."""
        thread, _, rest = key.partition(":")
        return self._key("journal:" + thread), rest

    def _attempts_key(self, call: str) -> str:
        return self._key("attempts:" + call)

    # -- attempts --------------------------------------------------------------------

    def begin_attempt(self, attempt: Attempt) -> None:
        """See :meth:`Ledger.begin_attempt`."""
        call = attempt.key.rsplit("#", 1)[0]
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._attempts_key(call), attempt.key, json.dumps(attempt.to_json()))
        pipe.sadd(self._key("attempt-calls"), call)
        pipe.execute()

    def end_attempt(self, key: str) -> bool:
        """See :meth:`Ledger.end_attempt`."""
        return bool(self._redis.hdel(self._attempts_key(key.rsplit("#", 1)[0]), key))

    def open_attempts(self, prefix: str = "") -> list[Attempt]:
        """See :meth:`Ledger.open_attempts` (ordered by the reservation's record time).

        A prefix ending in ``#`` (one call's attempts) reads that call's hash;
        any other reads every call with open attempts, dropping the finished.
        """
        if prefix.endswith("#"):
            return _attempts(self._redis.hgetall(self._attempts_key(prefix[:-1])).values(), prefix)
        calls = sorted(_text(c) for c in self._redis.smembers(self._key("attempt-calls")))
        calls = [c for c in calls if (c + "#").startswith(prefix) or prefix.startswith(c + "#")]
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            pipe.hgetall(self._attempts_key(call))
        found: list[Attempt] = []
        finished: list[str] = []
        for call, held in zip(calls, pipe.execute(), strict=True):
            if not held:
                finished.append(call)
            found += _attempts(held.values(), prefix)
        if finished:
            self._redis.srem(self._key("attempt-calls"), *finished)
        return sorted(found, key=lambda a: (a.record["ts"], a.key))

    def keep_unsettled(self, record: LedgerRecord, charge: Charge, scopes: Sequence[str]) -> None:
        """See :meth:`Ledger.keep_unsettled`; one MULTI transaction."""
        pipe = self._redis.pipeline(transaction=True)
        for scope in dict.fromkeys(scopes):
            pipe.hincrby(self._scope(scope), "tokens", charge.tokens)
            pipe.hincrby(self._scope(scope), "micro_usd", charge.micro_usd)
        pipe.rpush(self._key("unsettled"), json.dumps(record))
        pipe.execute()

    def unsettled(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """See :meth:`Ledger.unsettled`."""
        cutoff = since.astimezone(UTC).isoformat() if since is not None else None
        out: list[LedgerRecord] = []
        for raw in self._redis.lrange(self._key("unsettled"), 0, -1):
            record: LedgerRecord = json.loads(raw)
            if (cutoff is None or record["ts"] >= cutoff) and (tenant is None or record["tenant"] == tenant):
                out.append(record)
        return out

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _scope_totals(raw: dict[bytes, bytes]) -> ScopeTotals:
    held = {_text(k): int(v) for k, v in raw.items()}

    def charge(prefix: str) -> Charge:
        return Charge(held.get(prefix + "tokens", 0), held.get(prefix + "micro_usd", 0))

    return ScopeTotals(charge(""), charge("r_"), charge("g_"))


def _attempts(raw: Any, prefix: str = "") -> list[Attempt]:
    found = [Attempt.from_json(json.loads(item)) for item in raw]
    return sorted((a for a in found if a.key.startswith(prefix)), key=lambda a: (a.record["ts"], a.key))


def _reserved_as(scope: str, reserved: Sequence[str]) -> str:
    """``scope`` as reserved on: the window of the same tenant and kind the server named, else as is."""
    if scope in reserved:
        return scope
    head, kind, _ = scope.rpartition(":")[0].rpartition(":")
    if kind in ("hour", "day", "month"):
        for name in reserved:
            if name.startswith(f"{head}:{kind}:") and name.count(":") == scope.count(":"):
                return name
    return scope


def _alerts_last(record: LedgerRecord) -> str:
    """``record`` as JSON ending with its ``alerts`` list, which the settlement script extends."""
    rest = {key: value for key, value in record.items() if key != "alerts"}
    return json.dumps({**rest, "alerts": list(record.get("alerts", []))})


def _noted(answer: Sequence[Any], checks: Sequence[tuple[AlertCheck, str]]) -> list[NotedAlert]:
    values = [int(x) for x in answer]
    out: list[NotedAlert] = []
    for i in range(0, len(values), 3):
        check, scope = checks[values[i]]
        threshold = check.thresholds[values[i + 1]]
        out.append(NotedAlert(scope, check.cap.limit, threshold, values[i + 2] / 1_000_000))
    return out


def _log_renamed(server: dict[str, str], *, server_time: int) -> None:
    """Log the windows the server renamed: a warning when this host's clock is off."""
    moved = {given: named for given, named in server.items() if given != named}
    skew = time.time() - server_time
    level = logging.WARNING if abs(skew) > SKEW_WARNING_S else logging.DEBUG
    logger.log(
        level,
        "Calendar windows named by the Redis server's clock, not this host's (%+.0f s off): %s",
        skew,
        ", ".join(f"`{given}` -> `{named}`" for given, named in moved.items()),
    )
