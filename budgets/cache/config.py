"""The ``cache:`` section of ``budgets.yaml``, and building a cache from it.

Example::

    cache:
      threshold: 0.78              # cosine similarity a semantic hit needs
      ttl_s: 604800                # an answer is served for a week
      max_entries: 10000           # then the least recently used go
      store: disk                  # or redis://host:6379/0 (shared between processes)
      embedder: local              # or {base_url: ..., model: text-embedding-3-small}
      verifier: verifier.json      # optional: from `budgetgraph cache calibrate`
      confirm:                     # optional: ask a model about near hits
        band: [0.78, 0.90]         # similarities in [0.78, 0.90) are confirmed first
      nodes:
        reconcile: {threshold: 0.9}
        planner: {semantic: false} # exact matches only
        cto: {confirm: {band: [0.80, 0.95]}}
        coo: {confirm: false}      # the guard alone decides for this node

``confirm`` (off unless set) asks the cheapest model tier whether a semantic
candidate that passed the guard, but whose cosine similarity lies in ``band``
(``low`` included, ``high`` not), answers the new request: a "no" refuses it
like the guard would (category ``confirm``); above the band the candidate is
served without asking. The question is a model call of its own, priced and
held by the ``limits`` plugin and shown in the spend table; the reports' cache
saving is net of it. With no tier that has an endpoint (everything ``local``,
offline) nothing is asked and the guard alone decides. See
:mod:`budgetgraph.budgets.cache.confirm`.

The settings (:mod:`budgetgraph.settings`) may override two of these:
``BUDGETGRAPH_CACHE_URL`` (``--store``) the ``store``, and ``BUDGETGRAPH_CACHE=off``
``enabled`` (every call goes to the model, nothing is opened), e.g. for a test
suite whose runs must each reach the model; :meth:`CacheSettings.with_overrides`
applies them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from budgetgraph.budgets.cache.base import Embedder, EntryStore, Eviction
from budgetgraph.budgets.cache.cache import SemanticCache
from budgetgraph.budgets.cache.embedders import EndpointEmbedder, LocalEmbedder, endpoint_from_env
from budgetgraph.budgets.cache.guard import DEFAULT_THRESHOLD, Guard
from budgetgraph.budgets.cache.stores import DEFAULT_PREFIX, DISK, MEMORY, REDIS_SCHEMES, open_store
from budgetgraph.budgets.cache.verifier import Verifier
from budgetgraph.budgets.config import ApiKeyEnv
from budgetgraph.budgets.yamlfile import Number

DEFAULT_PATH = ".budgetgraph/cache"
"""Folder of the ``disk`` store, relative to the working directory."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointEmbedderSettings(_Strict):
    """An OpenAI-compatible embeddings endpoint."""

    model: str = Field(min_length=1)
    """Embedding model name, e.g. ``text-embedding-3-small``."""
    base_url: str | None = None
    """Base URL of the server; ``None`` reads the variable ``base_url_env``."""
    base_url_env: str = "OPENAI_BASE_URL"
    """Variable holding the base URL when ``base_url`` is not set."""
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY"
    """Variable holding the API key: a name ending in ``_API_KEY`` or one the operator allows."""
    max_input_tokens: StrictInt = Field(default=8191, gt=0)
    """The model's input window (tokens); longer requests get exact matches only."""


class ConfirmSettings(_Strict):
    """When a semantic hit is confirmed by a model before it is served (``cache: confirm:``)."""

    band: tuple[Number, Number]
    """``[low, high]``: cosine similarities at which a candidate the guard passed is confirmed
    first (``low <= similarity < high``); at ``high`` and above it is served without asking.
    Under the threshold the guard passes only abbreviations written out, and those are
    confirmed too, however low (below ``low`` as well)."""

    @field_validator("band")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 1:
            raise ValueError("give `[low, high]` with 0 <= low < high <= 1")
        return value

    def asks(self, similarity: float) -> bool:
        """Whether a candidate at ``similarity`` (cosine) is confirmed before it is served.

        Everything under ``high`` is: the guard serves a candidate under ``low`` only when it
        is under the threshold too (abbreviations written out), the least similar of all.
        """
        return similarity < self.band[1]


class NodeCacheSettings(_Strict):
    """Overrides for one node's calls; unset fields keep the section's value."""

    enabled: StrictBool | None = None
    """Cache this node's calls at all."""
    threshold: Number | None = Field(default=None, gt=0, le=1)
    """Cosine similarity a semantic hit needs."""
    semantic: StrictBool | None = None
    """False serves exact matches only."""
    confirm: ConfirmSettings | StrictBool | None = None
    """This node's confirmation band, or ``false`` for none (the guard alone decides)."""

    @field_validator("confirm")
    @classmethod
    def _false_or_band(cls, value: ConfirmSettings | bool | None) -> ConfirmSettings | bool | None:
        if value is True:
            raise ValueError("give `false` (never confirm) or `{band: [low, high]}`")
        return value


class CacheSettings(_Strict):
    """Schema of the ``cache:`` section."""

    enabled: StrictBool = True
    """Cache answers at all (the ``cache`` plugin must also be in the chain)."""
    threshold: Number = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    """Cosine similarity a semantic hit needs before the guard's own checks."""
    semantic: StrictBool = True
    """False serves exact matches only (no embedder is ever loaded)."""
    guard: StrictBool = True
    """Refuse candidates whose request differs in numbers, negation, entities or key terms."""
    ttl_s: Number | None = Field(default=7 * 24 * 3600, gt=0)
    """Seconds an answer is served after it is stored; ``null`` for no limit."""
    max_entries: StrictInt = Field(default=10_000, gt=0)
    """Entries the whole store keeps; the least recently used are evicted past it."""
    store: str = DISK
    """``disk`` (SQLite and index snapshots under ``path``), ``memory:``, or a ``redis://`` URL."""
    path: str = DEFAULT_PATH
    """Folder of the ``disk`` store, relative to the working directory."""
    redis_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    """Key prefix in Redis."""
    embedder: Literal["local"] | EndpointEmbedderSettings = "local"
    """``local`` (all-MiniLM-L6-v2, offline) or an OpenAI-compatible endpoint."""
    verifier: str | None = None
    """A verifier file written by ``budgetgraph cache calibrate`` (relative to the working
    directory): a duplicate classifier run after the guard's checks, in place of its checks on a
    request's words (another action, actor or qualifier, rewording). Off by default; see
    :mod:`budgetgraph.budgets.cache.verifier`."""
    confirm: ConfirmSettings | None = None
    """Confirm semantic hits in a band of similarity with the cheapest model tier before
    serving them; ``None`` (the default): never asked. See :mod:`budgetgraph.budgets.cache.confirm`."""
    nodes: dict[str, NodeCacheSettings] = {}
    """Per-node overrides, by graph node name (``planner``, ``cto``, ``coo``, ``reconcile``)."""

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value in (DISK, MEMORY) or value.startswith(REDIS_SCHEMES):
            return value
        raise ValueError("use `disk`, `memory:` or a redis:// URL")

    @model_validator(mode="after")
    def _verifier_needs_the_guard(self) -> CacheSettings:
        if self.verifier is not None and not self.guard:
            raise ValueError("`verifier` runs after the guard: set `guard: true` or drop `verifier`")
        return self

    def with_overrides(self, *, enabled: bool | None = None, store: str | None = None) -> CacheSettings:
        """These settings with the process-wide overrides applied (``None`` keeps the file's value).

        Args:
            enabled: ``BUDGETGRAPH_CACHE`` / ``--cache``: the cache on or off.
            store: ``BUDGETGRAPH_CACHE_URL`` / ``--store``: the store to open.
        """
        update: dict[str, object] = {}
        if enabled is not None:
            update["enabled"] = enabled
        if store is not None:
            update["store"] = store
        return self.model_copy(update=update) if update else self

    def enabled_for(self, node: str) -> bool:
        """Whether ``node``'s calls are cached."""
        override = self.nodes.get(node)
        return self.enabled and (override is None or override.enabled is not False)

    def threshold_for(self, node: str) -> float:
        """The threshold of ``node``'s calls."""
        override = self.nodes.get(node)
        return (
            override.threshold if override is not None and override.threshold is not None else self.threshold
        )

    def semantic_for(self, node: str) -> bool:
        """Whether ``node``'s calls get semantic lookups."""
        override = self.nodes.get(node)
        return override.semantic if override is not None and override.semantic is not None else self.semantic

    def confirm_for(self, node: str) -> ConfirmSettings | None:
        """``node``'s confirmation band, or ``None`` when its semantic hits are never confirmed."""
        override = self.nodes.get(node)
        if override is None or override.confirm is None:
            return self.confirm
        return override.confirm if isinstance(override.confirm, ConfirmSettings) else None


def build_embedder(settings: CacheSettings, env: Mapping[str, str] | None = None) -> Embedder:
    """The embedder the settings name (nothing is loaded yet)."""
    env = os.environ if env is None else env
    chosen = settings.embedder
    if isinstance(chosen, EndpointEmbedderSettings):
        return endpoint_from_env(
            chosen.model,
            base_url=chosen.base_url,
            base_url_env=chosen.base_url_env,
            api_key_env=chosen.api_key_env,
            env=env,
            max_tokens=chosen.max_input_tokens,
        )
    return LocalEmbedder()


def load_verifier(
    settings: CacheSettings,
    *,
    embedder: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Verifier | None:
    """The verifier the settings name, checked against the embedder, or ``None``.

    Args:
        settings: The ``cache:`` section.
        embedder: Name of the embedder the cache uses (default: the configured one's).
        env: Variables for the endpoint embedder (default: ``os.environ``).
        cwd: Folder a relative ``verifier`` path is relative to (default: the working directory).

    Raises:
        VerifierError: The file is missing or malformed, or was fitted with another embedder.
    """
    if settings.verifier is None:
        return None
    path = Path(settings.verifier)
    path = path if path.is_absolute() else (cwd or Path.cwd()) / path
    return Verifier.load(path, embedder=embedder or build_embedder(settings, env).name)


def build_cache(
    settings: CacheSettings,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    embedder: Embedder | None = None,
    verifier: Verifier | None = None,
) -> SemanticCache:
    """Open the store and build the cache the settings describe.

    Args:
        settings: The validated ``cache:`` section.
        env: Variables for the endpoint embedder (default: ``os.environ``).
        cwd: Folder ``path`` is relative to (default: the working directory).
        embedder: Use this embedder instead of the configured one.
        verifier: Use this verifier instead of loading the configured one.

    Raises:
        ValueError: The store is unknown.
        VerifierError: The configured verifier cannot be used.
        sqlite3.Error: The disk store cannot be opened.
    """
    env = os.environ if env is None else env
    embedder = embedder or build_embedder(settings, env)
    if verifier is None:
        verifier = load_verifier(settings, embedder=embedder.name, cwd=cwd)
    store = open_configured_store(settings, cwd=cwd)
    return SemanticCache(
        store,
        embedder,
        guard=Guard(enabled=settings.guard, verifier=verifier),
        index_dir=store_folder(settings, cwd) / "index" if settings.store == DISK else None,
    )


def store_folder(settings: CacheSettings, cwd: Path | None = None) -> Path:
    """The folder of the ``disk`` store: ``path``, relative to ``cwd`` (default: the working directory)."""
    folder = Path(settings.path)
    return folder if folder.is_absolute() else (cwd or Path.cwd()) / folder


def open_configured_store(settings: CacheSettings, *, cwd: Path | None = None) -> EntryStore:
    """Open the store named by ``settings.store`` (no environment is read).

    Raises:
        ValueError: The store is unknown.
        sqlite3.Error: The disk store cannot be opened.
    """
    eviction = Eviction(ttl_s=settings.ttl_s, max_entries=settings.max_entries)
    return open_store(
        settings.store, path=store_folder(settings, cwd), eviction=eviction, prefix=settings.redis_prefix
    )


__all__ = [
    "DEFAULT_PATH",
    "CacheSettings",
    "ConfirmSettings",
    "EndpointEmbedder",
    "EndpointEmbedderSettings",
    "NodeCacheSettings",
    "build_cache",
    "build_embedder",
    "load_verifier",
    "open_configured_store",
    "store_folder",
]
