"""The Redis ledger: shared by many processes and machines.

Every operation that reads and writes is one Lua script, so Redis runs it
atomically: a reservation's check against all its caps and its update of all
its scopes cannot interleave with another's. Records are JSON, never pickle.

Keys, under a prefix (default ``budgetgraph:ledger:``): ``scope:<scope>``
(hash: spent, reserved and granted tokens and micro-USD), ``reservations``
(hash id -> JSON) with ``reservation-expiry`` (sorted set), ``records`` (list
of JSON) and ``alerts`` (hash). Reclaiming expired reservations touches scope
keys named inside the script, which plain Redis allows (Redis Cluster does not).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from budgetgraph.budgets.ledger.base import (
    RESERVATION_TTL_S,
    Cap,
    Charge,
    Ledger,
    LedgerRecord,
    Refusal,
    Reservation,
    ScopeTotals,
)

JOURNAL_TTL_S = 30 * 24 * 3600
"""How long a completed call is kept for replay (s): 30 days."""

# KEYS[1] reservations hash, KEYS[2] expiry zset, KEYS[3..] scope hashes.
# ARGV: now, ttl, id, tokens, micro_usd, scopes JSON, prefix, ncaps, then per cap:
# index into the scope keys (1-based), unit, cap.
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
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, micro = tonumber(ARGV[4]), tonumber(ARGV[5])
reclaim(ARGV[7], now)
local ncaps = tonumber(ARGV[8])
for i = 0, ncaps - 1 do
  local key = KEYS[2 + tonumber(ARGV[9 + 3 * i])]
  local unit = ARGV[10 + 3 * i]
  local cap = tonumber(ARGV[11 + 3 * i])
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
local entry = {scopes = cjson.decode(ARGV[6]), tokens = tokens, micro_usd = micro}
redis.call('HSET', KEYS[1], ARGV[3], cjson.encode(entry))
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
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
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "budgetgraph:ledger:") -> None:
        self._redis = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "budgetgraph:ledger:") -> RedisLedger:
        """Connect to ``url`` (``redis://HOST:PORT/DB``)."""
        return cls(redis.Redis.from_url(url), prefix=prefix)

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _scope(self, scope: str) -> str:
        return self._key("scope:" + scope)

    def reserve(self, charge: Charge, scopes: Sequence[str], caps: Sequence[Cap]) -> Reservation | Refusal:
        """See :meth:`Ledger.reserve`."""
        names = tuple(dict.fromkeys([*scopes, *(c.scope for c in caps)]))
        rid = uuid.uuid4().hex
        args: list[Any] = [
            time.time(),
            RESERVATION_TTL_S,
            rid,
            charge.tokens,
            charge.micro_usd,
            json.dumps(list(names)),
            self._prefix,
            len(caps),
        ]
        for cap in caps:
            args += [names.index(cap.scope) + 1, cap.unit, cap.cap]
        keys = [self._key("reservations"), self._key("reservation-expiry"), *map(self._scope, names)]
        answer = self._reserve(keys=keys, args=args)
        if int(answer[0]) == 1:
            return Reservation(id=rid, scopes=names, charge=charge)
        index, spent, reserved, granted, amount = (int(x) for x in answer[1:])
        return Refusal(caps[index], spent, reserved, granted, amount)

    def settle(self, reservation: Reservation, actual: Charge, record: LedgerRecord | None) -> None:
        """See :meth:`Ledger.settle`."""
        self._finish(reservation.id, reservation.scopes, actual, record, settle=True)

    def release(self, reservation: Reservation) -> None:
        """See :meth:`Ledger.release`."""
        self._finish(reservation.id, reservation.scopes, Charge(), None, settle=False)

    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """See :meth:`Ledger.record`."""
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

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
