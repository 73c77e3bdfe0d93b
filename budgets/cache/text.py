"""Request text: normalisation for keys and embeddings, and the features the guard compares.

Everything here is plain string work with no model: a tokenizer (a regular
expression over Unicode word characters), a light English suffix stemmer, and
extractors for numbers and amounts (with their units), negation, named
entities, content words and the order of the words. The word lists are small
on purpose; each one was kept because it changed the measured precision of
the cache on the evaluation data (see :mod:`budgetgraph.budgets.cache.guard`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(
    r"[$€£]?\d+(?:[.,]\d+)*(?:%|[kKmM](?![^\W\d_]))?|[^\W\d_]+(?:['’][^\W\d_]+)*|[^\W_]+", re.UNICODE
)
_NUMBER = re.compile(r"^[$€£]?(\d+(?:[.,]\d+)*)([%kKmM]?)$")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_SENTENCE_START = '.?!:;"(\n*-'

STOPWORDS: frozenset[str] = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto about as is are was
    were be been being am do does did doing done have has had having i me my mine we us our ours you
    your yours he him his she her hers it its they them their theirs this that these those there here
    what which who whom whose when where why how can could would should will shall may might must
    ought also just so than too very really any some all each every much many more most other such own
    same s t d ll m o re ve y get got go going make one ones thing things way ways someone something
    anyone anything people person good best better""".split()
)
"""Function words and fillers that carry no key term (stemmed forms)."""

NEGATIONS: frozenset[str] = frozenset("not no never none nothing nobody neither nor cannot nowhere".split())
"""Negation words; ``n't`` contractions count as ``not``. ``without`` is left out:
the paraphrase data uses it as often for "absent" as for a negated request."""

NUMBER_WORDS: dict[str, str] = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "first": "1st",
    "second": "2nd",
    "third": "3rd",
    "fourth": "4th",
    "fifth": "5th",
    "last": "last",
}
"""Number words and ordinals, mapped to the form digits normalise to. ``one`` is
left out: it is a pronoun far more often than a count."""

OPPOSITES: tuple[tuple[str, str], ...] = (
    ("maximize", "minimize"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("more", "less"),
    ("more", "fewer"),
    ("most", "least"),
    ("increase", "decrease"),
    ("best", "worst"),
    ("like", "dislike"),
    ("love", "hate"),
    ("good", "bad"),
    ("high", "low"),
    ("higher", "lower"),
    ("rise", "fall"),
    ("win", "lose"),
    ("gain", "lose"),
    ("buy", "sell"),
    ("start", "stop"),
    ("open", "close"),
    ("before", "after"),
    ("positive", "negative"),
    ("cheap", "expensive"),
    ("fast", "slow"),
    ("big", "small"),
    ("add", "remove"),
    ("import", "export"),
    ("pro", "con"),
    ("advantage", "disadvantage"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("old", "new"),
    ("old", "young"),
    ("first", "last"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("hot", "cold"),
    ("early", "late"),
    ("legal", "illegal"),
    ("true", "false"),
    ("male", "female"),
    ("man", "woman"),
    ("boy", "girl"),
    ("husband", "wife"),
    ("boyfriend", "girlfriend"),
    ("above", "below"),
    ("inside", "outside"),
    ("long", "short"),
    ("safe", "dangerous"),
    ("success", "failure"),
    ("agree", "disagree"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("upload", "download"),
    ("input", "output"),
    ("send", "receive"),
    ("enable", "disable"),
    ("encrypt", "decrypt"),
    ("north", "south"),
    ("east", "west"),
    ("allow", "deny"),
    ("approve", "reject"),
    ("hire", "fire"),
    ("on", "off"),
    ("to", "from"),
    ("faster", "slower"),
    ("cheaper", "pricier"),
    ("bigger", "smaller"),
    ("larger", "smaller"),
    ("better", "worse"),
    ("upgrade", "downgrade"),
    ("inbound", "outbound"),
    ("internal", "external"),
    ("public", "private"),
    ("online", "offline"),
    ("frontend", "backend"),
    ("profit", "loss"),
    ("junior", "senior"),
    ("enterprise", "small"),
    ("enterprise", "consumer"),
    ("enterprise", "startup"),
    ("b2b", "b2c"),
)
"""Word pairs whose swap reverses or redirects a request ("gain weight" / "lose weight",
"migrate to X" / "migrate from X", "senior" / "junior engineer")."""

ALTERNATIVES: tuple[frozenset[str], ...] = (
    frozenset({"hourly", "daily", "weekly", "monthly", "quarterly", "annual", "annually", "yearly"}),
    frozenset({"hour", "day", "week", "month", "quarter", "year"}),
)
"""Words of which a request names one period among several ("annual" / "monthly cost"):
any two of a set that are not :data:`SYNONYMS` count as opposite words."""

SYNONYMS: frozenset[frozenset[str]] = frozenset(
    {frozenset({"annual", "yearly"}), frozenset({"annual", "annually"}), frozenset({"annually", "yearly"})}
)
"""Pairs inside :data:`ALTERNATIVES` that mean the same."""

UNITS: dict[str, str] = {
    **dict.fromkeys(("ms", "msec", "millisecond"), "ms"),
    **dict.fromkeys(("s", "sec", "second"), "s"),
    **dict.fromkeys(("min", "minute"), "min"),
    **dict.fromkeys(("h", "hr", "hour"), "h"),
    **dict.fromkeys(("day",), "day"),
    **dict.fromkeys(("week", "wk"), "week"),
    **dict.fromkeys(("month", "mo"), "month"),
    **dict.fromkeys(("year", "yr"), "year"),
    **dict.fromkeys(("kb", "kib"), "KB"),
    **dict.fromkeys(("mb", "mib"), "MB"),
    **dict.fromkeys(("gb", "gib"), "GB"),
    **dict.fromkeys(("tb", "tib"), "TB"),
    **dict.fromkeys(("usd", "dollar", "$"), "USD"),
    **dict.fromkeys(("eur", "euro", "€"), "EUR"),
    **dict.fromkeys(("gbp", "pound", "£"), "GBP"),
    **dict.fromkeys(("percent", "%"), "%"),
}
"""Unit words (stemmed) right after a number, and the unit they name: "200 ms" is
not "200 s", and "4 months" is not "4 weeks"."""

RELATIONS: frozenset[str] = frozenset(
    "to from than vs versus over before after into onto against instead rather toward towards".split()
)
"""Words that give the terms around them different roles: swapping the terms
("from AWS to GCP" / "from GCP to AWS", "Python faster than Java") changes the request."""


def normalize(text: str) -> str:
    """Return ``text`` in NFKC form with runs of whitespace collapsed and the ends stripped.

    Case is kept: the exact key of a request must not merge requests a model
    could answer differently.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def stem(word: str) -> str:
    """Lower-case ``word`` and strip common English inflections (``'s``, plural ``s``, ``ing``, ``ed``)."""
    w = word.lower().replace("’", "'")
    if w.endswith("n't"):
        return "not"
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def number_value(token: str) -> str | None:
    """Return the canonical form of a number token, else ``None``.

    ``"1,000"``, ``"1k"`` and ``"thousand"`` all give ``"1000.0"``; ``"10%"`` gives
    ``"10.0%"``; a version such as ``"2.10.0"`` is kept as written.
    """
    match = _NUMBER.match(token)
    if match is None:
        word = NUMBER_WORDS.get(token.lower())
        return repr(float(word)) if word is not None and word.isdigit() else word
    digits, suffix = match.groups()
    if _THOUSANDS.fullmatch(digits):
        digits = digits.replace(",", "")
    digits = digits.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:  # a version such as 2.10.0
        return digits
    suffix = suffix.lower()
    if suffix == "k":
        value *= 1_000
    elif suffix == "m":
        value *= 1_000_000
    return f"{value!r}%" if suffix == "%" else repr(value)


@dataclass(frozen=True)
class TextFeatures:
    """What the guard compares between two requests.

    Attributes:
        words: Every token, stemmed.
        content: Stemmed tokens that are neither stopwords, negations nor numbers.
        numbers: Canonical forms of the numbers, amounts and ordinals, sorted,
            each as many times as it occurs ("6 engineers for 4 months, 4 teams"
            differs from "4 engineers for 4 months, 4 teams").
        number_forms: ``(canonical, as written)`` for each number, for messages.
        negations: How many negation words the text has.
        entities: Stemmed named entities: capitalised words not at a sentence
            start, inner-capital words (``iPhone``, ``PyTorch``), and words in
            non-Latin scripts.
        entity_forms: ``(stem, as written)`` for each entity, for messages.
        quantities: ``(number, unit)`` for each number followed by a unit in
            :data:`UNITS` (or written with a currency sign), units canonical.
        sequence: Every token, stemmed, in order (numbers in canonical form).
    """

    words: frozenset[str]
    content: frozenset[str]
    numbers: tuple[str, ...]
    number_forms: tuple[tuple[str, str], ...]
    negations: int
    entities: frozenset[str]
    entity_forms: tuple[tuple[str, str], ...]
    quantities: frozenset[tuple[str, str]] = frozenset()
    sequence: tuple[str, ...] = ()


@lru_cache(maxsize=8192)
def features(text: str) -> TextFeatures:
    """Extract :class:`TextFeatures` from ``text`` (cached; texts are immutable)."""
    text = unicodedata.normalize("NFKC", text)
    matches = list(_TOKEN.finditer(text))
    stems = [stem(m.group(0)) for m in matches]
    numbers: list[str] = []
    forms: dict[str, str] = {}
    negations = 0
    content: set[str] = set()
    entities: dict[str, str] = {}
    quantities: set[tuple[str, str]] = set()
    sequence: list[str] = []
    previous: str | None = None  # the number just before this token, if any
    for index, (match, stemmed) in enumerate(zip(matches, stems, strict=True)):
        token = match.group(0)
        after_number, previous = previous, None
        if after_number is not None and stemmed in UNITS:
            quantities.add((after_number, UNITS[stemmed]))  # and the unit stays a word of its own
        value = None if after_number is not None and stemmed in UNITS else number_value(token)
        if value is not None:
            numbers.append(value)
            forms.setdefault(value, token)
            sequence.append(value)
            previous = value
            if token[0] in UNITS:
                quantities.add((value, UNITS[token[0]]))
            elif token.endswith("%"):
                quantities.add((value, "%"))
            continue
        sequence.append(stemmed)
        if stemmed in NEGATIONS or stemmed == "not":
            # "No, ..." opening an answer is an interjection, not a negated request.
            after = text[match.end() : match.end() + 1]
            if not (stemmed == "no" and index == 0 and after in ",.!"):
                negations += 1
            continue
        if stemmed not in STOPWORDS:
            content.add(stemmed)
            if _is_entity(text, match.start(), token):
                entities.setdefault(stemmed, token)
    return TextFeatures(
        words=frozenset(stems),
        content=frozenset(content),
        numbers=tuple(sorted(numbers)),
        number_forms=tuple(sorted(forms.items())),
        negations=negations,
        entities=frozenset(entities),
        entity_forms=tuple(sorted(entities.items())),
        quantities=frozenset(quantities),
        sequence=tuple(sequence),
    )


def _is_entity(text: str, start: int, token: str) -> bool:
    if any(ord(ch) > 0x2FF for ch in token):
        return True
    if not token[0].isupper():
        return False
    if any(ch.isupper() for ch in token[1:]):
        return True
    before = text[:start].rstrip()
    return not (before == "" or before[-1] in _SENTENCE_START)


def similar_words(a: str, b: str) -> bool:
    """Whether two stemmed words are one word.

    They are when equal, when one is a prefix of the other (at least four
    letters: ``scot`` / ``scottish``), or when one is a likely typo of the other
    (same first four letters, at least 80 % alike).
    """
    if a == b:
        return True
    shortest = min(len(a), len(b))
    if shortest >= 4 and (a.startswith(b) or b.startswith(a)):
        return True
    return shortest >= 5 and a[:4] == b[:4] and SequenceMatcher(None, a, b).ratio() >= 0.8


def unmatched(words: frozenset[str], others: frozenset[str]) -> frozenset[str]:
    """Return the words of ``words`` with no :func:`similar_words` counterpart in ``others``."""
    return frozenset(w for w in words if w not in others and not any(similar_words(w, o) for o in others))


_OPPOSITE: dict[str, frozenset[str]] = {}
_PAIRS = list(OPPOSITES) + [
    (a, b)
    for group in ALTERNATIVES
    for a in group
    for b in group
    if a < b and frozenset({a, b}) not in SYNONYMS
]
for _a, _b in _PAIRS:
    _sa, _sb = stem(_a), stem(_b)
    _OPPOSITE[_sa] = _OPPOSITE.get(_sa, frozenset()) | {_sb}
    _OPPOSITE[_sb] = _OPPOSITE.get(_sb, frozenset()) | {_sa}


def opposite_terms(a: TextFeatures, b: TextFeatures) -> tuple[str, str] | None:
    """Return a pair of opposite words, one only in ``a`` and the other only in ``b``, if there is one.

    Relation words (:data:`RELATIONS`, such as ``to`` / ``from``) count only
    when the same word follows them in both requests ("to microservices" /
    "from microservices"): paraphrases turn a sentence around them freely.
    """
    for word in sorted(a.words - b.words):
        for other in sorted(_OPPOSITE.get(word, ())):
            if other in b.words and other not in a.words:
                if word in RELATIONS and _next_words(a, word).isdisjoint(_next_words(b, other)):
                    continue
                return word, other
    return None


def _next_words(f: TextFeatures, word: str) -> set[str]:
    return {f.sequence[i + 1] for i, w in enumerate(f.sequence[:-1]) if w == word}


def unit_clash(a: TextFeatures, b: TextFeatures) -> tuple[str, str] | None:
    """Return one number written with a unit in ``a`` and another unit in ``b`` ("200 ms" / "200 s")."""
    units_b: dict[str, set[str]] = {}
    for value, unit in b.quantities:
        units_b.setdefault(value, set()).add(unit)
    for value, unit in sorted(a.quantities):
        others = units_b.get(value, set())
        if others and unit not in others:
            return f"{value} {unit}", f"{value} {sorted(others)[0]}"
    return None


def role_swap(a: TextFeatures, b: TextFeatures) -> tuple[str, str] | None:
    """Return two key terms that trade places around a relation word, if the requests differ only so.

    The requests' content words, in order, must be the same but for ``x``
    and ``y`` trading places, with a word of :data:`RELATIONS` between them:
    "from AWS to GCP" / "from GCP to AWS", "Python faster than Java" / "Java
    faster than Python". Reworded requests whose clauses come in another order
    are not a swap.
    """
    order_a = [w for w in a.sequence if w in a.content]
    order_b = [w for w in b.sequence if w in b.content]
    if len(order_a) != len(order_b):
        return None
    moved = [i for i, (x, y) in enumerate(zip(order_a, order_b, strict=True)) if x != y]
    if len(moved) != 2:
        return None
    i, j = moved
    x, y = order_a[i], order_a[j]
    if (order_b[i], order_b[j]) != (y, x):
        return None
    between = a.sequence[a.sequence.index(x) + 1 : a.sequence.index(y)]
    return (x, y) if RELATIONS.intersection(between) else None


__all__ = [
    "ALTERNATIVES",
    "NEGATIONS",
    "NUMBER_WORDS",
    "OPPOSITES",
    "RELATIONS",
    "STOPWORDS",
    "SYNONYMS",
    "UNITS",
    "TextFeatures",
    "features",
    "normalize",
    "number_value",
    "opposite_terms",
    "role_swap",
    "similar_words",
    "stem",
    "unit_clash",
    "unmatched",
]
