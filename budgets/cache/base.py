"""The semantic cache's records and the interfaces its layers implement.

The cache is layered like GPTCache, with typed interfaces instead of string
factories:

* an :class:`Embedder` turns request text into normalised vectors
  (:mod:`budgetgraph.budgets.cache.embedders`);
* a vector index finds the nearest stored requests
  (:class:`~budgetgraph.budgets.cache.index.FaissIndex`);
* an :class:`EntryStore` keeps the entries, applies the :class:`Eviction`
  policy (TTL, then a size bound with LRU eviction), keeps the stats, and
  logs every change so each process can keep its index in step
  (:mod:`budgetgraph.budgets.cache.stores`: memory, SQLite on disk, Redis);
* the similarity policy decides whether a candidate may be served
  (:class:`~budgetgraph.budgets.cache.guard.Guard`).

:class:`~budgetgraph.budgets.cache.cache.SemanticCache` puts them together.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
"""One L2-normalised embedding, shape ``(dim,)``, float32."""

Matrix = npt.NDArray[np.float32]
"""L2-normalised embeddings, shape ``(n, dim)``, float32."""


@dataclass(frozen=True, kw_only=True)
class Namespace:
    """The scope of cache entries: an entry is never served outside its namespace.

    Attributes:
        tenant: Who pays.
        node: The graph node asking.
        tier: The tier answering.
        model: The model the tier calls.
        prompt: Hash of the prompt version: system messages and tool schemas.
        sampling: Hash of the sampling settings (temperature, completion cap).
        schema: Output schema as ``Name@hash`` of its JSON schema.
        embedder: The embedder whose vectors the namespace's index holds.
        endpoint: Hash of the server the model is called on (base URL and
            provider): the same model name on another server is another model.
    """

    tenant: str
    node: str
    tier: str
    model: str
    prompt: str
    sampling: str
    schema: str
    embedder: str
    endpoint: str = ""

    @cached_property
    def key(self) -> str:
        """A stable 24-hex-digit id of the namespace (for keys and file names)."""
        raw = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def label(self) -> str:
        """A readable path: ``tenant/node/tier/model/Schema@hash/prompt/sampling/embedder/endpoint``.

        ``budgetgraph cache clear --namespace`` matches it by prefix, so
        ``acme`` names a tenant's namespaces and ``acme/cto`` one node's.
        """
        return "/".join(
            (
                self.tenant,
                self.node,
                self.tier,
                self.model,
                self.schema,
                f"p-{self.prompt[:8]}",
                f"s-{self.sampling[:8]}",
                self.embedder,
                f"e-{self.endpoint[:8]}",
            )
        )


@dataclass(frozen=True, kw_only=True)
class NewEntry:
    """An answer to store.

    Attributes:
        namespace: Where it may be served.
        key: The exact key: hash of the normalised request.
        text: The normalised request text the guard compares (``""`` for
            exact-only entries).
        vector: The request's embedding, or ``None`` for exact-only entries.
        response: The answer as JSON-ready data.
        model: The model that wrote it.
        input_tokens: Its input tokens (tokens).
        output_tokens: Its output tokens (tokens).
        cost_micro_usd: What it cost, and so what each hit saves (micro-USD).
    """

    namespace: Namespace
    key: str
    text: str
    vector: Vector | None = field(compare=False)
    response: Mapping[str, Any]
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A stored answer.

    Attributes:
        id: Unique in its store (the vector index's id).
        namespace: The namespace key.
        key: The exact key.
        text: The normalised request text.
        vector: The request's embedding, or ``None``.
        response: The answer as JSON data.
        model: The model that wrote it.
        input_tokens: Its input tokens (tokens).
        output_tokens: Its output tokens (tokens).
        cost_micro_usd: Its cost (micro-USD).
        created_at: When it was stored (Unix time, s).
        expires_at: When it stops being served (Unix time, s), or ``None``.
    """

    id: int
    namespace: str
    key: str
    text: str
    vector: Vector | None = field(compare=False)
    response: dict[str, Any]
    model: str
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int
    created_at: float
    expires_at: float | None

    def expired(self, now: float) -> bool:
        """Whether the entry's TTL has run out at ``now`` (Unix time, s)."""
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> str:
        """Serialise as JSON; the vector is base64 of little-endian float32 (never pickle)."""
        data = asdict(self)
        data["vector"] = encode_vector(self.vector)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Entry:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: ``raw`` is not an entry.
        """
        data = json.loads(raw)
        try:
            data["vector"] = decode_vector(data["vector"])
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cache entry: {exc}") from exc

    @classmethod
    def of(cls, new: NewEntry, *, id: int, created_at: float, ttl_s: float | None) -> Entry:
        """Build the stored entry for ``new``."""
        return cls(
            id=id,
            namespace=new.namespace.key,
            key=new.key,
            text=new.text,
            vector=None if new.vector is None else np.asarray(new.vector, dtype=np.float32),
            response=dict(new.response),
            model=new.model,
            input_tokens=new.input_tokens,
            output_tokens=new.output_tokens,
            cost_micro_usd=new.cost_micro_usd,
            created_at=created_at,
            expires_at=None if ttl_s is None else created_at + ttl_s,
        )


def encode_vector(vector: Vector | None) -> str | None:
    """Base64 of the vector's little-endian float32 bytes, or ``None``."""
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str | None) -> Vector | None:
    """Inverse of :func:`encode_vector`."""
    if text is None:
        return None
    return np.frombuffer(binascii.a2b_base64(text), dtype="<f4").astype(np.float32)


@dataclass(frozen=True)
class Eviction:
    """When entries leave the store.

    Attributes:
        ttl_s: Seconds an entry is served after it is stored, or ``None`` for no limit.
        max_entries: Entries the whole store keeps; past it the least recently
            used (stored or hit) are evicted first.
    """

    ttl_s: float | None = 7 * 24 * 3600
    max_entries: int = 10_000


@dataclass(frozen=True)
class Sync:
    """Changes to a namespace's vectors since a cursor, for a process's index.

    Attributes:
        cursor: Where the next sync starts.
        reset: Drop the whole index before applying :attr:`added` (the cursor
            was too old, or the namespace was cleared).
        added: ``(entry id, vector)`` of entries added, in order.
        removed: Ids of entries removed (evicted, expired or cleared).
    """

    cursor: str
    reset: bool = False
    added: list[tuple[int, Vector]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)


Outcome = Literal["exact", "semantic", "miss"]


@dataclass
class Counts:
    """Lookups of one namespace, for the stats.

    Attributes:
        exact_hits: Lookups answered by the exact key.
        semantic_hits: Lookups answered by a similar request.
        misses: Lookups that found nothing to serve.
        refusals: Lookups in which the guard refused at least one candidate
            above the threshold.
        saved_micro_usd: What the hits saved: the sum of the served entries' cost (micro-USD).
        refused_action, refused_direction, refused_polarity, refused_actor,
        refused_negation, refused_quantity, refused_qualifier: Refusals by the
            kind of difference the guard found
            (:data:`~budgetgraph.budgets.cache.diff.CATEGORIES`).
        refused_other: Refusals for any other reason (a reworded request below
            its raised bar, an ambiguous lookup, the verifier).
    """

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    refusals: int = 0
    saved_micro_usd: int = 0
    refused_action: int = 0
    refused_direction: int = 0
    refused_polarity: int = 0
    refused_actor: int = 0
    refused_negation: int = 0
    refused_quantity: int = 0
    refused_qualifier: int = 0
    refused_other: int = 0

    REFUSAL_FIELDS = (
        "refused_action",
        "refused_direction",
        "refused_polarity",
        "refused_actor",
        "refused_negation",
        "refused_quantity",
        "refused_qualifier",
        "refused_other",
    )
    FIELDS = ("exact_hits", "semantic_hits", "misses", "refusals", "saved_micro_usd", *REFUSAL_FIELDS)

    @classmethod
    def refusal_field(cls, category: str | None) -> str:
        """The counter of a refusal of ``category`` (``refused_other`` for any but the seven kinds)."""
        name = f"refused_{category}"
        return name if name in cls.REFUSAL_FIELDS else "refused_other"

    def refusals_by_category(self) -> dict[str, int]:
        """The non-zero refusal counters by category (``action``, ..., ``other``)."""
        return {
            name.removeprefix("refused_"): getattr(self, name)
            for name in self.REFUSAL_FIELDS
            if getattr(self, name)
        }

    def add(self, other: Counts) -> None:
        """Add ``other`` in place."""
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        """The five headline counters by name (hits, misses, refusals, USD saved)."""
        return {name: getattr(self, name) for name in self.FIELDS[:5]}

    def counters(self) -> dict[str, int]:
        """Every counter by name, the refusals by category included (what the stores persist)."""
        return {name: getattr(self, name) for name in self.FIELDS}


@dataclass(frozen=True)
class NamespaceStats:
    """One namespace's entries and counters, as a store reports them.

    Attributes:
        key: The namespace key.
        label: Its readable label.
        entries: Entries it holds now.
        counts: Its lookup counters since they were last reset.
    """

    key: str
    label: str
    entries: int
    counts: Counts


@runtime_checkable
class EntryStore(Protocol):
    """Where entries live: memory, SQLite on disk, or Redis shared between processes."""

    eviction: Eviction
    """The TTL and size bound the store applies."""

    def find(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry of ``namespace`` with exact key ``key``, if any."""
        ...

    def get(self, ids: Sequence[int]) -> dict[int, Entry]:
        """Return the live entries among ``ids``, by id."""
        ...

    def find_and_sync(self, namespace: str, key: str, cursor: str | None) -> tuple[Entry | None, Sync | None]:
        """:meth:`find`, and on a miss :meth:`sync` too, in as few round trips as the store allows.

        The sync may be ``None`` when the entry was found (an exact hit needs no index).
        """
        ...

    def find_sync_get(
        self, namespace: str, key: str, cursor: str | None, ids: Sequence[int]
    ) -> tuple[Entry | None, Sync | None, dict[int, Entry]]:
        """:meth:`find_and_sync`, and on a miss :meth:`get` of ``ids`` too, in one round trip where it can.

        A caller that has the request's vector searches its index first and
        passes the nearest ids; when the sync brings changes, it searches again.
        """
        ...

    def add(self, new: NewEntry) -> Entry:
        """Store ``new`` (replacing an entry with the same key), then evict what the policy says."""
        ...

    def add_many(self, news: Sequence[NewEntry]) -> list[Entry]:
        """Store several entries at once (warming a cache, evaluations); as :meth:`add` each."""
        ...

    def touch(self, ids: Sequence[int]) -> None:
        """Mark entries as just used (for LRU eviction)."""
        ...

    def sync(self, namespace: str, cursor: str | None) -> Sync:
        """Return the namespace's vector changes after ``cursor`` (``None``: everything live)."""
        ...

    def record(self, namespace: Namespace, counts: Counts, used: Sequence[int] = ()) -> None:
        """Add ``counts`` to the namespace's stats and mark the entries ``used`` as just used.

        One transaction or round trip: it runs after every lookup.
        """
        ...

    def stats(self) -> list[NamespaceStats]:
        """Every namespace with entries or counters."""
        ...

    def clear(self, namespaces: Collection[str] | None = None, *, reset_stats: bool = False) -> int:
        """Remove the entries of ``namespaces`` (keys; ``None``: all) and return how many.

        Counters are kept unless ``reset_stats``.
        """
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class LocalRoundTrips:
    """The combined reads of a store in this process or on this disk: one read after another.

    A base class of the memory and SQLite stores, where a call costs no round
    trip; the Redis store does each in one script.
    """

    def find_and_sync(
        self: EntryStore, namespace: str, key: str, cursor: str | None
    ) -> tuple[Entry | None, Sync | None]:
        """:meth:`~EntryStore.find`, then :meth:`~EntryStore.sync` on a miss."""
        entry = self.find(namespace, key)
        return (entry, None) if entry is not None else (None, self.sync(namespace, cursor))

    def find_sync_get(
        self: EntryStore, namespace: str, key: str, cursor: str | None, ids: Sequence[int]
    ) -> tuple[Entry | None, Sync | None, dict[int, Entry]]:
        """:meth:`find_and_sync`, then :meth:`~EntryStore.get` of ``ids`` on a miss."""
        entry, sync = self.find_and_sync(namespace, key, cursor)
        return entry, sync, ({} if entry is not None else self.get(ids))


@runtime_checkable
class Embedder(Protocol):
    """Turns request text into L2-normalised vectors."""

    name: str
    """Identifies the model; part of every namespace, so vectors never mix."""

    def fits(self, text: str) -> bool:
        """Whether ``text`` fits the model's input window (longer text would be truncated)."""
        ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts``; returns shape ``(len(texts), dim)``, float32, L2-normalised."""
        ...


def exact_key(payload: Any) -> str:
    """SHA-256 of ``payload`` as canonical JSON (the exact key of a request)."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def short_hash(payload: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of :func:`exact_key`."""
    return exact_key(payload)[:length]


__all__ = [
    "Counts",
    "Embedder",
    "Entry",
    "EntryStore",
    "Eviction",
    "LocalRoundTrips",
    "Matrix",
    "Namespace",
    "NamespaceStats",
    "NewEntry",
    "Outcome",
    "Sync",
    "Vector",
    "decode_vector",
    "encode_vector",
    "exact_key",
    "short_hash",
]
