"""A shared SQLite connection and its write transactions: the ledger, the batch queue, the cache store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: str, schema: str) -> sqlite3.Connection:
    """Open ``path`` (``":memory:"`` for one process) for many threads, creating its folder and ``schema``.

    The connection is in autocommit mode, for :func:`immediate`. A file runs WAL
    with ``synchronous=NORMAL``: a commit survives the process being killed at
    any point; only a power cut can take the last commits.
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


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
