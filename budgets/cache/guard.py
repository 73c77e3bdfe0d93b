"""The similarity policy: when a stored answer may be served for a new request.

A candidate whose cosine similarity clears the threshold is served only if
the guard finds nothing that changes the answer. The guard's checks, in order,
and why each one is here (measured with ``budgetgraph cache eval`` on
``paraphrase_pairs.jsonl`` and on QQP pairs disjoint from the fixed
evaluation sample; see ``bench/cache_bench.py``):

1. **Ambiguity.** When the two nearest stored requests are both above the
   threshold and within :attr:`Guard.ambiguity_margin` of each other, the
   request sits between two different questions; serving either is a guess.
   The largest single gain on both data sets (paraphrase precision 0.955 ->
   0.97+ at the same threshold).
2. **Numbers and units.** Each request has a number the other lacks ("35
   weeks" vs "37 weeks", "top 5" vs "top ten"), or the same number has another
   unit ("200 ms" vs "200 s", "4 months" vs "4 weeks"): refused.
3. **Reversal.** The requests share nearly all their key terms (at most
   :attr:`Guard.reversal_max_unmatched` of them without a counterpart, the
   swapped words aside) but a negation appears in only one, a pair of
   opposite or alternative words is swapped ("gain" / "lose", "senior" /
   "junior", "annual" / "monthly", "migrate to" / "migrate from"), or two key
   terms trade places around a relation word ("from AWS to GCP" / "from GCP
   to AWS", "Python faster than Java"): refused. A negation in otherwise
   differently worded requests is only a penalty, because paraphrases often
   say "not mandatory" for "optional". The units, alternatives and role swaps
   came from probing business questions, where MiniLM puts such pairs at
   0.89-0.996; on the evaluation data they cost one paraphrase hit of 999
   (hit rate 0.859 -> 0.858, precision unchanged at 0.973) and refuse one more
   QQP pair labelled different.
4. **Named entities.** Each request names something the other does not
   ("Java" vs "Python", "Penang" vs "Singapore"): refused. An entity named in
   only one of them raises the required similarity by
   :attr:`Guard.entity_penalty`.
5. **Key terms in short requests.** A request of at most
   :attr:`Guard.short_words` content words turns on every word, so its
   required similarity rises to ``key_similarity - key_slope * u``, where
   ``u`` is the share of content words without a counterpart in the other
   request: when the wording is nearly the same, the few words that differ
   must be near-synonyms for the cosine to stay that high. Lexically distant
   paraphrases keep the plain threshold.

6. **Verifier** (optional, off by default). A duplicate classifier fitted on
   labelled pairs of the workload (:mod:`budgetgraph.budgets.cache.verifier`) refuses a
   candidate whose duplicate probability is under its cutoff. It takes the
   place of check 5, a rule of thumb about the same question (which words of
   a short request matter) that the classifier answers from data: on QQP
   pairs outside the evaluation sample, check 5 keeps 0.475 of the duplicates
   and the verifier behind it has only that to choose from; without check 5
   the guard keeps 0.771, and the verifier's held-out precision at recall
   0.45 rises from 0.829 to 0.841 (``budgetgraph cache calibrate
   --exclude-sample 5000 --min-recall 0.45``; README, Benchmarks).

The constants were fitted on the calibration split named above and checked on
the fixed QQP sample and the paraphrase file; they are in cosine units.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from budgetgraph.budgets.cache.text import (
    TextFeatures,
    features,
    opposite_terms,
    role_swap,
    unit_clash,
    unmatched,
)

if TYPE_CHECKING:
    from budgetgraph.budgets.cache.base import Vector
    from budgetgraph.budgets.cache.verifier import Verifier

DEFAULT_THRESHOLD = 0.78
"""Cosine similarity a semantic hit needs by default (all-MiniLM-L6-v2, with the guard).

Chosen on the evaluation data: the lowest threshold at which
``paraphrase_pairs.jsonl`` keeps a precision of at least 0.97; its hit rate is
then 0.86.
"""


@dataclass(frozen=True)
class Verdict:
    """The guard's answer on one candidate.

    Attributes:
        accepted: True when the candidate may be served.
        required: The similarity the candidate needed (threshold plus penalties).
        reason: Why, in one line (shown in the spend table's decisions).
    """

    accepted: bool
    required: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class Guard:
    """Checks that refuse a candidate above the threshold when the requests differ in what matters."""

    enabled: bool = True
    """False serves every candidate above the threshold (cosine only)."""
    ambiguity_margin: float = 0.01
    """Two candidates above the threshold closer than this (cosine) make the lookup ambiguous."""
    reversal_max_unmatched: float = 0.25
    """Share of unmatched content words up to which a negation or opposite-word swap refuses."""
    negation_penalty: float = 0.03
    """Similarity added to the requirement when a negation is in one request only (cosine)."""
    entity_penalty: float = 0.04
    """Similarity added to the requirement when an entity is named in one request only (cosine)."""
    short_words: int = 6
    """Requests with at most this many content words get the key-term requirement."""
    key_similarity: float = 0.94
    """Key-term requirement when the two short requests share every content word (cosine)."""
    key_slope: float = 0.2
    """How much the key-term requirement falls per unit share of unmatched content words."""
    verifier: Verifier | None = None
    """Duplicate classifier run after the checks above pass, in place of check 5; ``None`` runs none."""

    def ambiguous(self, best: float, second: float | None, threshold: float) -> bool:
        """Whether a lookup whose two nearest candidates score ``best`` and ``second`` is a guess."""
        if not self.enabled or second is None or second < threshold:
            return False
        return best - second < self.ambiguity_margin

    def judge(
        self,
        query: str,
        candidate: str,
        similarity: float,
        threshold: float,
        vectors: tuple[Vector, Vector] | None = None,
    ) -> Verdict:
        """Decide whether the answer stored for ``candidate`` may serve ``query``.

        Args:
            query: The new request's normalised text.
            candidate: The stored request's normalised text.
            similarity: Their cosine similarity, -1 to 1.
            threshold: The namespace's threshold.
            vectors: The query's and the candidate's embeddings, for the
                verifier (without them it is skipped).

        Returns:
            The verdict, with its reason.
        """
        verifier = self.verifier if self.enabled and vectors is not None else None
        verdict = self.rules(query, candidate, similarity, threshold, key_terms=verifier is None)
        if verifier is None or vectors is None or not verdict.accepted:
            return verdict
        served, probability = verifier.accepts(*vectors)
        if not served:
            cutoff = verifier.cutoff
            return Verdict(
                False, verdict.required, f"verifier: duplicate probability {probability:.2f} < {cutoff:.2f}"
            )
        return Verdict(True, verdict.required, f"{verdict.reason} (verifier {probability:.2f})")

    def rules(
        self, query: str, candidate: str, similarity: float, threshold: float, *, key_terms: bool = True
    ) -> Verdict:
        """The checks before the verifier; with ``key_terms``, what :meth:`judge` decides without one.

        The arguments and the verdict are :meth:`judge`'s; ``key_terms`` applies
        the key-term check for short requests (check 5), which :meth:`judge`
        leaves to the verifier when there is one.
        """
        if similarity < threshold:
            return Verdict(False, threshold, f"similarity {similarity:.3f} < {threshold:.2f}")
        if not self.enabled:
            return Verdict(True, threshold, f"similarity {similarity:.3f} >= {threshold:.2f}")
        q, c = features(query), features(candidate)
        refusal = _hard_difference(q, c, self.reversal_max_unmatched)
        if refusal is not None:
            return Verdict(False, 1.0, f"{refusal} (similarity {similarity:.3f})")
        unmatched_share = _unmatched_share(q, c)
        penalty, notes = 0.0, []
        if (q.negations > 0) != (c.negations > 0):
            penalty += self.negation_penalty
            notes.append(f"+{self.negation_penalty:.2f} negation in one request only")
        lone = unmatched(q.entities, c.words) | unmatched(c.entities, q.words)
        if lone:
            penalty += self.entity_penalty
            name = _entity(q, lone) if lone & q.entities else _entity(c, lone)
            notes.append(f"+{self.entity_penalty:.2f} `{name}` named in one request only")
        base = threshold
        if key_terms and min(len(q.content), len(c.content)) <= self.short_words:
            key = self.key_similarity - self.key_slope * unmatched_share
            if key > base:
                base = key
                notes.insert(0, f"short request: key terms need {key:.2f}")
        required = base + penalty
        detail = f" ({'; '.join(notes)})" if notes else ""
        if similarity < required:
            return Verdict(False, required, f"similarity {similarity:.3f} < {required:.2f} required{detail}")
        return Verdict(True, required, f"similarity {similarity:.3f} >= {required:.2f}{detail}")


def _hard_difference(q: TextFeatures, c: TextFeatures, reversal_max_unmatched: float) -> str | None:
    only_q, only_c = Counter(q.numbers) - Counter(c.numbers), Counter(c.numbers) - Counter(q.numbers)
    if only_q and only_c:
        return f"numbers differ: {_shown(q, only_q)} vs {_shown(c, only_c)}"
    clash = unit_clash(q, c)
    if clash is not None:
        return f"units differ: {clash[0]} vs {clash[1]}"
    if (q.negations > 0) != (c.negations > 0) and _unmatched_share(q, c) <= reversal_max_unmatched:
        where = "the new request" if q.negations else "the cached request"
        return f"negation differs: only {where} is negated"
    swap = opposite_terms(q, c)
    if swap is not None and _unmatched_share(q, c, ignore=frozenset(swap)) <= reversal_max_unmatched:
        return f"opposite terms: `{swap[0]}` vs `{swap[1]}`"
    roles = role_swap(q, c)
    if roles is not None and _unmatched_share(q, c) <= reversal_max_unmatched:
        return f"roles swapped: `{roles[0]}` and `{roles[1]}` trade places"
    ent_q, ent_c = unmatched(q.entities, c.words), unmatched(c.entities, q.words)
    if ent_q and ent_c:
        return f"named entities differ: `{_entity(q, ent_q)}` vs `{_entity(c, ent_c)}`"
    return None


def _unmatched_share(q: TextFeatures, c: TextFeatures, ignore: frozenset[str] = frozenset()) -> float:
    """Share of the two requests' content words without a counterpart in the other (0 to 1)."""
    mine, theirs = q.content - ignore, c.content - ignore
    total = len(mine) + len(theirs)
    if total == 0:
        return 0.0
    return (len(unmatched(mine, c.words)) + len(unmatched(theirs, q.words))) / total


def _shown(f: TextFeatures, values: Counter[str]) -> str:
    written = dict(f.number_forms)
    return ", ".join(sorted(written.get(v, v) for v in values))


def _entity(f: TextFeatures, stems: frozenset[str]) -> str:
    written = dict(f.entity_forms)
    first = sorted(stems & f.entities)[0] if stems & f.entities else sorted(stems)[0]
    return written.get(first, first)


__all__ = ["DEFAULT_THRESHOLD", "Guard", "Verdict"]
