"""Request text: normalisation for keys and embeddings, and the tokens the guard aligns.

A request is split into tokens by a regular expression over Unicode word
characters (numbers with their currency sign, thousands separators and
``k``/``M``/``%`` suffixes stay one token). Each word token gets its lemma and
the parts of speech it can take from :func:`budgetgraph.budgets.cache.lexicon.analyse`
(``lemminflect`` for the open classes, Universal Dependencies' closed classes
for the rest); numbers get a canonical value, so "$180k", "$180,000" and
"180 thousand dollars" compare equal and "$18k" does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from budgetgraph.budgets.cache.lexicon import FUNCTION_WORDS, NEGATIONS, analyse

_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(
    r"[^\W\d_]+\d[^\W_]*|\d+[^\W\d_]{2,}[^\W_]*|[$€£]?\d+(?:[.,]\d+)*(?:%|[kKmMbB](?![^\W\d_]))?"
    r"|[^\W\d_]+(?:['’][^\W\d_]+)*|[^\W_]+",
    re.UNICODE,
)
_NUMBER_UNIT = re.compile(r"^(\d+(?:[.,]\d+)*)([^\W\d_]+)$")
_NUMBER = re.compile(r"^[$€£]?(\d+(?:[.,]\d+)*)([%kKmMbB]?)$")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_SENTENCE_START = '.?!:;"(\n*-'

NUMBER_WORDS: Mapping[str, str] = {
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
    "fifteen": "15",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
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
    "half": "0.5",
    "double": "x2",
    "twice": "x2",
    "triple": "x3",
}
"""Number words and ordinals, and the form digits normalise to. ``one`` is left out:
it is a pronoun far more often than a count."""

MULTIPLIERS: Mapping[str, float] = {
    "thousand": 1e3,
    "million": 1e6,
    "billion": 1e9,
    "k": 1e3,
    "m": 1e6,
    "b": 1e9,
}
"""Words and suffixes that scale the number before them ("2 million", "$2M")."""

UNITS: Mapping[str, str] = {
    **dict.fromkeys(("ms", "msec", "millisecond"), "ms"),
    **dict.fromkeys(("s", "sec", "second"), "s"),
    **dict.fromkeys(("min", "minute"), "min"),
    **dict.fromkeys(("h", "hr", "hour"), "h"),
    **dict.fromkeys(("day",), "day"),
    **dict.fromkeys(("week", "wk"), "week"),
    **dict.fromkeys(("month", "mo"), "month"),
    **dict.fromkeys(("quarter",), "quarter"),
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
"""Unit lemmas right after a number, and the unit they name: "200 ms" is not "200 s",
and "4 months" is not "4 weeks". Units of time, size, money and share."""


def normalize(text: str) -> str:
    """Return ``text`` in NFKC form with runs of whitespace collapsed and the ends stripped.

    Case is kept: the exact key of a request must not merge requests a model
    could answer differently.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def number_value(token: str) -> str | None:
    """Return the canonical form of a number token, else ``None``.

    ``"1,000"``, ``"1k"`` and ``"thousand"`` all give ``"1000.0"``; ``"10%"`` gives
    ``"10.0%"``; ``"$2M"`` gives ``"2000000.0"``; a version such as ``"2.10.0"``
    is kept as written.
    """
    match = _NUMBER.match(token)
    if match is None:
        word = NUMBER_WORDS.get(token.lower())
        return repr(float(word)) if word is not None and _is_float(word) else word
    digits, suffix = match.groups()
    if _THOUSANDS.fullmatch(digits):
        digits = digits.replace(",", "")
    digits = digits.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:  # a version such as 2.10.0
        return digits
    suffix = suffix.lower()
    value *= MULTIPLIERS.get(suffix, 1.0)
    return f"{value!r}%" if suffix == "%" else repr(value)


def _is_float(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Token:
    """One token of a request.

    Attributes:
        text: As written.
        lemma: Canonical lemma (lower case); for a number, its canonical value.
        lemmas: Every lemma the word can have (``analyses`` -> analysis, analyse).
        tags: The parts of speech (UPOS) it can take; ``NUM`` for a number.
        entity: A name: capitalised away from a sentence start, an acronym or
            mixed case (``EU``, ``iPhone``, ``GPT-4o``), or a non-Latin word.
        start: Character offset in the text.
    """

    text: str
    lemma: str
    lemmas: frozenset[str]
    tags: frozenset[str]
    entity: bool
    start: int

    @property
    def number(self) -> bool:
        """True for a number, amount or ordinal."""
        return "NUM" in self.tags

    @property
    def negation(self) -> bool:
        """True for a negation cue (:data:`~budgetgraph.budgets.cache.lexicon.NEGATIONS`)."""
        return self.lemma in NEGATIONS

    @property
    def content(self) -> bool:
        """True for a word that can carry the decision: not a function word, number or negation."""
        return not (self.number or self.negation or self.lemma in FUNCTION_WORDS)


@dataclass(frozen=True)
class TextFeatures:
    """A request as the guard compares it.

    Attributes:
        tokens: Every token, in order.
        sequence: Each token's lemma, in order (numbers in canonical form).
        words: Every lemma of every token.
        content: Lemmas of the content tokens (:attr:`Token.content`).
        numbers: Canonical numbers, sorted, each as often as it occurs.
        number_forms: ``(canonical, as written)`` for each number, for messages.
        negations: How many negation cues the text has.
        entities: Lemmas of the name tokens.
        entity_forms: ``(lemma, as written)`` for each name, for messages.
        quantities: ``(number, unit)`` for each number followed by a unit.
    """

    tokens: tuple[Token, ...]
    sequence: tuple[str, ...]
    words: frozenset[str]
    content: frozenset[str]
    numbers: tuple[str, ...]
    number_forms: tuple[tuple[str, str], ...]
    negations: int
    entities: frozenset[str]
    entity_forms: tuple[tuple[str, str], ...]
    quantities: frozenset[tuple[str, str]] = frozenset()


@lru_cache(maxsize=8192)
def features(text: str) -> TextFeatures:
    """Tokenise, lemmatise and tag ``text`` (cached; texts are immutable).

    The first call loads the ``lemminflect`` lexicon (about 0.14 s).
    """
    text = unicodedata.normalize("NFKC", text)
    tokens: list[Token] = []
    quantities: set[tuple[str, str]] = set()
    forms: dict[str, str] = {}
    for index, match in enumerate(_TOKEN.finditer(text)):
        raw = match.group(0)
        if raw.lower().endswith(("n't", "n’t")):
            raw_word, lemma, lemmas, tags = raw, "not", frozenset({"not"}), frozenset({"PART"})
        else:
            raw_word = raw
            value = number_value(raw)
            previous = tokens[-1] if tokens else None
            if value is not None and not _is_pronoun_one(raw):
                if previous is not None and previous.number and raw.lower() in MULTIPLIERS:
                    scaled = _scale(previous.lemma, MULTIPLIERS[raw.lower()])
                    if scaled is not None:  # "2 million" is one number
                        tokens[-1] = Token(
                            previous.text + " " + raw,
                            scaled,
                            frozenset({scaled}),
                            previous.tags,
                            False,
                            previous.start,
                        )
                        forms[scaled] = previous.text + " " + raw
                        continue
                lemma, lemmas, tags = value, frozenset({value}), frozenset({"NUM"})
                forms.setdefault(value, raw)
                if raw[0] in UNITS:
                    quantities.add((value, UNITS[raw[0]]))
                elif raw.endswith("%"):
                    quantities.add((value, "%"))
            elif (joined := _NUMBER_UNIT.match(raw)) and joined.group(2).lower() in UNITS:
                value = number_value(joined.group(1)) or joined.group(1)  # "200ms"
                lemma, lemmas, tags = value, frozenset({value}), frozenset({"NUM"})
                forms.setdefault(value, raw)
                quantities.add((value, UNITS[joined.group(2).lower()]))
            elif len(raw) >= 2 and raw.isupper() and raw.isalpha():
                lemma, lemmas, tags = raw, frozenset({raw}), frozenset({"PROPN"})  # "US" is no pronoun
            else:
                lemma, lemmas, tags = analyse(raw)
                if previous is not None and previous.number and lemma in UNITS:
                    quantities.add((previous.lemma, UNITS[lemma]))
                elif lemma == "no" and index == 0 and text[match.end() : match.end() + 1] in ",.!":
                    lemma, lemmas = "no,", frozenset({"no,"})  # "No, ..." opening an answer is no negation
        entity = "NUM" not in tags and _is_entity(text, match.start(), raw_word)
        tokens.append(Token(raw_word, lemma, lemmas, tags, entity, match.start()))
    numbers = sorted(t.lemma for t in tokens if t.number)
    entities = {t.lemma: t.text for t in tokens if t.entity and t.content}
    return TextFeatures(
        tokens=tuple(tokens),
        sequence=tuple(t.lemma for t in tokens),
        words=frozenset(w for t in tokens for w in t.lemmas),
        content=frozenset(t.lemma for t in tokens if t.content),
        numbers=tuple(numbers),
        number_forms=tuple(sorted((v, forms.get(v, v)) for v in set(numbers))),
        negations=sum(t.negation for t in tokens),
        entities=frozenset(entities),
        entity_forms=tuple(sorted(entities.items())),
        quantities=frozenset(quantities),
    )


def _scale(value: str, factor: float) -> str | None:
    try:
        return repr(float(value) * factor)
    except ValueError:
        return None


def _is_pronoun_one(token: str) -> bool:
    return token.lower() == "one"


def _is_entity(text: str, start: int, token: str) -> bool:
    if any(ord(ch) > 0x2FF for ch in token):
        return True
    if any(ch.isdigit() for ch in token) and any(ch.isalpha() for ch in token):
        return True  # Q3, FY25, GPT-4o, S3
    if not token[0].isupper():
        return False
    if any(ch.isupper() for ch in token[1:]):
        return True
    before = text[:start].rstrip()
    return not (before == "" or before[-1] in _SENTENCE_START)


__all__ = [
    "MULTIPLIERS",
    "NUMBER_WORDS",
    "UNITS",
    "TextFeatures",
    "Token",
    "features",
    "normalize",
    "number_value",
]
