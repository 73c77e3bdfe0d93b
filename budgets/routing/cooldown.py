"""Models resting after a failure: the router passes over them until their cooldown ends.

The record is kept in process memory: each process learns on its own that a
model is failing (a few calls per process at most find out the hard way).
Sharing it between processes would take a store such as the Redis ledger's;
a cooldown is a hint, not a cap, so nothing breaks when processes disagree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rest:
    """Why and how much longer a model rests.

    Attributes:
        seconds_left: Time left (s).
        why: What failed, e.g. ``HTTP 429``.
    """

    seconds_left: float
    why: str


class Cooldowns:
    """Models resting after failures, by key (``base_url|model``).

    Args:
        clock: Monotonic seconds (default: :func:`time.monotonic`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def rest(self, key: str, seconds: float, why: str) -> None:
        """Let ``key`` rest for ``seconds`` (a longer rest already under way is kept)."""
        with self._lock:
            until = self._clock() + seconds
            current = self._until.get(key)
            if current is None or current[0] < until:
                self._until[key] = (until, why)

    def resting(self, key: str) -> Rest | None:
        """How long ``key`` still rests, or ``None`` when it may be called."""
        with self._lock:
            entry = self._until.get(key)
            if entry is None:
                return None
            left = entry[0] - self._clock()
            if left <= 0:
                del self._until[key]
                return None
            return Rest(seconds_left=left, why=entry[1])

    def clear(self) -> None:
        """Forget every rest."""
        with self._lock:
            self._until.clear()


COOLDOWNS = Cooldowns()
"""The process's cooldowns, shared by every router of every gateway in it."""

__all__ = ["COOLDOWNS", "Cooldowns", "Rest"]
