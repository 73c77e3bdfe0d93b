"""The semantic cache: exact hash first, then FAISS nearest neighbours, then a guard.

Layers (see :mod:`budgetgraph.budgets.cache.base`): embedders (:mod:`~budgetgraph.budgets.cache.embedders`),
the vector index (:mod:`~budgetgraph.budgets.cache.index`, imported when an index is first
built, so a process whose cache is off never loads FAISS), entry stores with TTL and LRU
eviction (:mod:`~budgetgraph.budgets.cache.stores`: memory, SQLite on disk, Redis), and the
similarity policy with its guard (:mod:`~budgetgraph.budgets.cache.guard`).
:class:`SemanticCache` joins them; the ``cache`` budget plugin
(:mod:`budgetgraph.budgets.plugins.cache`) puts it in front of the model.
"""

from __future__ import annotations

from budgetgraph.budgets.cache.base import (
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
from budgetgraph.budgets.cache.cache import Lookup, SemanticCache
from budgetgraph.budgets.cache.config import CacheSettings, build_cache
from budgetgraph.budgets.cache.embedders import EndpointEmbedder, LocalEmbedder
from budgetgraph.budgets.cache.guard import DEFAULT_THRESHOLD, Guard, Verdict

__all__ = [
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
