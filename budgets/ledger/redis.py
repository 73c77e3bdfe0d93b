"""The Redis ledger: shared by many processes and machines.

Every operation that reads and writes is one Lua script, so Redis runs it
atomically: a reservation's check against all its caps and its update of all
its scopes cannot interleave with another's. Records are JSON, never pickle.

Keys, under a prefix (default ``budgetgraph:ledger:``): ``scope:<scope>``
(hash: spent, reserved and granted tokens and micro-USD), ``reservations``
(hash id -> JSON) with ``reservation-expiry`` (sorted set), ``records`` (list
of JSON) and ``alerts`` (hash). Reclaiming expired reservations touches scope
keys named inside the script, which plain Redis allows (Redis Cluster does not).

Time is the Redis server's: the scripts read ``TIME``, so every client sees a
reservation expire, and a calendar window turn, at the same moment however its
own clock is set. A reservation on calendar window scopes
(``tenant:T:hour:YYYY-MM-DDTHH``, ``tenant:T:day:YYYY-MM-DD``,
``tenant:T:month:YYYY-MM``, as :class:`~budgetgraph.budgets.plugins.limits.Scopes`
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
    RESERVATION_TTL_S,
    Attempt,
    Cap,
    Charge,
    Ledger,
    LedgerRecord,
    Refusal,
    Reservation,
    ScopeTotals,
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
# (s, UTC), named as budgetgraph.budgets.plugins.limits.Scopes names it; other scopes
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

# KEYS[1] reservations hash, KEYS[2] expiry zset, KEYS[3..] scope hashes.
# ARGV: ttl (s), id, tokens, micro_usd, prefix, ncaps, then per cap: index into the
# scope keys (1-based), unit, cap. Answers {1}: reserved; {0, cap index, spent,
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
for k = 3, #KEYS do
  local scope = string.sub(KEYS[k], #prefix + 7)
  scopes[k - 2] = window(scope, now)
  if scopes[k - 2] ~= scope then renamed = true end
end
if renamed then return {2, clock[1], unpack(scopes)} end
reclaim(prefix, now)
local ncaps = tonumber(ARGV[6])
for i = 0, ncaps - 1 do
  local key = KEYS[2 + tonumber(ARGV[7 + 3 * i])]
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
for k = 3, #KEYS do
  redis.call('HINCRBY', KEYS[k], 'r_tokens', tokens)
  redis.call('HINCRBY', KEYS[k], 'r_micro_usd', micro)
end
local entry = {scopes = scopes, tokens = tokens, micro_usd = micro}
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
return {1}
"""

# KEYS[1] reservations, KEYS[2] expiry, KEYS[3] records, KEYS[4..] scope hashes.
# ARGV: id, tokens, micro_usd, record JSON ('' for none), settle (1) or release (0).
_SETTLE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local r = cjson.decode(raw)
  for k = 4, #KEYS do
    redis.call('HINCRBY', KEYS[k], 'r_tokens', 0 - r.tokens)
    redis.call('HINCRBY', KEYS[k], 'r_micro_usd', 0 - r.micro_usd)
  end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[5] == '1' then
  for k = 4, #KEYS do
    redis.call('HINCRBY', KEYS[k], 'tokens', tonumber(ARGV[2]))
    redis.call('HINCRBY', KEYS[k], 'micro_usd', tonumber(ARGV[3]))
  end
  if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[4]) end
end
return 1
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
        self._settle = client.register_script(_SETTLE)

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

    def reserve(self, charge: Charge, scopes: Sequence[str], caps: Sequence[Cap]) -> Reservation | Refusal:
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
        for _ in range(_RESERVE_ATTEMPTS):
            names = tuple(dict.fromkeys(current.values()))
            args: list[Any] = [ttl, rid, charge.tokens, charge.micro_usd, self._prefix, len(caps)]
            for cap in caps:
                args += [names.index(current[cap.scope]) + 1, cap.unit, cap.cap]
            keys = [self._key("reservations"), self._key("reservation-expiry"), *map(self._scope, names)]
            answer = self._reserve(keys=keys, args=args)
            if int(answer[0]) == 2:  # a calendar window is another by the server's clock
                server = dict(zip(names, map(_text, answer[2:]), strict=True))
                _log_renamed(server, server_time=int(answer[1]))
                current = {given: server[name] for given, name in current.items()}
                continue
            if int(answer[0]) == 1:
                return Reservation(id=rid, scopes=names, charge=charge)
            index, spent, reserved, granted, amount = (int(x) for x in answer[1:])
            return Refusal(caps[index], spent, reserved, granted, amount)
        raise RuntimeError(
            f"Redis renamed the calendar windows of {list(current)} on each of {_RESERVE_ATTEMPTS} attempts"
        )

    def settle(self, reservation: Reservation, actual: Charge, record: LedgerRecord | None) -> None:
        """See :meth:`Ledger.settle`."""
        self._finish(reservation.id, reservation.scopes, actual, record, settle=True)

    def release(self, reservation: Reservation) -> None:
        """See :meth:`Ledger.release`."""
        self._finish(reservation.id, reservation.scopes, Charge(), None, settle=False)

    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """See :meth:`Ledger.record`; ``scopes`` are kept as named, a past window's included."""
        self._finish("", tuple(dict.fromkeys(scopes)), actual, record, settle=True)

    def _finish(
        self, rid: str, scopes: Sequence[str], actual: Charge, record: LedgerRecord | None, *, settle: bool
    ) -> None:
        keys = [
            self._key("reservations"),
            self._key("reservation-expiry"),
            self._key("records"),
            *map(self._scope, scopes),
        ]
        payload = json.dumps(record) if record is not None else ""
        self._settle(keys=keys, args=[rid, actual.tokens, actual.micro_usd, payload, "1" if settle else "0"])

    def totals(self, scope: str) -> ScopeTotals:
        """See :meth:`Ledger.totals`."""
        raw = {_text(k): int(v) for k, v in self._redis.hgetall(self._scope(scope)).items()}

        def charge(prefix: str) -> Charge:
            return Charge(raw.get(prefix + "tokens", 0), raw.get(prefix + "micro_usd", 0))

        return ScopeTotals(charge(""), charge("r_"), charge("g_"))

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
        raw = self._redis.get(self._key("journal:" + key))
        return json.loads(raw) if raw else None

    def journal_put(self, key: str, entry: dict[str, Any]) -> None:
        """See :meth:`Ledger.journal_put`; entries expire after :data:`JOURNAL_TTL_S`."""
        self._redis.set(self._key("journal:" + key), json.dumps(entry), ex=JOURNAL_TTL_S)

    # -- attempts (``attempts``: hash key -> JSON; ``unsettled``: list of JSON) ----------

    def begin_attempt(self, attempt: Attempt) -> None:
        """See :meth:`Ledger.begin_attempt`."""
        self._redis.hset(self._key("attempts"), attempt.key, json.dumps(attempt.to_json()))

    def end_attempt(self, key: str) -> bool:
        """See :meth:`Ledger.end_attempt`."""
        return bool(self._redis.hdel(self._key("attempts"), key))

    def open_attempts(self, prefix: str = "") -> list[Attempt]:
        """See :meth:`Ledger.open_attempts` (ordered by the reservation's record time)."""
        found = [
            Attempt.from_json(json.loads(raw))
            for field, raw in self._redis.hgetall(self._key("attempts")).items()
            if _text(field).startswith(prefix)
        ]
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
