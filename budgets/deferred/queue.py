"""The batch queue: deferred requests from queueing to answer, in one SQLite file.

A request's life (``requests.state``)::

    queued -> submitting -> submitted -> done | failed -> consumed
                  |
                  +-> queued   (no batch was created)

- ``queued``: written by the node's process when the call is deferred; its
  ``custom_id`` is the call's attempt key (the ledger holds its reservation).
- ``submitting``: claimed by one collector under a submission token, before
  the batch file is uploaded. A collector killed here leaves the token; the
  next collector looks the token up among the provider's batches (it is the
  batch's ``metadata``) and either adopts the batch it finds or puts the
  requests back in the queue, so a request is never in two batches.
- ``submitted``: in a batch (``batch_id``).
- ``done`` / ``failed``: the batch ended; ``result`` holds the chat completion,
  or the error (an expired, cancelled or failed request).
- ``consumed``: the run was resumed past it (its checkpoint no longer waits
  for it); kept for its trace and history (``queued_at`` to ``done_at``).

A thread waits while it has requests that are not consumed; it is ready to
resume when all of them are done or failed. The collector marks them consumed
only after the resume's checkpoints are written (:meth:`BatchQueue.resumed`):
a collector or run killed in between leaves them answered, so the thread is
resumed again, and the journal replays the calls that already settled. :meth:`BatchQueue.claim_resume`
lets one collector at a time resume a thread (a lease, taken over when it runs
out, so a collector killed mid-resume does not strand the run; a live collector
renews its lease while it resumes, :meth:`BatchQueue.resuming`).

Every change is one ``BEGIN IMMEDIATE`` transaction, so several processes may
queue and collect on one file at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from budgetgraph.budgets.sqlite_tx import connect, immediate

RequestState = Literal["queued", "submitting", "submitted", "done", "failed", "consumed"]

PENDING_STATES: tuple[RequestState, ...] = ("queued", "submitting", "submitted")
"""States of a request not answered yet."""

WAITING_STATES: tuple[RequestState, ...] = (*PENDING_STATES, "done", "failed")
"""States of a request whose thread still waits for it to be consumed."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    custom_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL, node TEXT NOT NULL, tier TEXT NOT NULL, model TEXT NOT NULL,
    body TEXT NOT NULL, state TEXT NOT NULL,
    submission TEXT, batch_id TEXT, result TEXT,
    queued_at REAL NOT NULL, taken_at REAL, done_at REAL
);
CREATE INDEX IF NOT EXISTS requests_pool ON requests (state, tier, model, queued_at);
CREATE INDEX IF NOT EXISTS requests_thread ON requests (thread_id, state);
CREATE INDEX IF NOT EXISTS requests_batch ON requests (batch_id);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, tier TEXT NOT NULL, model TEXT NOT NULL,
    input_file_id TEXT NOT NULL, submission TEXT NOT NULL, requests INTEGER NOT NULL,
    status TEXT NOT NULL, submitted_at REAL NOT NULL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS resumes (
    thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, lease_until REAL NOT NULL
);
"""


@dataclass(frozen=True)
class QueuedRequest:
    """One deferred request as queued, and what became of it.

    Attributes:
        custom_id: The batch line's ``custom_id``: the call's attempt key.
        thread_id: The run's thread.
        node: The graph node that made the call.
        tier: The tier whose endpoint answers it.
        model: The model asked for (the pool key, with ``tier``).
        body: The ``/v1/chat/completions`` request body, as a live call would send it.
        state: Where it is (see the module docstring).
        batch_id: The provider's batch id once submitted.
        result: The chat completion (``done``) or the error (``failed``), as the
            provider's output or error file gave it.
        queued_at: When it was queued (Unix time, s).
        done_at: When its batch ended (Unix time, s).
    """

    custom_id: str
    thread_id: str
    node: str
    tier: str
    model: str
    body: Mapping[str, Any]
    state: RequestState = "queued"
    batch_id: str | None = None
    result: Mapping[str, Any] | None = None
    queued_at: float = 0.0
    done_at: float | None = None


@dataclass(frozen=True)
class Pool:
    """Queued requests that go to one endpoint and model, and are due to be submitted.

    Attributes:
        tier: The tier (its endpoint answers).
        model: The model.
        count: Requests queued.
        oldest: When the oldest was queued (Unix time, s).
    """

    tier: str
    model: str
    count: int
    oldest: float


@dataclass(frozen=True)
class Waiting:
    """A thread that waits for deferred answers.

    Attributes:
        thread_id: The thread.
        batch_ids: The batches its requests are in (none before submission).
        pending: Requests not yet answered (queued, submitting or submitted).
        answered: Requests answered (done or failed), to be consumed by the resume.
    """

    thread_id: str
    batch_ids: tuple[str, ...]
    pending: int
    answered: int

    @property
    def ready(self) -> bool:
        """Every request is answered: the run can resume."""
        return self.pending == 0 and self.answered > 0


class BatchQueue:
    """Deferred requests and batches in one SQLite file.

    Args:
        path: The file, created with its folder on first use; ``":memory:"``
            for one process (tests); ``None``: ``.budgetgraph/batches.sqlite`` under
            the working directory of the first use (nothing is read at construction,
            so a server builds its graph without touching the disk).
    """

    def __init__(self, path: str | Path | None) -> None:
        self._path = None if path is None else str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @property
    def path(self) -> str:
        """The queue's file (``:memory:`` for an in-process queue)."""
        if self._path is None:
            self._path = str(Path.cwd() / ".budgetgraph" / "batches.sqlite")
        return self._path

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = connect(self.path, _SCHEMA)
        return self._db

    def _tx(self) -> Any:
        return immediate(self._conn, self._lock)

    # -- the node's side -------------------------------------------------------------

    def enqueue(self, request: QueuedRequest) -> bool:
        """Queue ``request``; a request already queued under its ``custom_id`` is left as it is.

        Returns:
            True when it was queued now.
        """
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO requests (custom_id, thread_id, node, tier, model, body, state,"
                " queued_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                (
                    request.custom_id,
                    request.thread_id,
                    request.node,
                    request.tier,
                    request.model,
                    json.dumps(request.body, separators=(",", ":")),
                    request.queued_at or time.time(),
                ),
            )
            return cursor.rowcount == 1

    def get(self, custom_id: str) -> QueuedRequest | None:
        """The request queued under ``custom_id``, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE custom_id = ?", (custom_id,)
            ).fetchone()
        return None if row is None else _request(row)

    def resumed(self, thread_id: str, still_waiting: Iterable[str] = ()) -> int:
        """Note that ``thread_id`` was resumed past its answered requests, but those it still waits for.

        Call it once the resume's checkpoints are written.

        Args:
            thread_id: The thread.
            still_waiting: ``custom_id`` of requests the run's checkpoint still waits for
                (its pending ``deferred`` interrupts).

        Returns:
            How many requests it marked consumed.
        """
        keep = set(still_waiting)
        with self._tx() as db:
            rows = db.execute(
                "SELECT custom_id FROM requests WHERE thread_id = ? AND state IN ('done', 'failed')",
                (thread_id,),
            ).fetchall()
            done = [(r[0],) for r in rows if r[0] not in keep]
            db.executemany("UPDATE requests SET state = 'consumed' WHERE custom_id = ?", done)
            return len(done)

    # -- the collector's side --------------------------------------------------------

    def pools(
        self, *, window_s: float, max_requests: int, now: float | None = None, force: bool = False
    ) -> list[Pool]:
        """Pools due for submission: ``max_requests`` queued, or the oldest queued ``window_s`` ago.

        Args:
            window_s: How long the oldest request may wait for others (s).
            max_requests: Requests that fill a batch file.
            now: The time (Unix, s); default now.
            force: Every pool with a request is due.
        """
        now = time.time() if now is None else now
        with self._lock:
            rows = self._conn.execute(
                "SELECT tier, model, COUNT(*), MIN(queued_at) FROM requests WHERE state = 'queued'"
                " GROUP BY tier, model"
            ).fetchall()
        pools = [Pool(str(t), str(m), int(c), float(o)) for t, m, c, o in rows]
        return [p for p in pools if force or p.count >= max_requests or now - p.oldest >= window_s]

    def take(self, tier: str, model: str, *, limit: int, submission: str) -> list[QueuedRequest]:
        """Claim up to ``limit`` queued requests of a pool for a submission (oldest first)."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE state = 'queued' AND tier = ? AND model = ?"
                " ORDER BY queued_at, custom_id LIMIT ?",
                (tier, model, limit),
            ).fetchall()
            taken = [_request(r) for r in rows]
            db.executemany(
                "UPDATE requests SET state = 'submitting', submission = ?, taken_at = ? WHERE custom_id = ?",
                [(submission, time.time(), r.custom_id) for r in taken],
            )
        return taken

    def confirm(self, submission: str, count: int) -> bool:
        """Renew a submission just before its batch is created; False if it was recovered meanwhile.

        Args:
            submission: The token.
            count: How many requests it took.
        """
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE requests SET taken_at = ? WHERE submission = ? AND state = 'submitting'",
                (time.time(), submission),
            )
            return cursor.rowcount == count

    def submitted(
        self, submission: str, *, batch_id: str, tier: str, model: str, input_file_id: str, status: str
    ) -> int:
        """Note that the requests of ``submission`` are in batch ``batch_id``.

        Returns:
            How many requests the batch holds.
        """
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE requests SET state = 'submitted', batch_id = ?"
                " WHERE submission = ? AND state = 'submitting'",
                (batch_id, submission),
            )
            db.execute(
                "INSERT OR IGNORE INTO batches (batch_id, tier, model, input_file_id, submission, requests,"
                " status, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (batch_id, tier, model, input_file_id, submission, cursor.rowcount, status, time.time()),
            )
            return int(cursor.rowcount)

    def unsubmit(self, submission: str) -> int:
        """Put the requests of a submission that created no batch back in the queue."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE requests SET state = 'queued', submission = NULL, taken_at = NULL"
                " WHERE submission = ? AND state = 'submitting'",
                (submission,),
            )
            return int(cursor.rowcount)

    def stale_submissions(self, older_than_s: float) -> list[tuple[str, str, str]]:
        """Submissions left ``submitting`` ``older_than_s`` ago (a collector died): (token, tier, model)."""
        cutoff = time.time() - older_than_s
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT submission, tier, model FROM requests"
                " WHERE state = 'submitting' AND taken_at < ?",
                (cutoff,),
            ).fetchall()
        return [(str(s), str(t), str(m)) for s, t, m in rows]

    def open_batches(self) -> list[tuple[str, str, str]]:
        """Batches not yet ended: ``(batch_id, tier, model)``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT batch_id, tier, model FROM batches WHERE ended_at IS NULL ORDER BY submitted_at"
            ).fetchall()
        return [(str(b), str(t), str(m)) for b, t, m in rows]

    def note_status(self, batch_id: str, status: str) -> None:
        """Note a batch's status as last polled."""
        with self._tx() as db:
            db.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))

    def complete(
        self, batch_id: str, status: str, results: Mapping[str, tuple[bool, Mapping[str, Any]]]
    ) -> int:
        """End a batch: store each request's answer (``True``) or error (``False``), in one transaction.

        A request of the batch without a line in either file failed with
        ``status`` (an expired or cancelled batch leaves some unanswered).

        Returns:
            How many requests it ended.
        """
        now = time.time()
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT custom_id FROM requests WHERE batch_id = ? AND state = 'submitted'", (batch_id,)
                )
            ]
            rows = []
            for custom_id in ids:
                ok, payload = results.get(
                    custom_id,
                    (
                        False,
                        {
                            "error": {
                                "code": f"batch_{status}",
                                "message": f"no result: the batch ended {status}",
                            }
                        },
                    ),
                )
                rows.append(
                    ("done" if ok else "failed", json.dumps(payload, separators=(",", ":")), now, custom_id)
                )
            db.executemany(
                "UPDATE requests SET state = ?, result = ?, done_at = ?"
                " WHERE custom_id = ? AND state = 'submitted'",
                rows,
            )
            db.execute(
                "UPDATE batches SET status = ?, ended_at = ? WHERE batch_id = ?", (status, now, batch_id)
            )
            return len(rows)

    def waiting(self, thread_id: str | None = None) -> list[Waiting]:
        """Threads that wait for deferred answers (one thread's, if named)."""
        query = (
            "SELECT thread_id, state, batch_id FROM requests WHERE state IN"
            f" ({', '.join('?' * len(WAITING_STATES))})"
        )
        params: list[Any] = list(WAITING_STATES)
        if thread_id is not None:
            query += " AND thread_id = ?"
            params.append(thread_id)
        with self._lock:
            rows = self._conn.execute(query, params).fetchall()
        by_thread: dict[str, tuple[set[str], list[int]]] = {}
        for thread, state, batch in rows:
            batches, counts = by_thread.setdefault(str(thread), (set(), [0, 0]))
            if batch:
                batches.add(str(batch))
            counts[0 if state in PENDING_STATES else 1] += 1
        return [
            Waiting(thread, tuple(sorted(batches)), counts[0], counts[1])
            for thread, (batches, counts) in sorted(by_thread.items())
        ]

    def batch_ids(self, thread_id: str) -> list[str]:
        """Every batch that held a request of ``thread_id``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT batch_id FROM requests"
                " WHERE thread_id = ? AND batch_id IS NOT NULL ORDER BY batch_id",
                (thread_id,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def claim_resume(self, thread_id: str, owner: str, *, lease_s: float) -> bool:
        """Take the right to resume ``thread_id`` for ``lease_s`` seconds; False if another holds it."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, lease_until FROM resumes WHERE thread_id = ?", (thread_id,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO resumes (thread_id, owner, lease_until) VALUES (?, ?, ?)",
                (thread_id, owner, now + lease_s),
            )
            return True

    def renew_resume(self, thread_id: str, owner: str, *, lease_s: float) -> bool:
        """Extend ``owner``'s lease on ``thread_id`` (while the resume goes on); False if it lost it."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE resumes SET lease_until = ? WHERE thread_id = ? AND owner = ?",
                (time.time() + lease_s, thread_id, owner),
            )
            return cursor.rowcount == 1

    @contextmanager
    def resuming(self, thread_id: str, owner: str, *, lease_s: float) -> Iterator[bool]:
        """Hold the right to resume ``thread_id`` for the block, renewing the lease as it runs.

        Yields:
            False when another collector holds it (skip the thread), else True.
        """
        if not self.claim_resume(thread_id, owner, lease_s=lease_s):
            yield False
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_s / 3):
                self.renew_resume(thread_id, owner, lease_s=lease_s)

        keeper = threading.Thread(target=renew, name=f"lease-{thread_id}", daemon=True)
        keeper.start()
        try:
            yield True
        finally:
            stop.set()
            keeper.join()
            self.release_resume(thread_id, owner)

    def release_resume(self, thread_id: str, owner: str) -> None:
        """Give back the right to resume ``thread_id``."""
        with self._tx() as db:
            db.execute("DELETE FROM resumes WHERE thread_id = ? AND owner = ?", (thread_id, owner))

    def requests(self, custom_ids: Iterable[str] | None = None) -> list[QueuedRequest]:
        """Every request (or those named), oldest first."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM requests ORDER BY queued_at").fetchall()
        found = [_request(r) for r in rows]
        if custom_ids is None:
            return found
        wanted = set(custom_ids)
        return [r for r in found if r.custom_id in wanted]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_COLUMNS = "custom_id, thread_id, node, tier, model, body, state, batch_id, result, queued_at, done_at"


def _request(row: Sequence[Any]) -> QueuedRequest:
    return QueuedRequest(
        custom_id=str(row[0]),
        thread_id=str(row[1]),
        node=str(row[2]),
        tier=str(row[3]),
        model=str(row[4]),
        body=json.loads(row[5]),
        state=row[6],
        batch_id=row[7],
        result=None if row[8] is None else json.loads(row[8]),
        queued_at=float(row[9]),
        done_at=None if row[10] is None else float(row[10]),
    )


def open_queue(url: str | Path | None) -> BatchQueue:
    """Open the batch queue at ``url``: a path, ``sqlite:///PATH``, or ``memory:``.

    ``None`` is ``.budgetgraph/batches.sqlite`` under the working directory (resolved on first use).
    """
    if url is None:
        return BatchQueue(None)
    text = str(url)
    if text == "memory:":
        return BatchQueue(":memory:")
    if text.startswith("sqlite:///"):
        return BatchQueue(text.removeprefix("sqlite:///"))
    return BatchQueue(text)
