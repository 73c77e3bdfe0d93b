"""The semantic cache: exact key first, then the nearest stored requests, then the guard.

:class:`SemanticCache` puts the layers of :mod:`budgetgraph.budgets.cache.base` together.
A lookup in one namespace:

1. **Exact.** The store is asked for the namespace's entry with the request's
   exact key (a hash of the normalised request). No embedding is needed.
2. **Semantic.** The request text is embedded (unless the caller passes its
   vector), the namespace's FAISS index, brought in step with the store's
   change log, gives the two nearest stored requests, and those above the
   threshold are fetched from the store.
3. **Guard.** :class:`~budgetgraph.budgets.cache.guard.Guard` refuses an ambiguous lookup
   (two candidates almost equally near) and a nearest candidate whose request
   differs in what changes the answer; otherwise the nearest is served.

After each lookup its counters (exact hits, semantic hits, misses, refusals,
USD saved) and the LRU touch of the entry served are written to the store in
one round trip (or buffered for :attr:`SemanticCache.flush_s` seconds, and
written on :meth:`SemanticCache.close`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from budgetgraph.budgets.cache.base import (
    Counts,
    Embedder,
    Entry,
    EntryStore,
    Matrix,
    Namespace,
    NewEntry,
    Outcome,
    Sync,
    Vector,
)
from budgetgraph.budgets.cache.diff import may_expand
from budgetgraph.budgets.cache.guard import Guard
from budgetgraph.tracing.attributes import STEP_EMBED, STEP_GUARD
from budgetgraph.tracing.spans import step_event

if TYPE_CHECKING:
    from budgetgraph.budgets.cache.index import FaissIndex

RESCORE_MARGIN = 0.005
"""Index scores this far under the threshold are fetched and scored exactly (cosine)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lookup:
    """What a lookup found.

    Attributes:
        outcome: ``exact`` or ``semantic`` for a hit, ``miss`` otherwise.
        entry: The entry served, on a hit.
        similarity: Cosine similarity of the entry served (1.0 for an exact
            hit), or of the nearest candidate on a miss; ``None`` when none was found.
        reason: One line on why (for the spend table's decisions).
        refused: The guard's reason when it refused the nearest candidate (or
            found the lookup ambiguous).
        category: The refusal's category
            (:data:`~budgetgraph.budgets.cache.guard.REFUSAL_CATEGORIES`), or ``None``.
        vector: The request's embedding when one was computed (reuse it in
            :meth:`SemanticCache.put`), else ``None``.
        elapsed_ms: Time the lookup took, embedding included (ms).
    """

    outcome: Outcome
    entry: Entry | None = None
    similarity: float | None = None
    reason: str = ""
    refused: tuple[str, ...] = ()
    category: str | None = None
    vector: Vector | None = field(default=None, compare=False)
    elapsed_ms: float = 0.0

    @property
    def hit(self) -> bool:
        """True for an exact or semantic hit."""
        return self.entry is not None


@dataclass
class _Namespaced:
    index: FaissIndex | None = None
    cursor: str | None = None
    unsaved: int = 0
    saved_at: float = 0.0
    loaded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class SemanticCache:
    """Exact and semantic lookups over an entry store, one FAISS index per namespace.

    Args:
        store: Where entries live.
        embedder: Embeds request text (loaded on first use).
        guard: The similarity policy's checks.
        k: Nearest neighbours searched per semantic lookup: the guard judges the
            nearest, the ambiguity test needs the runner-up.
        index_dir: Folder for index snapshots (the ``disk`` store); ``None``
            keeps indexes in memory only and rebuilds them from the store.
        snapshot_every: Changes after which a namespace's index snapshot is rewritten.
        snapshot_s: Seconds after which a changed index snapshot is rewritten.
        flush_s: Seconds between writes of the counters and LRU touches; 0 (the
            default) writes them after every lookup, in one store round trip, so
            ``budgetgraph cache stats`` is exact at any moment. A busy server may
            buffer them for a second.
        clock: Current time (s), for the flush and snapshot timers.
    """

    def __init__(
        self,
        store: EntryStore,
        embedder: Embedder,
        *,
        guard: Guard | None = None,
        k: int = 2,
        index_dir: Path | None = None,
        snapshot_every: int = 256,
        snapshot_s: float = 5.0,
        flush_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.guard = guard or Guard()
        self.k = k
        self.index_dir = index_dir
        self.snapshot_every = snapshot_every
        self.snapshot_s = snapshot_s
        self.flush_s = flush_s
        self._clock = clock
        self._spaces: dict[str, _Namespaced] = {}
        self._spaces_lock = threading.Lock()
        self._pending: dict[str, tuple[Namespace, Counts, set[int]]] = {}
        self._pending_lock = threading.Lock()
        self._flushed_at = -float("inf")

    # ------------------------------------------------------------------ lookups

    def lookup(
        self,
        namespace: Namespace,
        *,
        key: str,
        text: str | None,
        threshold: float,
        vector: Vector | None = None,
        accept: Callable[[Entry], bool] | None = None,
    ) -> Lookup:
        """Find an answer for a request.

        Args:
            namespace: The request's namespace; nothing outside it is served.
            key: The request's exact key.
            text: The normalised request text for a semantic lookup, or
                ``None`` for an exact-only lookup.
            threshold: Cosine similarity a semantic candidate needs, before
                the guard's own requirements.
            vector: The text's embedding when the caller has it (skips the embedder).
            accept: Whether the caller can use an entry (its answer still fits
                the request's schema and tools); a refused entry makes the
                lookup a miss, and the counters say so.

        Returns:
            The lookup; a miss carries the embedding it computed, for :meth:`put`.

        Raises:
            redis.RedisError: The Redis store failed.
            sqlite3.Error: The disk store failed.
            openai.APIError: The endpoint embedder failed.
        """
        started = time.perf_counter()
        result = self._lookup(namespace, key, text, threshold, vector)
        if result.entry is not None and accept is not None and not accept(result.entry):
            reason = f"entry {result.entry.id} no longer fits the request"
            result = Lookup("miss", similarity=result.similarity, reason=reason, vector=result.vector)
        result = replace(result, elapsed_ms=(time.perf_counter() - started) * 1000)
        self._count(namespace, result)
        return result

    def _lookup(
        self, namespace: Namespace, key: str, text: str | None, threshold: float, vector: Vector | None
    ) -> Lookup:
        if text is None:
            entry = self.store.find(namespace.key, key)
            if entry is not None:
                return Lookup("exact", entry, 1.0, "exact match")
            return Lookup("miss", reason="no exact match (exact-only request)")
        space = self._space(namespace.key)
        # The exact read, the index's catch-up and (when the caller gave the vector) the fetch of
        # the nearest entries share one store round trip; changes in the catch-up mean a new search.
        # An IVF index holds float16 vectors: its scores are within ~1e-3 of the cosine, so
        # candidates just under the threshold are fetched too and scored on their stored vectors.
        floor = self.guard.floor(threshold) - RESCORE_MARGIN
        fetched: dict[int, Entry] | None
        with space.lock:
            nearest = self._search(space, vector)
            ids = [i for i, s in nearest if s >= floor]
            entry, sync, fetched = self.store.find_sync_get(namespace.key, key, space.cursor, ids)
            if sync is not None:
                self._apply(space, sync)
                if sync.reset or sync.added or sync.removed:
                    nearest, fetched = self._search(space, vector), None
        if entry is not None:
            return Lookup("exact", entry, 1.0, "exact match")
        if vector is None:
            if not self.embedder.fits(text):
                return Lookup("miss", reason="no exact match; too long for a semantic lookup")
            embedding = time.perf_counter()
            vector = self.embedder.embed([text])[0]
            elapsed_ms = (time.perf_counter() - embedding) * 1000
            step_event(STEP_EMBED, duration_ms=elapsed_ms, embedder=self.embedder.name)
            with space.lock:
                nearest, fetched = self._search(space, vector), None
        above = [(i, s) for i, s in nearest if s >= floor]
        if not above:
            if nearest:
                return _below(nearest[0][1], threshold, vector)
            return Lookup("miss", reason="no entry in the namespace", vector=vector)
        if fetched is None:
            fetched = self.store.get([i for i, _ in above])
        # An index id names an entry of this namespace only while the index is in step with
        # the store; a stale one must never serve another namespace's entry.
        entries = {i: e for i, e in fetched.items() if e.namespace == namespace.key}
        if len(entries) < len(fetched):
            logger.warning("The cache index of `%s` named entries of another namespace", namespace.label)
        gone = [i for i, _ in above if i not in entries]
        if gone:
            with space.lock:
                if space.index is not None:
                    space.index.remove(gone)
        scored = [(entries[i], _cosine(vector, entries[i].vector, s)) for i, s in above if i in entries]
        candidates = sorted((c for c in scored if c[1] >= threshold), key=lambda c: -c[1])
        if not candidates and scored:
            nearest_entry, best = max(scored, key=lambda c: c[1])
            if best < self.guard.floor(threshold) or not may_expand(text, nearest_entry.text):
                return _below(best, threshold, vector)
            candidates = [(nearest_entry, best)]  # the guard judges it: abbreviations written out
        if not candidates:
            return Lookup("miss", reason="nearest entries have expired", vector=vector)
        if len(candidates) > 1:
            (first, best), (second, runner_up) = candidates[0], candidates[1]
            if first.text != second.text and self.guard.ambiguous(best, runner_up, threshold):
                reason = f"ambiguous: two entries at {best:.3f} and {runner_up:.3f}"
                return Lookup(
                    "miss",
                    similarity=best,
                    reason=reason,
                    refused=(reason,),
                    category="ambiguous",
                    vector=vector,
                )
        # Only the nearest candidate is judged: when the guard refuses it, serving
        # a farther one lowered precision on both evaluation sets (0.973 -> 0.964
        # on the paraphrases), so a refusal is a miss.
        candidate, similarity = candidates[0]
        pair = None if candidate.vector is None else (vector, candidate.vector)
        judging = time.perf_counter()
        verdict = self.guard.judge(
            text, candidate.text, similarity, threshold, pair, embed=self.embedder.embed
        )
        step_event(
            STEP_GUARD,
            duration_ms=(time.perf_counter() - judging) * 1000,
            outcome="accepted" if verdict.accepted else "refused",
            category=verdict.category,
        )
        if verdict.accepted:
            return Lookup("semantic", candidate, similarity, verdict.reason, vector=vector)
        if verdict.category == "similarity":  # under the threshold, and more than abbreviations differ
            return _below(similarity, threshold, vector)
        return Lookup(
            "miss",
            similarity=similarity,
            reason=verdict.reason,
            refused=(verdict.reason,),
            category=verdict.category,
            vector=vector,
        )

    def _search(self, space: _Namespaced, vector: Vector | None) -> list[tuple[int, float]]:
        """The ``k`` nearest ``(id, score)`` of ``vector`` (call with ``space.lock`` held)."""
        if vector is None or space.index is None:
            return []
        return space.index.search(vector, self.k)

    def put(
        self,
        namespace: Namespace,
        *,
        key: str,
        text: str | None,
        response: Mapping[str, Any],
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_micro_usd: int = 0,
        vector: Vector | None = None,
    ) -> Entry:
        """Store an answer.

        Args:
            namespace: Where it may be served.
            key: The request's exact key.
            text: The normalised request text, or ``None`` for an exact-only entry.
            response: The answer as JSON-ready data.
            model: The model that wrote it.
            input_tokens: Its input tokens (tokens).
            output_tokens: Its output tokens (tokens).
            cost_micro_usd: What it cost (micro-USD); each hit saves this much.
            vector: The text's embedding, when known (else it is computed).

        Returns:
            The stored entry.

        Raises:
            redis.RedisError: The Redis store failed.
            sqlite3.Error: The disk store failed.
            openai.APIError: The endpoint embedder failed.
        """
        if text is not None and vector is None and self.embedder.fits(text):
            vector = self.embedder.embed([text])[0]
        entry = self.store.add(
            NewEntry(
                namespace=namespace,
                key=key,
                text=text or "",
                vector=vector if text is not None else None,
                response=response,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_micro_usd=cost_micro_usd,
            )
        )
        if entry.vector is not None:
            space = self._space(namespace.key)
            with space.lock:
                self._apply(space, self.store.sync(namespace.key, space.cursor))
                self._maybe_save(namespace.key, space)
        self._maybe_flush()
        return entry

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts`` in batches (for evaluations that look up many texts)."""
        return self.embedder.embed(list(texts))

    # ------------------------------------------------------------------ housekeeping

    def flush(self) -> None:
        """Write buffered counters and LRU touches to the store now."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = self._clock()
        for namespace, counts, used in pending.values():
            self.store.record(namespace, counts, sorted(used))

    def close(self) -> None:
        """Flush counters, save index snapshots, and close the store."""
        try:
            self.flush()
            with self._spaces_lock:
                spaces = list(self._spaces.items())
            for key, space in spaces:
                with space.lock:
                    if space.unsaved:
                        self._save(key, space)
        finally:
            self.store.close()

    def _count(self, namespace: Namespace, lookup: Lookup) -> None:
        counts = Counts(
            exact_hits=int(lookup.outcome == "exact"),
            semantic_hits=int(lookup.outcome == "semantic"),
            misses=int(lookup.outcome == "miss"),
            refusals=int(bool(lookup.refused)),
            saved_micro_usd=lookup.entry.cost_micro_usd if lookup.entry is not None else 0,
        )
        if lookup.refused:
            field_name = Counts.refusal_field(lookup.category)
            setattr(counts, field_name, getattr(counts, field_name) + 1)
        with self._pending_lock:
            _, total, used = self._pending.setdefault(namespace.key, (namespace, Counts(), set()))
            total.add(counts)
            if lookup.entry is not None:
                used.add(lookup.entry.id)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._clock() - self._flushed_at >= self.flush_s:
            try:
                self.flush()
            except Exception:  # counters are best effort; the lookup itself succeeded
                logger.warning("Could not write cache counters", exc_info=True)

    def _space(self, key: str) -> _Namespaced:
        """The namespace's index state, its snapshot loaded on first use."""
        with self._spaces_lock:
            space = self._spaces.setdefault(key, _Namespaced())
        with space.lock:
            if not space.loaded:
                space.loaded = True
                self._load(key, space)
        return space

    def _apply(self, space: _Namespaced, sync: Sync) -> None:
        """Bring the index in step with ``sync`` (call with ``space.lock`` held)."""
        if sync.reset and space.index is not None:
            space.index.clear()
        if sync.removed and space.index is not None:
            space.index.remove(sync.removed)
        if sync.added:
            if space.index is None:
                from budgetgraph.budgets.cache.index import FaissIndex  # FAISS loads with the first index

                space.index = FaissIndex(len(sync.added[0][1]))
            ids = [i for i, _ in sync.added]
            space.index.add(ids, np.vstack([v for _, v in sync.added]))
        space.unsaved += len(sync.added) + len(sync.removed) + int(sync.reset)
        space.cursor = sync.cursor

    # ------------------------------------------------------------------ snapshots

    def _path(self, key: str) -> Path:
        assert self.index_dir is not None
        return self.index_dir / f"{key}.faiss"

    def _load(self, key: str, space: _Namespaced) -> None:
        if self.index_dir is None or not self._path(key).exists():
            return
        try:
            from budgetgraph.budgets.cache.index import FaissIndex

            index, meta = FaissIndex.load(self._path(key))
            if meta.get("embedder") != self.embedder.name:
                return
            space.index, space.cursor = index, str(meta["cursor"])
            space.saved_at = self._clock()
            logger.debug("Loaded the cache index of %s (%d vectors)", key, len(index))
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Ignoring the cache index snapshot of `%s`: %s", key, exc)
            space.index, space.cursor = None, None

    def _maybe_save(self, key: str, space: _Namespaced) -> None:
        if self.index_dir is None or not space.unsaved:
            return
        if space.unsaved >= self.snapshot_every or self._clock() - space.saved_at >= self.snapshot_s:
            self._save(key, space)

    def _save(self, key: str, space: _Namespaced) -> None:
        if self.index_dir is None or space.index is None:
            return
        try:
            space.index.save(self._path(key), {"cursor": space.cursor, "embedder": self.embedder.name})
        except OSError as exc:
            logger.warning("Could not save the cache index of `%s`: %s", key, exc)
            return
        space.unsaved = 0
        space.saved_at = self._clock()


def _below(best: float, threshold: float, vector: Vector) -> Lookup:
    """The miss of a lookup whose nearest candidate scored ``best``, under the threshold."""
    return Lookup("miss", similarity=best, reason=f"nearest {best:.3f} < {threshold:.2f}", vector=vector)


def _cosine(query: Vector, stored: Vector | None, indexed: float) -> float:
    """The cosine of two normalised vectors, or the index's score when the stored vector is missing."""
    return indexed if stored is None else float(np.dot(query, stored))


__all__ = ["Lookup", "SemanticCache"]
