"""The semantic cache: exact hash first, then FAISS nearest neighbours, then a guard.

Layers (see :mod:`budgets.cache.base`): embedders (:mod:`~budgets.cache.embedders`),
the vector index (:mod:`~budgets.cache.index`, imported when an index is first
built, so a process whose cache is off never loads FAISS), entry stores with TTL and LRU
eviction (:mod:`~budgets.cache.stores`: memory, SQLite on disk, Redis), and the
similarity policy with its guard (:mod:`~budgets.cache.guard`).
:class:`SemanticCache` joins them; the ``cache`` budget plugin
(:mod:`budgets.plugins.cache`) puts it in front of the model.
"""

from __future__ import annotations

from budgets.cache.base import (
    Counts,
    Embedder,
    Entry,
    EntryStore,
    Eviction,
    Namespace,
    NamespaceStats,
    NewEntry,
    Sync,
)
from budgets.cache.cache import Lookup, SemanticCache
from budgets.cache.config import CACHE_URL_ENV, CacheSettings, build_cache
from budgets.cache.embedders import EndpointEmbedder, LocalEmbedder
from budgets.cache.guard import DEFAULT_THRESHOLD, Guard, Verdict

__all__ = [
    "CACHE_URL_ENV",
    "DEFAULT_THRESHOLD",
    "CacheSettings",
    "Counts",
    "Embedder",
    "EndpointEmbedder",
    "Entry",
    "EntryStore",
    "Eviction",
    "Guard",
    "LocalEmbedder",
    "Lookup",
    "Namespace",
    "NamespaceStats",
    "NewEntry",
    "SemanticCache",
    "Sync",
    "Verdict",
    "build_cache",
]
