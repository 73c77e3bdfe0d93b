"""Measure the cache on labelled pairs: what ``budgetgraph cache eval`` runs.

Pairs come as JSON Lines (optionally gzipped), either
``{"text_a", "text_b", "label"}`` (label 1: the same question) or
``{"origin", "similar"}`` (all the same). Every distinct ``text_a`` /
``origin`` is put into one fresh in-memory cache; then each ``text_b`` /
``similar`` is looked up through the same path as a real request (exact key,
FAISS, guard). A **correct hit** is a pair labelled 1 answered by its own
partner; any other hit is a **false hit**. Precision is correct hits over
hits; recall is correct hits over the pairs labelled 1.

With ``pairwise=True`` each pair gets a cache of its own holding only its
``text_a``: that scores the threshold and guard as a classifier of pairs, the
way published pair-classification figures (and the issue's cosine reference
on QQP) are computed. The retrieval setting also counts hits on another
stored question that is a duplicate of the query as false; those are counted
apart as :attr:`EvalResult.other_hits`, so their share of the false hits shows
what no pair-by-pair guard can remove.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budgetgraph.budgets.cache.base import Embedder, Eviction, Namespace, NewEntry, exact_key
from budgetgraph.budgets.cache.cache import SemanticCache
from budgetgraph.budgets.cache.guard import Guard
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cache.text import normalize

EVAL_NAMESPACE = Namespace(
    tenant="eval",
    node="eval",
    tier="eval",
    model="eval",
    prompt="eval",
    sampling="eval",
    schema="eval",
    embedder="eval",
)
"""The one namespace an evaluation cache uses."""


class PairsError(ValueError):
    """Raised when a pairs file is missing, unreadable, or has a line that is not a pair.

    Attributes:
        path: The file.
        line: The 1-based line at fault, or ``None`` for the file as a whole.
    """

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Pair:
    """One labelled pair.

    Attributes:
        stored: The text put into the cache (``text_a`` / ``origin``).
        query: The text looked up (``text_b`` / ``similar``).
        label: 1 when the two are the same question, else 0.
        category: The pair's kind when the file gives one (``paraphrase``, or
            the hard negative's ``action``, ``direction``, ...), else ``None``.
    """

    stored: str
    query: str
    label: int
    category: str | None = None


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a pairs file (``.gz`` is decompressed).

    Raises:
        PairsError: The file is missing or unreadable, a line is not JSON, or
            a line has neither ``text_a``/``text_b`` nor ``origin``/``similar``
            as strings (with ``label`` 0 or 1 in the first form).
    """
    name = str(path)
    try:
        opener: Callable[..., Any] = gzip.open if name.endswith(".gz") else open
        with opener(name, "rt", encoding="utf-8") as handle:
            pairs = list(_parse(handle, name))
    except OSError as exc:
        raise PairsError(f"cannot read the file: {exc.strerror or exc}", path=name) from exc
    except UnicodeDecodeError as exc:
        raise PairsError(f"not UTF-8 text: {exc.reason}", path=name) from exc
    if not pairs:
        raise PairsError("no pairs in the file", path=name)
    return pairs


def _parse(lines: Any, name: str) -> Iterator[Pair]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsError(f"not JSON: {exc.msg}", path=name, line=number) from exc
        if not isinstance(row, dict):
            raise PairsError("expected a JSON object", path=name, line=number)
        if isinstance(row.get("text_a"), str) and isinstance(row.get("text_b"), str):
            label = row.get("label")
            if label not in (0, 1) or isinstance(label, bool):
                raise PairsError("`label` must be 0 or 1", path=name, line=number)
            category = row.get("category")
            yield Pair(
                stored=row["text_a"],
                query=row["text_b"],
                label=int(label),
                category=category if isinstance(category, str) else None,
            )
        elif isinstance(row.get("origin"), str) and isinstance(row.get("similar"), str):
            yield Pair(stored=row["origin"], query=row["similar"], label=1)
        else:
            raise PairsError(
                'expected {"text_a", "text_b", "label"} or {"origin", "similar"} with string texts',
                path=name,
                line=number,
            )


def outside_sample(pairs: Sequence[Pair], size: int, seed: int) -> list[Pair]:
    """``pairs`` less the draw ``random.Random(seed).sample(pairs, size)`` and the pairs sharing its texts.

    What is left can be fitted on while that draw (what ``cache eval --sample
    size --seed seed`` scores) stays out of sample.
    """
    if size >= len(pairs):
        return []
    drawn = random.Random(seed).sample(list(pairs), size)
    held = {id(p) for p in drawn}
    texts = {normalize(t) for p in drawn for t in (p.stored, p.query)}
    return [
        p
        for p in pairs
        if id(p) not in held and normalize(p.stored) not in texts and normalize(p.query) not in texts
    ]


@dataclass(frozen=True)
class EvalResult:
    """Counts of one evaluation.

    Attributes:
        pairs: Lookups made (one per pair).
        positives: Pairs labelled 1.
        hits: Lookups that served an entry.
        correct_hits: Hits on a pair labelled 1 answered by its own partner.
        false_hits: Every other hit.
        misses: Lookups that served nothing.
        exact_hits: Hits by exact key (among ``hits``).
        other_hits: Hits served by a stored text other than the pair's own
            ``text_a`` (all false; always 0 when ``pairwise``).
        other_exact_hits: Those among ``other_hits`` whose stored text is the
            query itself (another pair's ``text_a`` equal to this ``text_b``).
        refusals: Lookups in which the guard refused at least one candidate.
        threshold: The threshold used.
        guard: Whether the guard was on.
        pairwise: Whether each pair had a cache of its own.
        categories: Per pair category (when the file has them):
            ``{category: (pairs, hits)}``; for a hard-negative category every
            hit is a false hit, for ``paraphrase`` every hit on its own partner
            is correct.
        refusals_by: Refusals by their category (``action``, ..., ``reworded``,
            ``ambiguous``, ``verifier``), over all lookups.
        refusals_in: ``{pair category: {refusal category: count}}``.
    """

    pairs: int
    positives: int
    hits: int
    correct_hits: int
    false_hits: int
    misses: int
    exact_hits: int
    other_hits: int
    other_exact_hits: int
    refusals: int
    threshold: float
    guard: bool
    pairwise: bool
    categories: dict[str, tuple[int, int]] = field(default_factory=dict)
    refusals_by: dict[str, int] = field(default_factory=dict)
    refusals_in: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        """Correct hits over hits (1.0 when there are no hits)."""
        return self.correct_hits / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        """Correct hits over pairs labelled 1."""
        return self.correct_hits / self.positives if self.positives else 0.0

    @property
    def own_precision_bound(self) -> float:
        """Precision if every false hit on a pair's own ``text_a`` were refused and nothing else changed.

        The ceiling of any guard that judges a request against one stored text:
        the hits on other stored texts stay false however that guard decides.
        """
        kept = self.correct_hits + self.other_hits
        return self.correct_hits / kept if kept else 1.0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups."""
        return self.hits / self.pairs if self.pairs else 0.0

    def summary(self) -> dict[str, Any]:
        """What ``cache eval --json`` prints: hits, correct and false hits, misses, precision, recall.

        With pair categories, also ``categories`` (``{category: {"pairs", "hits"}}``)
        and ``refusals`` (by refusal category, per pair category).
        """
        document: dict[str, Any] = {
            "hits": self.hits,
            "correct_hits": self.correct_hits,
            "false_hits": self.false_hits,
            "misses": self.misses,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "refusals_by": dict(self.refusals_by),
        }
        if self.categories:
            document["categories"] = {c: {"pairs": n, "hits": h} for c, (n, h) in self.categories.items()}
            document["refusals_in"] = {c: dict(r) for c, r in self.refusals_in.items()}
        return document


def evaluate(
    pairs: Sequence[Pair],
    embedder: Embedder,
    *,
    threshold: float,
    guard: Guard | None = None,
    pairwise: bool = False,
) -> EvalResult:
    """Run the evaluation described in the module docstring.

    Args:
        pairs: The labelled pairs.
        embedder: Embeds every distinct text once, in batches.
        threshold: The cache threshold (cosine).
        guard: The guard (default: the shipped one, on).
        pairwise: Give each pair a cache of its own.

    Returns:
        The counts.
    """
    guard = guard or Guard()
    stored = [normalize(p.stored) for p in pairs]
    queries = [normalize(p.query) for p in pairs]
    texts = list(dict.fromkeys(stored + queries))
    matrix = embedder.embed(texts)
    vectors = {text: matrix[i] for i, text in enumerate(texts)}
    hits = correct = exact = other = other_exact = refusals = 0
    categories: dict[str, list[int]] = {}
    refusals_by: Counter[str] = Counter()
    refusals_in: dict[str, Counter[str]] = {}
    shared = None if pairwise else _cache(embedder, guard, list(dict.fromkeys(stored)), vectors)
    for pair_stored, query, pair in zip(stored, queries, pairs, strict=True):
        cache = shared or _cache(embedder, guard, [pair_stored], vectors)
        lookup = cache.lookup(
            EVAL_NAMESPACE, key=exact_key(query), text=query, threshold=threshold, vector=vectors[query]
        )
        refusals += bool(lookup.refused)
        counted = categories.setdefault(pair.category, [0, 0]) if pair.category else None
        if counted is not None:
            counted[0] += 1
        if lookup.refused:
            why = lookup.category or "other"
            refusals_by[why] += 1
            if pair.category:
                refusals_in.setdefault(pair.category, Counter())[why] += 1
        if lookup.entry is None:
            continue
        if counted is not None:
            counted[1] += 1
        hits += 1
        exact += lookup.outcome == "exact"
        if lookup.entry.text != pair_stored:
            other += 1
            other_exact += lookup.outcome == "exact"
        else:
            correct += pair.label == 1
    return EvalResult(
        pairs=len(pairs),
        positives=sum(p.label for p in pairs),
        hits=hits,
        correct_hits=correct,
        false_hits=hits - correct,
        misses=len(pairs) - hits,
        exact_hits=exact,
        other_hits=other,
        other_exact_hits=other_exact,
        refusals=refusals,
        threshold=threshold,
        guard=guard.enabled,
        pairwise=pairwise,
        categories={c: (n, h) for c, (n, h) in categories.items()},
        refusals_by=dict(refusals_by),
        refusals_in={c: dict(r) for c, r in refusals_in.items()},
    )


def _cache(embedder: Embedder, guard: Guard, texts: Sequence[str], vectors: dict[str, Any]) -> SemanticCache:
    store = MemoryStore(Eviction(ttl_s=None, max_entries=max(1, len(texts))))
    store.add_many(
        [
            NewEntry(
                namespace=EVAL_NAMESPACE,
                key=exact_key(text),
                text=text,
                vector=np.asarray(vectors[text], dtype=np.float32),
                response={"text": text},
                model="eval",
            )
            for text in texts
        ]
    )
    return SemanticCache(store, embedder, guard=guard, flush_s=float("inf"))


__all__ = ["EVAL_NAMESPACE", "EvalResult", "Pair", "PairsError", "evaluate", "outside_sample", "read_pairs"]
