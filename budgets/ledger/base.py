"""The ledger interface and the records it keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
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
    """

    id: str
    scopes: tuple[str, ...]
    charge: Charge


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
    def reserve(self, charge: Charge, scopes: Sequence[str], caps: Sequence[Cap]) -> Reservation | Refusal:
        """Atomically check ``charge`` against ``caps`` and reserve it on ``scopes``.

        Each cap holds when ``spent + reserved + charge <= cap + granted`` on its
        scope. Expired reservations are reclaimed first, by the ledger's clock
        (see :data:`RESERVATION_TTL_S`). A ledger with a clock of its own (Redis)
        names the calendar windows (``tenant:T:day:YYYY-MM-DD`` and the like) by
        it, replacing the windows it is given.

        Returns:
            The reservation, whose ``scopes`` are the scopes reserved on, or the
            refusal naming the first cap that would not hold, as given.
        """

    @abstractmethod
    def settle(self, reservation: Reservation, actual: Charge, record: LedgerRecord | None) -> None:
        """Replace the reservation by the ``actual`` spend and keep ``record``."""

    @abstractmethod
    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call failed; nothing is spent."""

    @abstractmethod
    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """Record spend made without a reservation (a local step or a cache hit)."""

    @abstractmethod
    def totals(self, scope: str) -> ScopeTotals:
        """Return what ``scope`` holds."""

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
        found = next((a for a in self.open_attempts(key) if a.key == key), None)
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
