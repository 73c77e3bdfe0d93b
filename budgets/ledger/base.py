"""The ledger interface and the records it keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NotRequired
from urllib.parse import quote

from typing_extensions import TypedDict

from budgetgraph.budgets.errors import ConfigError

Unit = Literal["tokens", "micro_usd"]


def scope_part(value: str) -> str:
    """``value`` made safe as one part of a ``:``-separated scope or journal key.

    Percent-encodes ``%``, ``:``, control characters, whitespace other than a
    space, and anything outside printable ASCII, so a thread id such as
    ``victim:node:cto`` cannot name another thread's node scope. Ordinary
    names (UUIDs, ``acme``, ``cto``, ``(new run)``) are unchanged.
    """
    return quote(value, safe=_SCOPE_SAFE)


_SCOPE_SAFE = "".join(c for c in map(chr, range(32, 127)) if c not in ":%")
"""Characters a scope part keeps as they are."""


RESERVATION_TTL_S = 900.0
"""A reservation not settled or released within this time (s) is reclaimed:
its process is taken to have died mid-call. Measured by the ledger's clock:
the host's for SQLite, the Redis server's for Redis."""

DEFERRED_TTL_S = 2 * 24 * 3600.0
"""The life of a deferred call's reservation (s): the batch's 24-hour completion
window, and as long again for the collector to resume the run."""


@dataclass(frozen=True)
class Charge:
    """An amount of spend.

    Attributes:
        tokens: Input plus output tokens.
        micro_usd: Cost in integer micro-dollars.
    """

    tokens: int = 0
    micro_usd: int = 0

    def of(self, unit: Unit) -> int:
        """The amount in ``unit``."""
        return self.tokens if unit == "tokens" else self.micro_usd


@dataclass(frozen=True)
class Cap:
    """A cap on one scope, in one unit.

    Attributes:
        scope: The ledger scope the cap is on, e.g. ``run:THREAD:node:cto`` or
            ``tenant:acme:day:2026-11-20``.
        limit: The limit's name for messages, e.g. ``max_cost_usd`` or
            ``daily.max_cost_usd``.
        unit: ``tokens`` or ``micro_usd``.
        cap: The cap, in ``unit``, before any grant.
    """

    scope: str
    limit: str
    unit: Unit
    cap: int


@dataclass(frozen=True)
class ScopeTotals:
    """What one scope holds.

    Attributes:
        spent: Settled spend.
        reserved: Reserved and not yet settled.
        granted: Extra room granted by approvals, added to every cap on the scope.
    """

    spent: Charge = Charge()
    reserved: Charge = Charge()
    granted: Charge = Charge()


@dataclass(frozen=True)
class Reservation:
    """A reserved amount, to be settled or released.

    Attributes:
        id: Unique id.
        scopes: Every scope the amount was reserved on.
        charge: The amount reserved.
        attempt: The key of the attempt opened with it (see :meth:`Ledger.reserve`), or ``None``.
    """

    id: str
    scopes: tuple[str, ...]
    charge: Charge
    attempt: str | None = None


@dataclass(frozen=True)
class AlertCheck:
    """A cap whose alert thresholds a settlement checks.

    Attributes:
        cap: The cap (its scope, limit, unit and amount before grants).
        thresholds: Fractions of the cap (0-1] at which an alert is noted, once each.
    """

    cap: Cap
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class NotedAlert:
    """An alert threshold a settlement crossed, noted for the first time.

    Attributes:
        scope: The cap's scope.
        limit: The cap's limit name.
        threshold: The fraction crossed (0-1].
        used: The share of the cap (its grants included) spent after the settlement.
    """

    scope: str
    limit: str
    threshold: float
    used: float

    @property
    def reason(self) -> str:
        """The alert as a spend row's ``warn`` decision and a record's ``alerts`` show it."""
        return f"`{self.limit}` on {self.scope} reached {self.used:.0%} (alert at {self.threshold:.0%})"


@dataclass(frozen=True)
class CallStart:
    """What the ledger holds for a call about to run, read at once (:meth:`Ledger.open_call`).

    Attributes:
        journal: The call's journal entry, when it completed before (``None``: it did not).
        attempts: The call's attempts still open, oldest first (left by a process that died).
        totals: What each of the call's scopes holds.
    """

    journal: dict[str, Any] | None
    attempts: list[Attempt]
    totals: dict[str, ScopeTotals]


HISTORY_KEPT = 1000
"""The most recent calls per node, tier and model that :meth:`Ledger.recent_usage` can return."""


CACHE_CONFIRMATION: tuple[str, str] = ("cache", "confirm")
"""The decision (plugin, action) on the rows of a question the cache put to a model to
confirm a near hit (:mod:`budgetgraph.budgets.cache.confirm`)."""


def is_cache_confirmation(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` (a spend row or a ledger record) is a cache confirmation's question."""
    plugin, action = CACHE_CONFIRMATION
    return any(d.get("plugin") == plugin and d.get("action") == action for d in row.get("decisions") or ())


def in_usage_history(record: LedgerRecord) -> bool:
    """Whether ``record`` is a call behind the estimates (:meth:`Ledger.recent_usage`).

    Not a cache hit, an unsettled attempt or a local step, which used no model
    tokens of their own, nor a question the cache asked a model to confirm a near
    hit (the ``cache``/``confirm`` decision): a few tokens that say nothing about
    what the node's own calls take.
    """
    if record.get("cache_hit") or record.get("usage") == "unsettled" or record["tier"] == "local":
        return False
    return not is_cache_confirmation(record)


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused: the first cap it would have passed.

    Attributes:
        cap: The cap.
        spent: Settled spend on the cap's scope, in the cap's unit.
        reserved: Reserved spend on it.
        granted: Room granted on it.
        requested: What the reservation asked for, in the cap's unit.
    """

    cap: Cap
    spent: int
    reserved: int
    granted: int
    requested: int


class LedgerRecord(TypedDict):
    """One settled call, as the ledger keeps it for reports."""

    ts: str
    """When it was settled (UTC, ISO 8601)."""
    tenant: str
    thread_id: str
    node: str
    tier: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int
    saved_micro_usd: int
    cache_hit: bool
    alerts: list[str]
    cache: NotRequired[str]
    """The cache's outcome: ``exact``, ``semantic``, ``miss``, ``refused`` or ``""``
    (no lookup); absent from records kept before it was added."""
    usage: NotRequired[str]
    """Where the tokens come from when the server's ``usage`` was not taken: ``estimated``
    (by tokenizer), ``refused`` (impossible usage; the reservation is kept instead) or
    ``unsettled`` (an attempt that may have been billed and never settled, at its
    reservation); absent for reported usage."""
    reason: NotRequired[str]
    """Why the usage was not taken, with ``usage``."""
    latency_ms: NotRequired[int]
    """The call's wall time (ms); absent from records kept before it was added."""
    decisions: NotRequired[list[dict[str, str]]]
    """The call's plugin decisions (``plugin``, ``action``, ``reason``); absent from older records."""
    batch_id: NotRequired[str]
    """A deferred call's batch, once it answered."""
    deferred: NotRequired[bool]
    """On an attempt's record: the request went to the batch queue, not to the server."""


@dataclass(frozen=True)
class Attempt:
    """A request sent to a model server under a reservation, until it settles.

    The ``limits`` plugin opens one before a request goes out and closes it when
    the request settles or fails. One left open was in flight when its process
    died (or its ledger went away): it may have been billed, so it is closed as
    unsettled, at its reservation, when its run resumes (:meth:`Ledger.unsettle`).

    Attributes:
        key: ``JOURNAL_KEY#RESERVATION_ID`` (the call's journal key, see the gateway),
            so that the attempts of one call share a prefix.
        reservation: The reservation the request holds.
        record: The record to keep if it never settles: the reservation's tokens
            and cost, ``usage`` ``unsettled``.
    """

    key: str
    reservation: Reservation
    record: LedgerRecord

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        r = self.reservation
        return {
            "key": self.key,
            "reservation": {
                "id": r.id,
                "scopes": list(r.scopes),
                "tokens": r.charge.tokens,
                "micro_usd": r.charge.micro_usd,
            },
            "record": dict(self.record),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        """The attempt :meth:`to_json` made."""
        r = data["reservation"]
        reservation = Reservation(
            id=r["id"], scopes=tuple(r["scopes"]), charge=Charge(int(r["tokens"]), int(r["micro_usd"]))
        )
        return cls(key=data["key"], reservation=reservation, record=data["record"])


class Ledger(ABC):
    """Where spend is reserved, settled and summed."""

    @abstractmethod
    def reserve(
        self,
        charge: Charge,
        scopes: Sequence[str],
        caps: Sequence[Cap],
        *,
        attempt: tuple[str, LedgerRecord] | None = None,
        ttl_s: float | None = None,
    ) -> Reservation | Refusal:
        """Atomically check ``charge`` against ``caps`` and reserve it on ``scopes``.

        Each cap holds when ``spent + reserved + charge <= cap + granted`` on its
        scope. Expired reservations are reclaimed first, by the ledger's clock
        (see :data:`RESERVATION_TTL_S`). A ledger with a clock of its own (Redis)
        names the calendar windows (``tenant:T:day:YYYY-MM-DD`` and the like) by
        it, replacing the windows it is given.

        Args:
            charge: The amount to reserve.
            scopes: The scopes to reserve it on.
            caps: The caps it must fit.
            attempt: ``(call key, record)``: open the attempt ``CALL_KEY#RESERVATION_ID``
                (see :class:`Attempt`) in the same transaction, with the record it
                leaves if it never settles; the reservation's ``attempt`` names it.
            ttl_s: How long the reservation lives unless settled or released (s);
                ``None``: :data:`RESERVATION_TTL_S`. A deferred call's lives as long
                as its batch may take (:data:`DEFERRED_TTL_S`).

        Returns:
            The reservation, whose ``scopes`` are the scopes reserved on, or the
            refusal naming the first cap that would not hold, as given.
        """

    @abstractmethod
    def settle(
        self,
        reservation: Reservation,
        actual: Charge,
        record: LedgerRecord | None,
        *,
        alerts: Sequence[AlertCheck] = (),
        journal: tuple[str, dict[str, Any]] | None = None,
    ) -> list[NotedAlert]:
        """Replace the reservation by the ``actual`` spend and keep ``record``, in one transaction.

        The reservation's attempt, if it opened one, is closed. Each threshold of
        ``alerts`` that the spend on its cap's scope (over the cap plus grants)
        reaches is noted, once ever per scope, limit and threshold, and added to
        the kept record's ``alerts`` (:attr:`NotedAlert.reason`). ``journal``
        (key, entry) is the call's journal entry, kept too when no alert is noted
        (otherwise the caller keeps it, with the alerts on its calls).

        Returns:
            The alerts noted for the first time by this settlement.
        """

    @abstractmethod
    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed; nothing is spent."""

    @abstractmethod
    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """Record spend made without a reservation (a local step or a cache hit)."""

    @abstractmethod
    def totals(self, scope: str) -> ScopeTotals:
        """Return what ``scope`` holds."""

    def totals_of(self, scopes: Sequence[str]) -> dict[str, ScopeTotals]:
        """Return what each of ``scopes`` holds, read at once (one query or round trip)."""
        return {scope: self.totals(scope) for scope in dict.fromkeys(scopes)}

    def open_call(self, journal_key: str | None, scopes: Sequence[str]) -> CallStart:
        """Read what a call about to run needs, at once: its journal entry, open attempts and totals.

        Args:
            journal_key: The call's journal key (``None``: a call that is not journaled).
            scopes: The ledger scopes its caps are on.
        """
        if journal_key is None:
            return CallStart(None, [], self.totals_of(scopes))
        return CallStart(
            self.journal_get(journal_key), self.open_attempts(journal_key + "#"), self.totals_of(scopes)
        )

    def finish_call(
        self, journal_key: str | None, entry: dict[str, Any] | None, records: Sequence[LedgerRecord]
    ) -> None:
        """Keep a finished call: its journal entry (when both are given) and its records, at once."""
        if journal_key is not None and entry is not None:
            self.journal_put(journal_key, entry)
        for record in records:
            self.record((), Charge(), record)

    @abstractmethod
    def recent_usage(
        self, node: str, tier: str, model: str, *, limit: int, since: datetime | None = None
    ) -> list[tuple[int, int]]:
        """The latest settled calls of ``node`` at ``tier`` on ``model`` that were not cache hits.

        A bounded read (an index or a capped list), never a scan of every record.

        Args:
            node: The graph node.
            tier: The tier.
            model: The model name.
            limit: How many, at most (up to :data:`HISTORY_KEPT`).
            since: Only calls kept from this time (UTC); ``None``: any.

        Returns:
            ``(input_tokens, output_tokens)`` per call, newest first.
        """

    def recent_usage_of(
        self, keys: Sequence[tuple[str, str, str]], *, limit: int, since: datetime | None = None
    ) -> dict[tuple[str, str, str], list[tuple[int, int]]]:
        """:meth:`recent_usage` of each ``(node, tier, model)`` in ``keys``, read at once."""
        return {key: self.recent_usage(*key, limit=limit, since=since) for key in dict.fromkeys(keys)}

    @abstractmethod
    def prune_journal(self, thread_prefix: str) -> int:
        """Drop the journal entries of one thread (its keys start with ``thread_prefix``).

        Returns:
            How many entries were dropped (Redis: 1 when the thread had any, else 0).
        """

    @abstractmethod
    def grant(self, scope: str, extra: Charge) -> None:
        """Add ``extra`` room on ``scope`` (an approval that raised its caps)."""

    @abstractmethod
    def note_alert(self, scope: str, limit: str, threshold: float) -> bool:
        """Note that ``limit`` on ``scope`` crossed ``threshold``.

        Returns:
            True the first time, False when it was already noted.
        """

    @abstractmethod
    def records(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """Return the settled records, oldest first, filtered by time and tenant."""

    @abstractmethod
    def alerts(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Return the alerts noted: ``scope``, ``limit``, ``threshold``, ``ts``."""

    @abstractmethod
    def journal_get(self, key: str) -> dict[str, Any] | None:
        """Return the journal entry stored under ``key``, or ``None``."""

    @abstractmethod
    def journal_put(self, key: str, entry: dict[str, Any]) -> None:
        """Store a completed call's result under ``key`` (JSON-ready), for replay after a crash."""

    # -- attempts: requests that may have been billed ---------------------------------

    @abstractmethod
    def begin_attempt(self, attempt: Attempt) -> None:
        """Note that a request is about to be sent under ``attempt.reservation``."""

    @abstractmethod
    def end_attempt(self, key: str) -> bool:
        """Close the attempt ``key``: it settled, or failed unbilled.

        Returns:
            True when this call closed it, False when it was not open (closed by another).
        """

    @abstractmethod
    def open_attempts(self, prefix: str = "") -> list[Attempt]:
        """Return the attempts still open whose key starts with ``prefix``, oldest first."""

    @abstractmethod
    def keep_unsettled(self, record: LedgerRecord, charge: Charge, scopes: Sequence[str]) -> None:
        """Charge an attempt that may have been billed, and keep its record among the unsettled.

        ``charge`` (the attempt's reservation: an upper bound of what it cost) is
        added to the spend of every scope in ``scopes``; its reservation, if still
        held, is the caller's to release.
        """

    @abstractmethod
    def unsettled(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """Return the unsettled records, oldest first, filtered by time and tenant."""

    def unsettle(self, key: str, reason: str) -> Attempt | None:
        """Close the open attempt ``key`` as unsettled: release its reservation and charge it.

        Its record is kept with ``reason`` (see :meth:`keep_unsettled`). The caller
        that closes the attempt (:meth:`end_attempt`) is the one that charges it, so
        an attempt is charged once however many processes see it open.

        Returns:
            The attempt, or ``None`` when it was not open.
        """
        call = key.rsplit("#", 1)[0] + "#"
        found = next((a for a in self.open_attempts(call) if a.key == key), None)
        if found is None or not self.end_attempt(key):
            return None
        self.release(found.reservation)
        record: LedgerRecord = {**found.record, "reason": reason}
        self.keep_unsettled(record, found.reservation.charge, found.reservation.scopes)
        return found

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def default_ledger_path(cwd: Path | None = None) -> Path:
    """``.budgetgraph/ledger.sqlite`` under ``cwd`` (default: the working directory)."""
    return (cwd or Path.cwd()) / ".budgetgraph" / "ledger.sqlite"


def open_ledger(url: str | None = None) -> Ledger:
    """Open the ledger named by ``url``.

    Args:
        url: ``memory:``, ``sqlite:///PATH`` (``sqlite:////abs/path`` for an
            absolute path) or ``redis://HOST:PORT/DB``; ``None`` for SQLite under ``.budgetgraph/``
            (the settings' ``ledger_url`` names it, see :mod:`budgetgraph.settings`).

    Raises:
        ConfigError: The URL's scheme is not one of these.
    """
    url = url or None
    if url is None or url.startswith("sqlite:///"):
        from budgetgraph.budgets.ledger.sqlite import SqliteLedger

        path = default_ledger_path() if url is None else Path(url.removeprefix("sqlite:///"))
        return SqliteLedger(path)
    if url == "memory:":
        from budgetgraph.budgets.ledger.sqlite import SqliteLedger

        return SqliteLedger(":memory:")
    if url.startswith(("redis://", "rediss://", "unix://")):
        from budgetgraph.budgets.ledger.redis import RedisLedger

        return RedisLedger.from_url(url)
    from budgetgraph.settings import mask_url

    raise ConfigError(
        path=None, problems=[f"ledger `{mask_url(url)}`: use memory:, sqlite:///PATH or redis://..."]
    )
