"""One write transaction on a shared SQLite connection, for the ledger and the cache store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(conn: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """Run the block in ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if it raises).

    ``BEGIN IMMEDIATE`` takes SQLite's write lock at once, so read-check-write
    sequences from many threads (``lock``) and processes (the file lock) cannot
    interleave. The connection must be in autocommit mode (``isolation_level=None``).
    """
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
