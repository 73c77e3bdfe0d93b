"""The similarity policy: when a stored answer may be served for a new request.

A candidate whose cosine similarity clears the threshold is served only if the
guard finds nothing that changes the decision. In order:

1. **Ambiguity.** When the two nearest stored requests are both above the
   threshold and within :attr:`Guard.ambiguity_margin` of each other, the
   request sits between two different questions; serving either is a guess.
2. **What differs** (:func:`budgetgraph.budgets.cache.diff.compare`). The two
   requests are aligned and each differing span is judged: a changed quantity,
   a negation, a reversed direction or order, the opposite polarity, another
   actor, an added qualifier, another action. Any of these refuses, whatever
   the cosine: all-MiniLM-L6-v2 puts such pairs at 0.85 to 0.99.
   Requests that differ only in abbreviations written out ("SLA" / "service
   level agreement") are judged so from :attr:`Guard.expansion_floor` up,
   under the threshold, since the embedder puts them far apart.
3. **Rewording.** Requests worded differently throughout have no single span
   to judge; their required similarity rises with the share of content words
   without a counterpart (:attr:`Guard.reworded_slope`).
4. **Verifier** (optional, off by default). A duplicate classifier fitted on
   labelled pairs of the workload (:mod:`budgetgraph.budgets.cache.verifier`)
   refuses a candidate whose duplicate probability is under its cutoff. It
   takes the place of the checks on a request's words (:data:`VERIFIED`:
   another action, actor or qualifier, rewording), whose refusals it may
   overrule; the others stand.

Every refusal carries a category (:data:`REFUSAL_CATEGORIES`): the cache
counts them per namespace (``budgetgraph cache stats``), the cache plugin puts
them on the spend row's decision, and ``budgetgraph cache eval`` counts them
per category of labelled pair.

The constants were fitted on ``bench/data/decision_pairs/train.jsonl``,
``extra_train.jsonl`` and ``fresh_train.jsonl`` (and the errors of
``extra_holdout.jsonl``, once it had been scored) and checked on
``paraphrase_pairs.jsonl`` and QQP (``budgetgraph cache eval``; see
``bench/cache_bench.py``); ``holdout.jsonl`` and ``fresh_holdout.jsonl`` were
only scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from budgetgraph.budgets.cache.diff import CATEGORIES, Embed, Rules, compare, expands, may_expand
from budgetgraph.budgets.cache.text import features

if TYPE_CHECKING:
    from budgetgraph.budgets.cache.base import Vector
    from budgetgraph.budgets.cache.verifier import Verifier

DEFAULT_THRESHOLD = 0.78
"""Cosine similarity a semantic hit needs by default (all-MiniLM-L6-v2, with the guard).

Chosen on the evaluation data: the lowest threshold at which
``paraphrase_pairs.jsonl`` keeps a precision of at least 0.97.
"""

MAX_COMPARED = 400
"""Words (tokens) beyond which a request is not compared span by span and a semantic hit is
refused (``reworded``): decision requests run to a few dozen words, and the local embedder
reads 256 tokens at most."""

VERIFIED = frozenset({"action", "actor", "qualifier", "reworded"})
"""The refusals a verifier takes the place of: rules of thumb about which words of a request
matter (a replaced word, an added qualifier, rewording), which a classifier fitted on the
workload's labelled pairs answers from data. On QQP (5,000 pairs, pair by pair) the verifier
picking among what these rules refused too gives 0.888 precision at 0.452 recall; picking only
among what they passed, it gave 0.827 at 0.449."""

REFUSAL_CATEGORIES = (*CATEGORIES, "reworded", "similarity", "ambiguous", "verifier")
"""Every category a refusal can have: the seven kinds of difference that change a decision,
then ``reworded`` (a reworded request below its raised bar), ``similarity`` (below the
threshold), ``ambiguous`` (two candidates almost equally near) and ``verifier``."""


@dataclass(frozen=True)
class Verdict:
    """The guard's answer on one candidate.

    Attributes:
        accepted: True when the candidate may be served.
        required: The similarity the candidate needed (threshold plus penalties).
        reason: Why, in one line, starting with the category on a refusal
            (``"action: `buy` vs `lease` (similarity 0.962)"``).
        category: The refusal's category (:data:`REFUSAL_CATEGORIES`); ``None`` when accepted.
    """

    accepted: bool
    required: float
    reason: str
    category: str | None = None


@dataclass(frozen=True, kw_only=True)
class Guard:
    """Refuses a candidate above the threshold when the requests differ in what decides."""

    enabled: bool = True
    """False serves every candidate above the threshold (cosine only)."""
    ambiguity_margin: float = 0.01
    """Two candidates above the threshold closer than this (cosine) make the lookup ambiguous."""
    rules: Rules = field(default_factory=Rules)
    """The constants of the span comparison (:class:`~budgetgraph.budgets.cache.diff.Rules`)."""
    reworded_slope: float = 0.1
    """Similarity added to the requirement per unit share of unmatched content words (cosine)."""
    decision_reworded_slope: float = 0.2
    """:attr:`reworded_slope` when both requests ask for a decision: a decision reworded around
    one changed word (another side, the other direction) keeps its cosine, where documentation
    reworded freely needs the lower slope."""
    verifier: Verifier | None = None
    """Duplicate classifier run after the checks, in place of those on a request's words
    (:data:`VERIFIED`); ``None`` runs none."""
    expansion_floor: float = 0.4
    """Cosine from which a candidate under the threshold is still judged when the two requests
    differ only in abbreviations written out (:func:`~budgetgraph.budgets.cache.diff.expands`):
    all-MiniLM-L6-v2 puts "an SLA with the new 3PL" and "a service level agreement with the
    new third-party logistics provider" at 0.49. Ignored when the guard is off."""

    def floor(self, threshold: float) -> float:
        """The lowest cosine at which a candidate may be served (cosine, -1 to 1)."""
        return min(threshold, self.expansion_floor) if self.enabled else threshold

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
        embed: Embed | None = None,
    ) -> Verdict:
        """Decide whether the answer stored for ``candidate`` may serve ``query``.

        Args:
            query: The new request's normalised text.
            candidate: The stored request's normalised text.
            similarity: Their cosine similarity, -1 to 1.
            threshold: The namespace's threshold.
            vectors: The query's and the candidate's embeddings, for the
                verifier (without them it is skipped).
            embed: The cache embedder's ``embed``, to test replaced words for
                synonymy (without it only shared lemmas count as the same).

        Returns:
            The verdict, with its reason and, on a refusal, its category.
        """
        verdict = self.rules_verdict(query, candidate, similarity, threshold, embed)
        verifier = self.verifier if self.enabled else None
        if verifier is None or vectors is None or not self.verifier_decides(verdict):
            return verdict
        served, probability = verifier.accepts(*vectors, (query, candidate))
        if not served:
            cutoff = verifier.cutoff
            return Verdict(
                False,
                verdict.required,
                f"verifier: duplicate probability {probability:.2f} < {cutoff:.2f}",
                "verifier",
            )
        if not verdict.accepted:
            if similarity < threshold:
                return verdict  # under the threshold a verifier may refuse, never serve
            note = f"the verifier overrules `{verdict.category}` ({verdict.reason})"
            return Verdict(True, threshold, f"{note}: duplicate probability {probability:.2f}")
        return Verdict(True, verdict.required, f"{verdict.reason} (verifier {probability:.2f})")

    @staticmethod
    def verifier_decides(verdict: Verdict) -> bool:
        """Whether a verifier, when there is one, has the last word on this verdict of the rules.

        It does on what they passed, and on their refusals for the words of a request
        (:data:`VERIFIED`); refusals for what always changes a decision (a number, a
        negation, a direction, the other polarity), an ambiguous lookup or a similarity under
        the threshold stand.
        """
        return verdict.accepted or verdict.category in VERIFIED

    def rules_verdict(
        self, query: str, candidate: str, similarity: float, threshold: float, embed: Embed | None = None
    ) -> Verdict:
        """The checks before the verifier (:meth:`judge`'s arguments and verdict)."""
        below = Verdict(False, threshold, f"similarity: {similarity:.3f} < {threshold:.2f}", "similarity")
        if similarity < threshold and not (
            self.enabled and similarity >= self.expansion_floor and may_expand(query, candidate)
        ):
            return below
        if not self.enabled:
            return Verdict(True, threshold, f"similarity {similarity:.3f} >= {threshold:.2f}")
        mine, theirs = features(query), features(candidate)
        longest = max(len(mine.tokens), len(theirs.tokens))
        if longest > MAX_COMPARED:
            return Verdict(
                False, 1.0, f"reworded: {longest} words, too long to compare span by span", "reworded"
            )
        if similarity < threshold:
            if not expands(query, candidate, self.rules, embed):
                return below
            return Verdict(
                True,
                self.expansion_floor,
                f"abbreviations written out: similarity {similarity:.3f} under {threshold:.2f}",
            )
        comparison = compare(mine, theirs, self.rules, embed)
        found = comparison.difference
        if found is not None:
            return Verdict(
                False, 1.0, f"{found.category}: {found.detail} (similarity {similarity:.3f})", found.category
            )
        required = threshold
        note = ""
        if comparison.reworded:
            slope = self.decision_reworded_slope if comparison.decision else self.reworded_slope
            required = threshold + slope * comparison.unmatched_share
            note = f" (reworded: {comparison.unmatched_share:.2f} of content words unmatched)"
        if similarity < required:
            return Verdict(
                False,
                required,
                f"reworded: similarity {similarity:.3f} < {required:.2f} required{note}",
                "reworded",
            )
        return Verdict(True, required, f"similarity {similarity:.3f} >= {required:.2f}{note}")


__all__ = ["DEFAULT_THRESHOLD", "REFUSAL_CATEGORIES", "VERIFIED", "Guard", "Verdict"]
