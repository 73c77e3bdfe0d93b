"""What differs between a stored request and a new one, and whether it changes the decision.

:func:`compare` aligns the two requests' lemma sequences (``difflib``'s
Ratcliff-Obershelp matching), sets aside words that only moved (a reordered
clause, a passive for an active), and judges each span that differs. A span
changes the decision when it falls in one of these categories, checked in
this order:

- ``quantity``: a number, amount, date or unit that the other request lacks
  or writes otherwise ("$180k" / "$18k", "6 months" / "6 weeks");
- ``negation``: a negation cue in one request only ("should not", "without");
- ``direction``: an opposite relation word after the same term ("migrate
  *to* X" / "*from* X"), two terms that trade places around the same
  relation word ("from A to B" / "from B to A", "X under Y" / "Y under X"),
  or one stem under opposite prefixes ("upgrade" / "downgrade");
- ``polarity``: words of opposite valence in the VADER lexicon ("risks" /
  "benefits", "worst" / "best") or under a negating prefix ("advantages" /
  "disadvantages");
- ``actor``: another name where the stored request had one (team, site,
  region, vendor, product, model, person, time);
- ``qualifier``: content words added or dropped where the rest is the same
  ("for the EU region only", "temporarily", "if the round fails");
- ``action``: a word replaced by one that does not mean the same, in
  otherwise the same request ("buy" / "lease", "open" / "close"); a noun or
  adjective replaced so is an ``actor`` or a ``qualifier``.

Paraphrases differ too, in function words, word order, politeness and sentence
form ("is it a good idea to" for "should we"), in inflection, and in words of
like meaning. Replaced words count as the same when their embeddings (the
cache's own embedder, on the words alone) are at least
:attr:`Rules.synonym_similarity` apart from every opposition test above.
A request reworded throughout (more than :attr:`Rules.reworded_share` of its
content words without a counterpart) is left to the cosine threshold, which
rises with the share (:attr:`Rules.reworded_slope`): paraphrases written
freely share few words, and then no span stands out as *the* difference.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from budgetgraph.budgets.cache.lexicon import (
    DISCOURSE,
    RELATIONS,
    opposite_affix,
    opposite_relation,
    opposite_valence,
)
from budgetgraph.budgets.cache.text import TextFeatures, Token

CATEGORIES = ("action", "direction", "polarity", "actor", "negation", "quantity", "qualifier")
"""The kinds of difference that change a decision, as :func:`compare` names them."""

Embed = Callable[[Sequence[str]], np.ndarray]
"""Embeds texts into L2-normalised rows (the cache embedder's ``embed``)."""


@dataclass(frozen=True)
class Difference:
    """A span that changes the decision.

    Attributes:
        category: One of :data:`CATEGORIES`.
        detail: What differs, as written ("`buy` vs `lease`").
    """

    category: str
    detail: str


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found.

    Attributes:
        difference: The first span that changes the decision, or ``None``.
        unmatched_share: Share (0 to 1) of the two requests' content words with
            no counterpart in the other, moved words and discourse words aside.
        reworded: Whether the requests are worded too differently for a span to
            be judged alone (more differing content words than :attr:`Rules.small_edit`).
    """

    difference: Difference | None
    unmatched_share: float
    reworded: bool


@dataclass(frozen=True, kw_only=True)
class Rules:
    """The constants of :func:`compare`; fitted on ``bench/data/decision_pairs/train.jsonl`` only."""

    synonym_similarity: float = 0.6
    """Cosine (words embedded alone) at which two replaced words count as the same."""
    small_edit: int = 1
    """Differing spans with content words up to which each span is judged alone; past it the
    requests count as reworded throughout."""
    decision_edit: int = 2
    """The same limit when both requests ask for a decision (:func:`asks_decision`): there a
    replaced action, actor or qualifier is what the question turns on."""
    negation_share: float = 0.25
    """Unmatched content share up to which a negation in one request only refuses."""
    swap_gain: float = 0.04
    """Gain in alignment ratio that exchanging two terms must bring for a swap."""


def compare(new: TextFeatures, stored: TextFeatures, rules: Rules, embed: Embed | None = None) -> Comparison:
    """Judge what differs between ``new`` and ``stored`` (see the module docstring).

    Args:
        new: The new request's features.
        stored: The stored request's features.
        rules: The constants.
        embed: Embeds replaced words to test them for synonymy; without it no
            replaced word counts as a synonym unless it shares a lemma.

    Returns:
        The comparison; ``difference`` is ``None`` when nothing that differs
        changes the decision.
    """
    share = _unmatched_share(new, stored)
    spans = _spans(new, stored)
    changed = sum(1 for a, b in spans if _weight(a) + _weight(b))
    limit = rules.decision_edit if _asks_decision(new) and _asks_decision(stored) else rules.small_edit
    reworded = changed > limit
    decision = limit == rules.decision_edit
    found = _quantity(new, stored, decision=decision) or _negation(new, stored, share, rules)
    if found is not None:
        return Comparison(found, share, reworded)
    found = (
        _relation(new, stored, spans)
        or _swap(new, stored, rules)
        or _opposites(spans)
        or _names(new, stored, spans)
    )
    if found is None and not reworded:
        found = _edits(spans, rules, embed, decision=decision)
    return Comparison(found, share, reworded)


# ---------------------------------------------------------------------- numbers and negation


def _quantity(new: TextFeatures, stored: TextFeatures, *, decision: bool) -> Difference | None:
    """A changed number; in a decision, also a number on one side only ("for 30 days" added)."""
    mine, theirs = Counter(new.numbers), Counter(stored.numbers)
    only_new, only_stored = mine - theirs, theirs - mine
    if (only_new and only_stored) or (decision and (only_new or only_stored)):
        return Difference(
            "quantity", f"{_numbers(new, only_new) or 'none'} vs {_numbers(stored, only_stored) or 'none'}"
        )
    units: dict[str, set[str]] = {}
    for value, unit in stored.quantities:
        units.setdefault(value, set()).add(unit)
    for value, unit in sorted(new.quantities):
        others = units.get(value, set())
        if others and unit not in others:
            shown = dict(new.number_forms).get(value, value)
            return Difference("quantity", f"{shown} {unit} vs {shown} {sorted(others)[0]}")
    return None


def _numbers(f: TextFeatures, values: Counter[str]) -> str:
    written = dict(f.number_forms)
    return ", ".join(sorted(written.get(v, v) for v in values))


def _negation(new: TextFeatures, stored: TextFeatures, share: float, rules: Rules) -> Difference | None:
    if (new.negations > 0) == (stored.negations > 0) or share > rules.negation_share:
        return None
    negated = new if new.negations else stored
    cue = next(t.text for t in negated.tokens if t.negation)
    where = "the new request" if negated is new else "the stored request"
    return Difference("negation", f"`{cue}` in {where} only")


# ---------------------------------------------------------------------- alignment


Span = tuple[list[Token], list[Token]]
"""One differing stretch of the alignment: the stored request's tokens and the new one's."""


def _spans(new: TextFeatures, stored: TextFeatures) -> list[Span]:
    """The differing stretches, less the content words that only moved (found anywhere in the other)."""
    matcher = difflib.SequenceMatcher(None, stored.sequence, new.sequence, autojunk=False)
    spans: list[Span] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old = [
            t for t in stored.tokens[i1:i2] if not (t.content and (t.lemmas & new.words or _expands(t, new)))
        ]
        fresh = [
            t
            for t in new.tokens[j1:j2]
            if not (t.content and (t.lemmas & stored.words or _expands(t, stored)))
        ]
        if old or fresh:
            spans.append((old, fresh))
    return spans


MODALS = frozenset("should shall can could would must may might".split())
"""Auxiliaries that open a decision question ("should we", "can the team")."""

ASKING = frozenset("whether worth wise idea risk downside upside benefit cost tradeoff option".split())
"""Lemmas that frame a request as a decision ("assess whether", "is it worth")."""


def _asks_decision(f: TextFeatures) -> bool:
    """Whether the request asks for a decision: a modal question with a subject, or a decision frame."""
    lemmas = [t.lemma for t in f.tokens]
    for i, lemma in enumerate(lemmas[:-1]):
        if lemma in MODALS and (f.tokens[i + 1].tags & {"PRON", "DET"} or f.tokens[i + 1].entity):
            return True
    return bool(ASKING.intersection(lemmas))


asks_decision = _asks_decision


def _weight(tokens: list[Token]) -> int:
    """Content words of a span that are not discourse words."""
    return sum(t.content and t.lemma not in DISCOURSE for t in tokens)


def _unmatched_share(new: TextFeatures, stored: TextFeatures) -> float:
    mine = [t for t in new.tokens if t.content and t.lemma not in DISCOURSE]
    theirs = [t for t in stored.tokens if t.content and t.lemma not in DISCOURSE]
    if not mine and not theirs:
        return 0.0
    lone = sum(not t.lemmas & stored.words for t in mine) + sum(not t.lemmas & new.words for t in theirs)
    return lone / (len(mine) + len(theirs))


# ---------------------------------------------------------------------- direction and opposites


def _relation(new: TextFeatures, stored: TextFeatures, spans: list[Span]) -> Difference | None:
    for old, fresh in spans:
        for a in old:
            for b in fresh:
                category = opposite_relation(a.lemma, b.lemma)
                if category and _next_content(stored, a) & _next_content(new, b):
                    return Difference(category, f"`{a.text}` vs `{b.text}`")
    return None


def _next_content(f: TextFeatures, token: Token) -> frozenset[str]:
    """Lemmas of the first content word after ``token``."""
    after = [t for t in f.tokens if t.start > token.start and t.content]
    return after[0].lemmas if after else frozenset()


def _swap(new: TextFeatures, stored: TextFeatures, rules: Rules) -> Difference | None:
    """Two shared terms that trade places around the same relation word, the rest of the request in place.

    A reordered clause moves terms too; a swap is told from it by the
    alignment: exchanging the two terms in the stored request must bring it
    closer to the new one by at least :attr:`Rules.swap_gain` (difflib ratio).
    """
    first_new = _first_positions(new)
    first_stored = _first_positions(stored)
    shared = [w for w in first_stored if w in first_new]
    base = difflib.SequenceMatcher(None, stored.sequence, new.sequence, autojunk=False).ratio()
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            sx, sy, nx, ny = first_stored[x], first_stored[y], first_new[x], first_new[y]
            if (sx < sy) == (nx < ny):
                continue
            common = _relations(stored, min(sx, sy), max(sx, sy)) & _relations(new, min(nx, ny), max(nx, ny))
            if not common:
                continue
            exchanged = tuple(y if w == x else x if w == y else w for w in stored.sequence)
            gain = difflib.SequenceMatcher(None, exchanged, new.sequence, autojunk=False).ratio() - base
            if gain >= rules.swap_gain:
                shown_x, shown_y = stored.tokens[sx].text, stored.tokens[sy].text
                return Difference(
                    "direction", f"`{shown_x}` and `{shown_y}` trade places around `{sorted(common)[0]}`"
                )
    return None


def _first_positions(f: TextFeatures) -> dict[str, int]:
    positions: dict[str, int] = {}
    for i, t in enumerate(f.tokens):
        if t.content:
            positions.setdefault(t.lemma, i)
    return positions


def _relations(f: TextFeatures, start: int, end: int) -> set[str]:
    return {t.lemma for t in f.tokens[start + 1 : end] if t.lemma in RELATIONS}


def _opposites(spans: list[Span]) -> Difference | None:
    for old, fresh in spans:
        for a in old:
            if not a.content:
                continue
            for b in fresh:
                if not b.content:
                    continue
                category = opposite_affix(a.lemma, b.lemma) or opposite_affix(a.text.lower(), b.text.lower())
                if category is None and (
                    opposite_valence(a.text, b.text) or opposite_valence(a.lemma, b.lemma)
                ):
                    category = "polarity"
                if category is not None:
                    return Difference(category, f"`{a.text}` vs `{b.text}`")
    return None


# ---------------------------------------------------------------------- names and replaced words


def _names(new: TextFeatures, stored: TextFeatures, spans: list[Span]) -> Difference | None:
    names_new = [t for _, fresh in spans for t in fresh if t.entity and t.content and not _expands(t, stored)]
    names_stored = [t for old, _ in spans for t in old if t.entity and t.content and not _expands(t, new)]
    if names_new and names_stored:
        return Difference("actor", f"`{names_stored[0].text}` vs `{names_new[0].text}`")
    return None


def _expands(token: Token, other: TextFeatures) -> bool:
    if not token.entity:
        return False
    return _acronym_of(token, other)


def _acronym_of(token: Token, other: TextFeatures) -> bool:
    """Whether ``token`` is an acronym of words in ``other`` ("EU" / "European Union"), or the reverse."""
    letters = token.text.replace(".", "")
    if len(letters) >= 2 and letters.isupper():
        words = [t.text for t in other.tokens if t.text[:1].isupper()]
        initials = "".join(w[0] for w in words)
        return letters in initials
    # a word of an expansion ("European") against the acronym in the other request ("EU")
    return any(
        len(t.text) >= 2 and t.text.isupper() and token.text[:1] in t.text and not t.lemmas & token.lemmas
        for t in other.tokens
        if t.entity
    )


def _edits(spans: list[Span], rules: Rules, embed: Embed | None, *, decision: bool) -> Difference | None:
    """A small edit: a replaced word that is no synonym, or an added or dropped qualifier.

    A span added or dropped is a qualifier only when it is the one change of content.
    """
    alone = sum(1 for old, fresh in spans if _weight(old) + _weight(fresh)) == 1
    for old, fresh in spans:
        dropped = [t for t in old if t.content and t.lemma not in DISCOURSE]
        added = [t for t in fresh if t.content and t.lemma not in DISCOURSE]
        if dropped and added:
            left_dropped, left_added = _without_synonyms(dropped, added, rules, embed)
            if left_dropped and left_added:
                a, b = left_dropped[0], left_added[0]
                return Difference(_kind(a, b), f"`{a.text}` vs `{b.text}`")
            continue
        lone, whole = (added, fresh) if added else (dropped, old)
        if not lone or not (decision or alone and _restricts(lone, whole)):
            continue
        side = "added" if added else "dropped"
        shown = " ".join(t.text for t in whole)
        if decision and any(t.tags == {"VERB"} or t.tags == {"VERB", "NOUN"} for t in lone):
            return Difference("action", f"{side} `{shown}`")  # "cancel ... rather than renew"
        return Difference("qualifier", f"{side} `{shown}`")
    return None


def _restricts(content: list[Token], span: list[Token]) -> bool:
    """Whether an added or dropped span narrows the request: a phrase, or an adverb or name alone."""
    if len(content) >= 2 or any(t.entity for t in content):
        return True
    if any("NOUN" in t.tags for t in content) and any(t.tags & {"ADP", "SCONJ"} for t in span):
        return True  # "for contractors"
    return all(t.tags <= {"ADV"} for t in content)  # "temporarily"


def _without_synonyms(
    dropped: list[Token], added: list[Token], rules: Rules, embed: Embed | None
) -> tuple[list[Token], list[Token]]:
    """The replaced words left once each word with a synonym on the other side is set aside."""
    if embed is None:
        return dropped, added
    vectors = np.asarray(embed([t.text.lower() for t in dropped + added]), dtype=np.float32)
    similarity = vectors[: len(dropped)] @ vectors[len(dropped) :].T
    keep_dropped = [t for i, t in enumerate(dropped) if similarity[i].max() < rules.synonym_similarity]
    keep_added = [t for j, t in enumerate(added) if similarity[:, j].max() < rules.synonym_similarity]
    return keep_dropped, keep_added


def _kind(a: Token, b: Token) -> str:
    if a.entity or b.entity:
        return "actor"
    if "VERB" in a.tags and "VERB" in b.tags:
        return "action"
    if "NOUN" in a.tags or "NOUN" in b.tags:
        return "actor"
    return "qualifier"


__all__ = ["CATEGORIES", "Comparison", "Difference", "Rules", "compare"]
