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
  *to* X" / "*from* X"), terms that cross the same relation word ("from
  React Native to Swift" / "from Swift to React Native", "replace our
  recruiters with an RPO" / "an RPO with our recruiters", "X under Y" /
  "Y under X"; in a decision only), or one stem under opposite prefixes
  ("upgrade" / "downgrade");
- ``polarity``: the other side of a cost-benefit question anywhere in the
  request, reworded or not ("costs" / "savings", "advantages" / "drawbacks":
  :data:`~budgetgraph.budgets.cache.lexicon.SIDES`), words of opposite valence in
  the VADER lexicon ("risks" / "benefits", "worst" / "best"), one word replaced by one far from it in
  valence in a request ("go wrong" / "go right"), or words under a negating
  prefix ("advantages" / "disadvantages");
- ``actor``: another name where the stored request had one (team, site,
  region, vendor, product, model, person, time);
- ``qualifier``: content words added or dropped where the rest is the same
  ("for the EU region only", "temporarily", "if the round fails");
- ``action``: a word replaced by one that does not mean the same, in
  otherwise the same request ("buy" / "lease", "open" / "close"); a noun or
  adjective replaced so is an ``actor`` or a ``qualifier``. In a decision the
  verb asked about ("should we *buy*", "is it worth *selling*", "should legal
  *settle*") is compared however much the rest is reworded. A question opening
  with a modal asks for a decision whatever its subject ("should design report").

Replaced words are judged only when one of the requests is a request (a
question, or a first person: :attr:`TextFeatures.request`). Two statements
("Albumentations is a Python library" / "package") have no decision to change;
they are left to the cosine threshold after the checks on numbers, negation,
relation words, opposites and names.

Paraphrases differ too, in function words, word order, politeness and sentence
form ("is it a good idea to" for "should we"; phatic clauses, a frame before
"whether" such as "I need a decision on" and a "no rush" are dropped by
:func:`budgetgraph.budgets.cache.text.features`; "to" before a verb, as in
"to cut costs", relates no terms), in inflection, in
abbreviations ("ER" / "emergency room", "k8s" / "Kubernetes", "Q3" / "third
quarter", "Eng" / "Engineering": :func:`_abbreviations`), in how an amount is
written ("36 months" / "3 years"), and in words of like meaning. A request
that differs from a stored one only in abbreviations written out is served
under the threshold too (:func:`expands`), since the embedder puts "SLA" far
from "service level agreement". Replaced words
count as the same when their embeddings (the cache's own embedder, on the words
alone) are at least :attr:`Rules.synonym_similarity` apart
(:attr:`Rules.decision_synonym_similarity` in a decision, where antonyms such as
"buy" / "sell" embed as close as synonyms), names never, and only after every
opposition test above.
A request reworded throughout (more than :attr:`Rules.reworded_share` of its
content words without a counterpart) is left to the cosine threshold, which
rises with the share (:attr:`Rules.reworded_slope`): paraphrases written
freely share few words, and then no span stands out as *the* difference.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from budgetgraph.budgets.cache.lexicon import (
    CONTRASTS,
    DISCOURSE,
    FRAMING,
    FUNCTION_WORDS,
    OPPOSED,
    PEOPLE,
    RELATIONS,
    RESTRICTIVES,
    REVERSALS,
    analyse,
    opposite_affix,
    opposite_relation,
    opposite_valence,
    side,
    synonyms,
    valence,
)
from budgetgraph.budgets.cache.text import NUMBER_WORDS, UNITS, TextFeatures, Token, features

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
        decision: Whether both ask for a decision (:func:`asks_decision`).
    """

    difference: Difference | None
    unmatched_share: float
    reworded: bool
    decision: bool = False


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
    swap_alignment: float = 0.6
    """Alignment ratio (difflib) the two requests need before a swap is looked for: a swap
    leaves the rest in place (0.68 to 0.86 in the labelled swaps); clauses moved around
    ("With steel up 18%, should we ..., even though ..." / "Even though ..., should we ...
    with steel up 18%?") leave 0.46."""
    decision_synonym_similarity: float = 0.8
    """:attr:`synonym_similarity` when both requests ask for a decision: antonyms embed as
    close as synonyms ("bear" / "bull"), so there a replaced word must be nearer still."""
    valence_gap: float = 2.0
    """Gap in VADER valence between a replaced word and its replacement that makes the change a
    ``polarity`` one in a decision ("wrong" -2.1 / "right" unrated)."""
    window: int = 3
    """Content words read on each side of a relation word for a crossed swap (:func:`_crossed`)."""


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
    covered = _abbreviations(new, stored)
    spans = _spans(new, stored, covered)
    changed = sum(1 for a, b in spans if _weight(a) + _weight(b))
    decision = _asks_decision(new) and _asks_decision(stored)
    limit = rules.decision_edit if decision else rules.small_edit
    reworded = changed > limit
    found = (
        _quantity(new, stored, covered, decision=decision)
        or _negation(new, stored, share, rules)
        or _units(spans)
        or _relation(new, stored, spans)
    )
    if found is None and (decision or new.request or stored.request):
        # A request ("we want to move X to Y", "should we ...?") whose terms trade roles asks
        # another thing; statements (documentation) reorder clauses too freely to be read so.
        found = _crossed(new, stored, rules) or _swap(new, stored, rules)
    if found is None and (new.request or stored.request):
        found = _valence_gap(spans, rules)
    if found is None and (new.request or stored.request):
        found = _sides(new, stored)
    found = found or _opposites(spans) or _names(spans, covered)
    if found is None and (new.request or stored.request):
        found = (
            _other_unit(new, stored, covered, rules, embed)
            or _one_sided(new, stored, RESTRICTIVES, "qualifier")
            or _one_sided(new, stored, REVERSALS, "direction")
            or _one_sided(new, stored, OPPOSED, "polarity")
            or _other_people(new, stored, rules, embed)
        )
    if found is None and decision:
        found = _main_actions(new, stored, rules, embed)
    if found is None and not reworded and (decision or new.request or stored.request):
        found = _edits(spans, rules, embed, decision=decision)
    if found is None and (new.request or stored.request):  # last: another action names it better
        found = _one_sided(new, stored, CONTRASTS, "qualifier")
    return Comparison(found, share, reworded, decision)


def expands(new: str, stored: str, rules: Rules, embed: Embed | None = None) -> bool:
    """Whether two requests are the same once the abbreviations written out in one are abbreviated.

    "Should we sign an SLA with the new ISP?" / "... a service level agreement with the new
    internet service provider?". all-MiniLM-L6-v2 puts such pairs at cosine 0.44 to 0.77,
    under any threshold that keeps near misses out; the guard serves them on this check
    instead, from :attr:`~budgetgraph.budgets.cache.guard.Guard.expansion_floor` up.

    Fewer forms count than above the threshold (:func:`_written_out`): an expansion is a
    name throughout or holds none ("Acme water services" is no "AWS"), a clipping is no
    word of its own ("car" is no "carpet"), and the only head noun it may add is a
    provider's or a system's. Each expansion is then replaced by its abbreviation and the two
    requests compared whole (:func:`compare`): a negation, a reversed direction, another
    number or any other difference still refuses, and so does rewording.

    Args:
        new: The new request's normalised text.
        stored: The stored request's normalised text.
        rules: The constants of :func:`compare`.
        embed: As for :func:`compare`.
    """
    mine, theirs = features(new), features(stored)
    found = _written_out(mine, theirs)
    if not found:
        return False
    texts = {id(mine): unicodedata.normalize("NFKC", new), id(theirs): unicodedata.normalize("NFKC", stored)}
    for long, abbreviation, run in sorted(found, key=lambda f: -f[2][0].start):
        text = texts[id(long)]
        end = run[-1].start + len(run[-1].text)
        texts[id(long)] = text[: run[0].start] + abbreviation.text + text[end:]
    new_text, stored_text = texts[id(mine)], texts[id(theirs)]
    shorter, other = features(new_text), features(stored_text)
    if shorter.negations != other.negations or shorter.numbers != other.numbers:
        return False
    if ({t.lemma for t in shorter.tokens} ^ {t.lemma for t in other.tokens}) - _ARTICLES:
        return False  # a word more or less, even a function word ("everyone *except* the ISP")
    comparison = compare(shorter, other, rules, embed)
    return comparison.difference is None and not comparison.reworded and comparison.unmatched_share == 0.0


_ARTICLES = frozenset({"a", "an", "the"})


def _written_out(new: TextFeatures, stored: TextFeatures) -> list[tuple[TextFeatures, Token, list[Token]]]:
    """The unambiguous abbreviations of one request written out in the other (see :func:`expands`).

    Returns:
        ``(the request with the expansion, the abbreviation's token, the expansion's tokens)``
        for each, in no order; two expansions never overlap.
    """
    found: list[tuple[TextFeatures, Token, list[Token]]] = []
    taken: set[int] = set()
    for short, long in ((new, stored), (stored, new)):
        for token in short.tokens:
            if not token.content or token.lemmas & long.words:
                continue
            run = _expansion(token, long, strict=True)
            named = [t.entity for t in run if t.content]
            if not run or (any(named) and not all(named)) or taken & {id(t) for t in run}:
                continue  # "Acme water services" is no "AWS"; "New York City" is "NYC"
            after = long.tokens.index(run[-1]) + 1
            if after < len(long.tokens) and long.tokens[after].lemma in STRICT_HEADS:
                run = [*run, long.tokens[after]]  # "3PL" / "third-party logistics provider"
            taken.update(id(t) for t in run)
            found.append((long, token, run))
    return found


STRICT_HEADS = frozenset("provider vendor company firm system platform tool software".split())
"""Head nouns an expansion may add under the threshold ("an HRIS" / "a human resources information
*system*"); not "team" or "program", which name something else ("the ERP" / "the ERP team")."""


_ABBREVIATION = re.compile(
    r"\b(?:[A-Za-z]*[A-Z][a-z]*[A-Z][A-Za-z]*|[A-Za-z]+\d+[A-Za-z]*|\d+[A-Za-z]{2,})\b"
)
"""A token that may abbreviate ("SLA", "SaaS", "AEs", "K8s", "Q3", "3PL"): two capitals or
letters and digits together."""


def may_expand(new: str, stored: str) -> bool:
    """A cheap screen before :func:`expands`: whether one text has an abbreviation the other lacks."""
    mine, theirs = set(_ABBREVIATION.findall(new)), set(_ABBREVIATION.findall(stored))
    return mine != theirs


# ---------------------------------------------------------------------- numbers and negation


def _quantity(
    new: TextFeatures, stored: TextFeatures, covered: frozenset[int], *, decision: bool
) -> Difference | None:
    """A changed number; in a decision, also a number on one side only ("for 30 days" added).

    Numbers spelling out a code of the other request ("third quarter" / "Q3") do not count.
    """
    spelled = Counter(t.lemma for f in (new, stored) for t in f.tokens if t.number and id(t) in covered)
    numbers = _changed(Counter(new.numbers) - spelled, Counter(stored.numbers) - spelled, decision=decision)
    amounts = _changed(Counter(new.amounts) - spelled, Counter(stored.amounts) - spelled, decision=decision)
    if numbers and amounts:  # "36 months" / "3 years" and "three more years" / "three years" pass
        only_new, only_stored = numbers
        return Difference(
            "quantity", f"{_numbers(new, only_new) or 'none'} vs {_numbers(stored, only_stored) or 'none'}"
        )
    if new.amounts == stored.amounts and (new.amounts != new.numbers or stored.amounts != stored.numbers):
        return None
    units: dict[str, set[str]] = {}
    for value, unit in stored.quantities:
        units.setdefault(value, set()).add(unit)
    for value, unit in sorted(new.quantities):
        others = units.get(value, set())
        if others and unit not in others:
            shown = dict(new.number_forms).get(value, value)
            return Difference("quantity", f"{shown} {unit} vs {shown} {sorted(others)[0]}")
    return None


def _changed(
    mine: Counter[str], theirs: Counter[str], *, decision: bool
) -> tuple[Counter[str], Counter[str]] | None:
    """The values of each side without a counterpart, when they make a difference.

    A value written again on one side only, with nothing else changed, is no difference:
    "Zone 3 ... out of Zone 3" names one zone ("6 engineers in 4 months" / "4 engineers in 4
    months" still changes a number).
    """
    only_new, only_stored = mine - theirs, theirs - mine
    if not (only_new and only_stored):  # a value repeated is not a value added
        only_new = Counter({v: n for v, n in only_new.items() if theirs[v] <= 0})
        only_stored = Counter({v: n for v, n in only_stored.items() if mine[v] <= 0})
    if (only_new and only_stored) or (decision and (only_new or only_stored)):
        return only_new, only_stored
    return None


def _numbers(f: TextFeatures, values: Counter[str]) -> str:
    written = dict(f.number_forms)
    return ", ".join(sorted(written.get(v.split(" ")[0], v) for v in values))


def _units(spans: list[Span]) -> Difference | None:
    """A unit replaced by another outside a number ("400 tickets a *week*" / "a *day*")."""
    for old, fresh in spans:
        for a in old:
            for b in fresh:
                ua, ub = UNITS.get(a.lemma), UNITS.get(b.lemma)
                if a.content and b.content and ua and ub and ua != ub:
                    return Difference("quantity", f"`{a.text}` vs `{b.text}`")
    return None


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


def _spans(new: TextFeatures, stored: TextFeatures, covered: frozenset[int] = frozenset()) -> list[Span]:
    """The differing stretches, less the content words that only moved and the abbreviations.

    A content word found anywhere in the other request only moved; ``covered``
    holds the abbreviations and their expansions (by ``id``, :func:`_abbreviations`).
    """
    matcher = difflib.SequenceMatcher(None, stored.sequence, new.sequence, autojunk=False)
    spans: list[Span] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old = [
            t for t in stored.tokens[i1:i2] if not (t.content and (t.lemmas & new.words or id(t) in covered))
        ]
        fresh = [
            t for t in new.tokens[j1:j2] if not (t.content and (t.lemmas & stored.words or id(t) in covered))
        ]
        if old or fresh:
            spans.append((old, fresh))
    return spans


MODALS = frozenset("should shall can could would must may might".split())
"""Auxiliaries that open a decision question ("should we", "can the team")."""

ASKING = (
    frozenset(
        "whether worth wise idea sense risk downside upside benefit cost saving tradeoff option case "
        "scenario pro con advantage disadvantage argument recommend advise".split()
    )
    | FRAMING
)
"""Lemmas that frame a request as a decision ("assess whether", "is it worth", "does it make
sense", "what is the bear case")."""


def _asks_decision(f: TextFeatures) -> bool:
    """Whether the request asks for a decision.

    A modal question with a subject, a decision frame, or an instruction ("*Raise* prices
    by 6%": the decision is whether to do what it names).
    """
    if f.instruction:
        return True
    lemmas = [t.lemma for t in f.tokens]
    for i, lemma in enumerate(lemmas[:-1]):
        if lemma in MODALS and (f.tokens[i + 1].tags & {"PRON", "DET"} or f.tokens[i + 1].entity):
            return True
        if _do_we(f, i):
            return True
        if lemma in INFINITIVE_FRAMES and lemmas[i + 1] == "to":
            return True  # "is it time to archive", "would it be wise to"
        if lemma in MODALS and _opens_question(f, i):
            return True  # "Should design report into product?"
    return bool(ASKING.intersection(lemmas))


def _opens_question(f: TextFeatures, i: int) -> bool:
    """Whether token ``i`` opens a sentence, or a clause of one, that ends in a question mark.

    "For adjusters in their first 90 days, *should* remote work be allowed?"
    """
    parts = f.clause_of or f.sentence_of
    if not parts or (i > 0 and parts[i - 1] == parts[i]):
        return False
    return f.sentence_of[i] in f.questions


def _do_we(f: TextFeatures, i: int) -> bool:
    """Whether token ``i`` opens a question "Do we ...?" ("do we renew the cover?").

    Only the organisation asking ("we", "our"), at the start of a clause: "How do I ..."
    asks how, not whether.
    """
    tokens = f.tokens
    return (
        tokens[i].lemma == "do"
        and i + 1 < len(tokens)
        and tokens[i + 1].lemma in {"we", "our"}
        and _opens_question(f, i)
    )


asks_decision = _asks_decision

INFINITIVE_FRAMES = frozenset("idea wise sense whether advisable better time".split())
"""Lemmas after which "to" opens the action asked about ("is it a good idea *to* lease")."""


def _main_action(f: TextFeatures) -> Token | None:
    """The verb a decision request asks about, when its form shows it.

    "should *we* lease", "*we* should lease", "is it worth leasing", "a good idea to
    lease", "whether to lease"; a framing verb ("should we consider leasing") passes
    the question on to the next verb. ``None`` for other forms (a passive, a named
    subject), which the span comparison judges instead.
    """
    tokens = f.tokens
    for i, token in enumerate(tokens[:-1]):
        after = tokens[i + 1]
        start = None
        if (token.lemma in MODALS and "PRON" in after.tags or _do_we(f, i)) and i + 2 < len(tokens):
            start = i + 2  # "should we lease", "do we lease"
        elif "PRON" in token.tags and after.lemma in MODALS and i + 2 < len(tokens):
            start = i + 2  # "whether we should lease"
        elif token.lemma == "worth":
            start = i + 1  # "worth leasing"
        elif token.lemma in INFINITIVE_FRAMES and after.lemma == "to" and i + 2 < len(tokens):
            start = i + 2  # "a good idea to lease"
        elif token.lemma in MODALS and _opens_question(f, i) and "PRON" not in after.tags:
            verb = _after_subject(tokens, i + 1)  # "should legal settle", "should the plant shut"
            if verb is not None:
                return verb
        if start is None:
            continue
        for verb in tokens[start : start + 3]:
            if not verb.content or "VERB" not in verb.tags:
                break
            if verb.lemma not in DISCOURSE:
                return verb
    return None


def _after_subject(tokens: Sequence[Token], start: int, reach: int = 5) -> Token | None:
    """The bare verb after a noun subject that starts at ``start`` ("the data team *report* to").

    The verb is the first word that can be a verb in its base form, after at least one word
    of the subject, not after a determiner, and followed by a function word, a number or a
    word that cannot be a verb (its object or particle): "the data *team* report" is passed
    over because "report" can be a verb, "legal *settle* the claim" is taken.
    """
    for k in range(start + 1, min(start + 1 + reach, len(tokens))):
        token, before = tokens[k], tokens[k - 1]
        if not token.content or "VERB" not in token.tags or token.lemma != token.text.lower():
            continue
        if "DET" in before.tags or "ADP" in before.tags:
            continue
        following = tokens[k + 1] if k + 1 < len(tokens) else None
        if following is None or not following.content or "VERB" not in following.tags:
            return None if token.lemma in DISCOURSE else token
    return None


def _main_actions(
    new: TextFeatures, stored: TextFeatures, rules: Rules, embed: Embed | None
) -> Difference | None:
    """Another action asked about, however the rest is worded ("should we *buy*" / "should we *sell*")."""
    a, b = _main_action(stored), _main_action(new)
    if a is None or b is None or a.lemmas & b.lemmas or a.lemma in new.words or b.lemma in stored.words:
        return None
    left, _ = _without_synonyms([a], [b], rules.decision_synonym_similarity, embed)
    if left:
        return Difference("action", f"`{a.text}` vs `{b.text}`")
    return None


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
                # As written too: "most" and "least" lemmatise to "much" and "less".
                written = opposite_relation(a.text.lower(), b.text.lower())
                category = opposite_relation(a.lemma, b.lemma) or written
                if category and _next_content(stored, a) & _next_content(new, b):
                    return Difference(category, f"`{a.text}` vs `{b.text}`")
    return None


def _next_content(f: TextFeatures, token: Token) -> frozenset[str]:
    """Lemmas of the first content word after ``token``."""
    after = [t for t in f.tokens if t.start > token.start and t.content]
    return after[0].lemmas if after else frozenset()


def _swap(new: TextFeatures, stored: TextFeatures, rules: Rules) -> Difference | None:
    """Two shared terms that trade places around the same relation word or verb, the rest in place.

    A reordered clause moves terms too; a swap is told from it by the
    alignment: exchanging the two terms in the stored request must bring it
    closer to the new one by at least :attr:`Rules.swap_gain` (difflib ratio).
    """
    first_new = _first_positions(new)
    first_stored = _first_positions(stored)
    shared = [w for w in first_stored if w in first_new]
    base = difflib.SequenceMatcher(None, stored.sequence, new.sequence, autojunk=False).ratio()
    if base < rules.swap_alignment:
        return None  # reordered throughout: clauses moved, not two terms
    passive_alike = ("by" in new.sequence) == ("by" in stored.sequence)  # no passive for an active
    related_s, related_n = _relation_words(stored), _relation_words(new)
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            sx, sy, nx, ny = first_stored[x], first_stored[y], first_new[x], first_new[y]
            if (sx < sy) == (nx < ny):
                continue
            common = _relations(stored, min(sx, sy), max(sx, sy), related_s) & _relations(
                new, min(nx, ny), max(nx, ny), related_n
            )
            if not common and passive_alike:  # subject and object around the same verb: "X override Y"
                common = _verbs(stored, min(sx, sy), max(sx, sy)) & _verbs(new, min(nx, ny), max(nx, ny))
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


def _crossed(new: TextFeatures, stored: TextFeatures, rules: Rules) -> Difference | None:
    """Terms that cross a relation word: before it in one request, after it in the other, both ways.

    "from *React Native* to *Swift*" / "from *Swift* to *React Native*", "replace *our
    recruiters* with *an RPO*" / "replace *an RPO* with *our recruiters*", "put *support*
    under *sales*" / "put *sales* under *support*". Up to :attr:`Rules.window` content words
    are read on each side, within the sentence; a term found on the same side in both
    requests does not count, so a clause moved whole (a passive for an active) is no swap.
    """
    if ("by" in new.sequence) != ("by" in stored.sequence):
        return None  # a passive for an active: "take over X" / "X be taken over by"
    related_s, related_n = _relation_words(stored), _relation_words(new)
    for i, a in enumerate(stored.tokens):
        if not related_s[i]:
            continue
        before_s, after_s = _around(stored, i, rules.window)
        for j, b in enumerate(new.tokens):
            if b.lemma != a.lemma or not related_n[j]:
                continue
            before_n, after_n = _around(new, j, rules.window)
            ahead = (before_s & after_n) - before_n
            behind = (after_s & before_n) - after_n
            if ahead and behind:
                shown = {t.lemma: t.text for t in reversed(stored.tokens)}
                x, y = shown[sorted(ahead)[0]], shown[sorted(behind)[0]]
                return Difference("direction", f"`{x}` and `{y}` trade places around `{a.text}`")
    return None


def _relation_words(f: TextFeatures) -> list[bool]:
    """Which tokens are relation words (:data:`RELATIONS`), "to" before a verb aside.

    "to" that marks an infinitive ("*to* reduce costs", "*to* have a vendor handle it")
    relates no terms; before a word that can be a noun too ("to cut", "to mass timber"),
    a name ("to React Native"), an inflected form ("to paid search") or after a "from" in
    its clause ("from acquire to retain") it counts. One pass over the tokens.
    """
    parts = f.clause_of or f.sentence_of
    flags: list[bool] = []
    came_from: set[int] = set()  # the clauses with a "from" so far
    for i, token in enumerate(f.tokens):
        clause = parts[i] if parts else 0
        if token.lemma == "from":
            came_from.add(clause)
        if token.lemma not in RELATIONS:
            flags.append(False)
            continue
        following = f.tokens[i + 1] if i + 1 < len(f.tokens) else None
        if token.lemma != "to" or following is None or following.entity or clause in came_from:
            flags.append(True)
            continue
        base = following.lemma == following.text.lower()  # "to reduce", not "to paid search"
        flags.append(not ("AUX" in following.tags or (following.tags == {"VERB"} and base)))
    return flags


def _around(f: TextFeatures, i: int, window: int) -> tuple[frozenset[str], frozenset[str]]:
    """Lemmas of up to ``window`` content words before and after token ``i``, within its clause.

    A clause ends at a comma too: "To cut admin time, should we move payroll to Gusto?" does
    not put "time" before the "to" of "to Gusto".
    """
    parts = f.clause_of or f.sentence_of
    clause = parts[i] if parts else 0
    before = [t for k, t in enumerate(f.tokens[:i]) if _term(t) and (not parts or parts[k] == clause)][
        -window:
    ]
    after = [
        t
        for k, t in enumerate(f.tokens[i + 1 :], start=i + 1)
        if _term(t) and (not parts or parts[k] == clause)
    ][:window]
    return _terms(before), _terms(after)


def _terms(tokens: list[Token]) -> frozenset[str]:
    """Lemmas of ``tokens``, with the parts of a hyphenated compound ("hot-desk": hot, desk)."""
    found = {t.lemma for t in tokens}
    for t in tokens:
        if "-" in t.text:
            found.update(analyse(part)[0] for part in t.text.lower().split("-") if len(part) > 2)
    return frozenset(found)


def _term(token: Token) -> bool:
    """Whether a token can be a term a relation joins: a content word or a number ("hall *2*")."""
    return (token.content and token.lemma not in DISCOURSE) or token.number


def _valence_gap(spans: list[Span], rules: Rules) -> Difference | None:
    """One word replaced by one far from it in VADER valence ("go *wrong*" / "go *right*")."""
    for old, fresh in spans:
        dropped, added = [t for t in old if t.content], [t for t in fresh if t.content]
        if len(dropped) != 1 or len(added) != 1:
            continue
        a, b = dropped[0], added[0]
        if a.lemma in DISCOURSE and b.lemma in DISCOURSE:
            continue
        if abs(valence(a.lemma) - valence(b.lemma)) >= rules.valence_gap:
            return Difference("polarity", f"`{a.text}` vs `{b.text}`")
    return None


def _sides(new: TextFeatures, stored: TextFeatures) -> Difference | None:
    """One side of a cost-benefit question in one request only, the other side in the other only.

    "What would it *cost*" / "what would we *save*", "the *advantages* of" / "the *drawbacks*
    of", "extra *cost*" / "extra *revenue*" (:data:`~budgetgraph.budgets.cache.lexicon.SIDES`).
    Read over the whole requests, not span by span, so a reworded request is caught too.
    """
    mine = [(t, _side(t)) for t in new.tokens if t.content and not t.lemmas & stored.words]
    theirs = [(t, _side(t)) for t in stored.tokens if t.content and not t.lemmas & new.words]
    for a, sign_a in theirs:
        for b, sign_b in mine:
            if sign_a and sign_a == -sign_b:
                return Difference("polarity", f"`{a.text}` vs `{b.text}`")
    return None


def _side(token: Token) -> int:
    return next((s for s in map(side, (token.text, *sorted(token.lemmas))) if s), 0)


def _first_positions(f: TextFeatures) -> dict[str, int]:
    positions: dict[str, int] = {}
    for i, t in enumerate(f.tokens):
        if t.content or t.number:
            positions.setdefault(t.lemma, i)
    return positions


def _verbs(f: TextFeatures, start: int, end: int) -> set[str]:
    """Lemmas of the words that can be verbs between tokens ``start`` and ``end`` in one sentence."""
    if f.sentence_of and f.sentence_of[start] != f.sentence_of[end]:
        return set()
    return {t.lemma for t in f.tokens[start + 1 : end] if t.content and "VERB" in t.tags}


def _relations(f: TextFeatures, start: int, end: int, related: list[bool]) -> set[str]:
    """Relation words between tokens ``start`` and ``end``, in the sentence of both.

    ``related`` marks the relation words of ``f`` (:func:`_relation_words`).
    """
    found = set()
    for k in range(start + 1, end):
        token = f.tokens[k]
        if not related[k]:
            continue
        if f.sentence_of and len({f.sentence_of[start], f.sentence_of[k], f.sentence_of[end]}) > 1:
            continue
        found.add(token.lemma)
    return found


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


def _names(spans: list[Span], covered: frozenset[int]) -> Difference | None:
    names_new = [t for _, fresh in spans for t in fresh if t.entity and t.content and id(t) not in covered]
    names_stored = [t for old, _ in spans for t in old if t.entity and t.content and id(t) not in covered]
    if names_new and names_stored:
        return Difference("actor", f"`{names_stored[0].text}` vs `{names_new[0].text}`")
    return None


UNITS_OF_AN_ORGANISATION = frozenset(
    "team department dept group unit division squad crew site office plant store branch campus clinic "
    "warehouse depot region hospital school lab facility fleet".split()
)
"""Heads of the names of an organisation's parts: "the *mobile* team" and "the *backend* team",
"the *Leeds* office" and "the *York* office" are other actors doing the same thing."""


def _other_unit(
    new: TextFeatures, stored: TextFeatures, covered: frozenset[int], rules: Rules, embed: Embed | None
) -> Difference | None:
    """Another part of the organisation: the same unit word under another modifier, however reworded.

    The modifiers are the content words right before a word of :data:`UNITS_OF_AN_ORGANISATION`
    ("the *mobile* team" / "the *backend* team"); one found nowhere in the other request, on
    each side, and no synonym of each other, is another actor.
    """
    for head in UNITS_OF_AN_ORGANISATION & new.content & stored.content:
        mine = [t for t in _modifiers(new, head) if not t.lemmas & stored.words and id(t) not in covered]
        theirs = [t for t in _modifiers(stored, head) if not t.lemmas & new.words and id(t) not in covered]
        if mine and theirs:
            left, _ = _without_synonyms(theirs, mine, rules.decision_synonym_similarity, embed)
            if left:
                return Difference("actor", f"`{theirs[0].text} {head}` vs `{mine[0].text} {head}`")
    return None


def _one_sided(
    new: TextFeatures, stored: TextFeatures, words: frozenset[str], category: str
) -> Difference | None:
    """A word of ``words`` in one request alone, however reworded, as a difference of ``category``.

    A restriction ("for commercial customers *only*", "everyone *except* contractors",
    ``RESTRICTIVES``), an undoing ("roll it *back*", ``REVERSALS``), the other side ("the
    arguments *against*", ``OPPOSED``): see :mod:`budgetgraph.budgets.cache.lexicon`.
    """
    for f, other, change in ((new, stored, "added"), (stored, new, "dropped")):
        word = next((t for t in f.tokens if t.lemma in words and not t.lemmas & other.words), None)
        if word is not None:
            return Difference(category, f"{change} `{word.text}`")
    return None


def _other_people(
    new: TextFeatures, stored: TextFeatures, rules: Rules, embed: Embed | None
) -> Difference | None:
    """One group of people for another, however reworded.

    "contractors" / "our own employees" (:data:`~budgetgraph.budgets.cache.lexicon.PEOPLE`).
    """
    mine = [t for t in new.tokens if t.content and t.lemma in PEOPLE and not t.lemmas & stored.words]
    theirs = [t for t in stored.tokens if t.content and t.lemma in PEOPLE and not t.lemmas & new.words]
    if mine and theirs:
        left, _ = _without_synonyms(theirs, mine, rules.decision_synonym_similarity, embed)
        if left:
            return Difference("actor", f"`{theirs[0].text}` vs `{mine[0].text}`")
    return None


def _modifiers(f: TextFeatures, head: str) -> list[Token]:
    """The content words right before each ``head`` (up to two, back to the first function word)."""
    found: list[Token] = []
    for i, token in enumerate(f.tokens):
        if token.lemma != head:
            continue
        for before in reversed(f.tokens[max(0, i - 2) : i]):
            if not before.content or before.lemma in DISCOURSE:
                break
            found.append(before)
    return found


# ---------------------------------------------------------------------- abbreviations

_NUMERONYM = re.compile(r"([^\W\d_])(\d+)([^\W\d_])")


def _abbreviations(new: TextFeatures, stored: TextFeatures) -> frozenset[int]:
    """The tokens (by ``id``) of an abbreviation in one request and its expansion in the other.

    Three forms: an initialism ("ER" / "emergency room", "SaaS" /
    "software-as-a-service", "EOY" / "end of the year": the initials of
    consecutive words, function words optional); a numeronym ("k8s" /
    "Kubernetes": first and last letter, the count between); a clipping
    ("Eng" / "Engineering", "org" / "organization": the whole shorter word
    begins the longer, at least two letters longer, not a compound name such
    as "Java" / "JavaScript").
    """
    covered: set[int] = set()
    for short, long in ((new, stored), (stored, new)):
        for token in short.tokens:
            if not token.content or token.lemmas & long.words:
                continue
            run = _expansion(token, long)
            if run:
                covered.add(id(token))
                covered.update(id(t) for t in run)
                after = long.tokens.index(run[-1]) + 1
                if after < len(long.tokens) and long.tokens[after].lemma in EXPANSION_HEADS:
                    covered.add(id(long.tokens[after]))  # "3PL" / "third-party logistics provider"
    return frozenset(covered)


EXPANSION_HEADS = frozenset("provider vendor company firm service system platform tool team program".split())
"""Head nouns an expansion often adds to what its abbreviation names: "a BPO" / "a business
process outsourcing *provider*", "an HRIS" / "a human resources information *system*"."""


def _expansion(token: Token, other: TextFeatures, *, strict: bool = False) -> list[Token]:
    """The tokens of ``other`` that ``token`` abbreviates, or none.

    ``strict`` keeps a clipping only when it is no word of its own ("org", "prem"; not "car"
    for "carpet").
    """
    text = token.text
    numeronym = _NUMERONYM.fullmatch(text)
    if numeronym is not None:
        first, count, last = numeronym.group(1).lower(), int(numeronym.group(2)), numeronym.group(3).lower()
        return [
            t
            for t in other.tokens
            if len(t.text) == count + 2 and t.text[0].lower() == first and t.text[-1].lower() == last
        ][:1]
    code = _CODE.fullmatch(text)
    if code is not None:  # "Q3" / "third quarter", "H1" / "first half", "F500" / "Fortune 500", "Sev1"
        return _spelled_code(code.group(1).lower(), code.group(2), other.tokens)
    leading = _LEADING.fullmatch(text)
    if leading is not None:  # "3PL" / "third-party logistics", "2FA" / "two-factor authentication"
        return _numbered_initialism(leading.group(1), leading.group(2).lower(), other.tokens)
    letters = text.replace(".", "")
    if len(letters) > 2 and letters.endswith("s") and letters[:-1].isupper():
        letters = letters[:-1]  # "VMs", "SSDs"
    if 2 <= len(letters) <= 6 and letters.isalpha() and sum(ch.isupper() for ch in letters) >= 2:
        return _initialism(letters.lower(), other.tokens)
    if strict and token.tags != {"X"}:
        return []  # a clipping that is a word of its own ("car" / "carpet", "port" / "portfolio")
    if len(text) >= 3 and text.isalpha():
        lower = text.lower()
        for t in other.tokens:
            rest = t.text[len(text) :]
            if t.content and len(rest) >= 2 and t.text.lower().startswith(lower) and not rest[0].isupper():
                return [t]
    return []


_CODE = re.compile(r"([^\W\d_]{1,4})(\d+)")
_ORDINALS = frozenset(v for v in NUMBER_WORDS.values() if v[:1].isdigit() and v[-2:].isalpha())
"""The spelled ordinals' values ("third" is "3rd")."""
_SPELLED_INITIALS = frozenset({"non", *_ORDINALS})
_LEADING = re.compile(r"(\d)([^\W\d_]{1,4})")


def _spelled_code(letter: str, digits: str, tokens: Sequence[Token]) -> list[Token]:
    """Two adjacent tokens: a word starting with ``letter`` and the number or ordinal ``digits``."""
    values = {
        repr(float(digits)),
        f"{int(digits)}st",
        f"{int(digits)}nd",
        f"{int(digits)}rd",
        f"{int(digits)}th",
    }
    for first, second in zip(tokens, tokens[1:], strict=False):
        for word, number in ((first, second), (second, first)):
            if (
                number.number
                and number.lemma in values
                and (word.content or word.unit or (word.number and word.text.isalpha()))  # "first *half*"
                and word.text.lower().startswith(letter)
            ):
                return [first, second]
    return []


def _numbered_initialism(digit: str, letters: str, tokens: Sequence[Token]) -> list[Token]:
    """A number ``digit`` (as a count or an ordinal) followed by words with the initials ``letters``."""
    values = {repr(float(digit)), *(o for o in _ORDINALS if o.startswith(digit) and o[1:].isalpha())}
    for i, token in enumerate(tokens[:-1]):
        if token.number and token.lemma in values:
            run = _initials_from(letters, tokens, i + 1)
            if run:
                return [token, *run]
    return []


def _initialism(letters: str, tokens: Sequence[Token]) -> list[Token]:
    """The first run of ``tokens`` whose initials spell ``letters`` (function words may be skipped)."""
    for start, token in enumerate(tokens):
        if (token.content or _spelled_initial(token)) and token.text[:1].lower() == letters[0]:
            run = _initials_from(letters, tokens, start)
            if run is not None:
                return run
    return []


def _spelled_initial(token: Token) -> bool:
    """Whether ``token`` is a spelled ordinal or the prefix "non", which give an initialism a letter.

    "*third*-party administrator" for "TPA", "*non*-disclosure agreement" for "NDA".
    """
    return token.text.isalpha() and token.lemma in _SPELLED_INITIALS


def _initials_from(letters: str, tokens: Sequence[Token], i: int, skipped: int = 0) -> list[Token] | None:
    """The run from token ``i`` whose initials spell ``letters``.

    Up to two function words in a row may be skipped ("end *of the* year").
    """
    if not letters:
        return []
    if i >= len(tokens):
        return None
    if (tokens[i].number or tokens[i].negation) and not _spelled_initial(tokens[i]):
        return None
    token = tokens[i]
    humps = "".join(ch for ch in token.text if ch.isupper()).lower()
    if len(humps) > 1 and token.text[:1].isupper() and letters.startswith(humps):
        rest = _initials_from(letters[len(humps) :], tokens, i + 1)  # "GitHub Actions" for "GHA"
        if rest is not None:
            return [token, *rest]
    if token.text[:1].lower() == letters[0]:
        rest = _initials_from(letters[1:], tokens, i + 1)
        if rest is not None:
            return [token, *rest]
    if token.lemma in FUNCTION_WORDS and i > 0 and skipped < 2:
        return _initials_from(letters, tokens, i + 1, skipped + 1)
    return None


def _edits(spans: list[Span], rules: Rules, embed: Embed | None, *, decision: bool) -> Difference | None:
    """A small edit: a replaced word that is no synonym, or an added or dropped qualifier.

    A span added or dropped is a qualifier only when it is the one change of content.
    """
    alone = sum(1 for old, fresh in spans if _weight(old) + _weight(fresh)) == 1
    for old, fresh in spans:
        dropped = [t for t in old if t.content and t.lemma not in DISCOURSE]
        added = [t for t in fresh if t.content and t.lemma not in DISCOURSE]
        if dropped and added:
            cutoff = rules.decision_synonym_similarity if decision else rules.synonym_similarity
            left_dropped, left_added = _without_synonyms(dropped, added, cutoff, embed)
            if left_dropped and left_added:
                a, b = left_dropped[0], left_added[0]
                return Difference(_kind(a, b), f"`{a.text}` vs `{b.text}`")
            continue
        lone, whole = (added, fresh) if added else (dropped, old)
        if not lone or not (decision or alone and _restricts(lone, whole)):
            continue
        side = "added" if added else "dropped"
        shown = " ".join(t.text for t in whole)
        phrase = whole[0].tags == {"ADP"} or whole[0].tags == {"ADP", "SCONJ"}  # "for customers in Wales"
        if decision and not phrase and any(t.tags == {"VERB"} or t.tags == {"VERB", "NOUN"} for t in lone):
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
    dropped: list[Token], added: list[Token], cutoff: float, embed: Embed | None
) -> tuple[list[Token], list[Token]]:
    """The replaced words left once each word with a synonym on the other side is set aside.

    A synonym is a word at cosine ``cutoff`` or more (each word embedded alone), or one
    WordNet puts in a synset with it as a part of speech both can take
    (:func:`~budgetgraph.budgets.cache.lexicon.synonyms`: "hire" / "employ").

    Names are never synonyms: "Android" and "iOS" embed close, and are other products.
    """
    if embed is None:
        return dropped, added
    # one word a call: the embedder keeps the vectors of single texts, so a word is run once
    vectors = np.vstack([np.asarray(embed([t.text.lower()]), dtype=np.float32) for t in dropped + added])
    similarity = vectors[: len(dropped)] @ vectors[len(dropped) :].T
    names = np.array([t.entity for t in dropped])[:, None] | np.array([t.entity for t in added])[None, :]
    for i, a in enumerate(dropped):  # WordNet's synonyms, as the same part of speech
        for j, b in enumerate(added):
            if similarity[i, j] < cutoff and synonyms(a.lemma, b.lemma, a.tags & b.tags):
                similarity[i, j] = 1.0
    similarity = np.where(names, -1.0, similarity)
    keep_dropped = [t for i, t in enumerate(dropped) if similarity[i].max() < cutoff]
    keep_added = [t for j, t in enumerate(added) if similarity[:, j].max() < cutoff]
    return keep_dropped, keep_added


def _kind(a: Token, b: Token) -> str:
    if a.entity or b.entity:
        return "actor"
    if "VERB" in a.tags and "VERB" in b.tags:
        return "action"
    if "NOUN" in a.tags or "NOUN" in b.tags:
        return "actor"
    return "qualifier"


__all__ = ["CATEGORIES", "Comparison", "Difference", "Rules", "compare", "expands", "may_expand"]
