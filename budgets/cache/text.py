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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from budgetgraph.budgets.cache.lexicon import DISCOURSE, FUNCTION_WORDS, GREETINGS, NEGATIONS, PHATIC, analyse

_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(
    r"[^\W\d_]+\d[^\W_]*|\d+[^\W\d_]{2,}[^\W_]*|[$€£]?\d+(?:[.,]\d+)*(?:%|[kKmMbB](?![^\W\d_]))?"
    r"|[^\W\d_]+(?:['’][^\W\d_]+)*|[^\W_]+",
    re.UNICODE,
)
_NUMBER_UNIT = re.compile(r"^(\d+(?:[.,]\d+)*)([^\W\d_]+)$")
_NUMBER = re.compile(r"^[$€£]?(\d+(?:[.,]\d+)*)([%kKmMbB]?)$")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$", re.I)


def _ordinal_suffix(n: int) -> str:
    """The English ordinal suffix of ``n`` ("st" for 1 and 21, "th" for 11 to 13)."""
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


MONTHS = frozenset(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
"""Month names and their abbreviations: a number beside one is a day ("1 Oct", "October 1st")."""
_SENTENCE_START = '.?!:;"(\n*-'

NUMBER_WORDS: Mapping[str, str] = {
    **{
        word: str(value)
        for value, word in enumerate(
            "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen".split()
        )
        if word != "_"
    },
    **{
        word: str(10 * tens)
        for tens, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
    },
    "dozen": "12",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    **{
        word: f"{value}{suffix}"
        for value, word, suffix in (
            (1, "first", "st"),
            (2, "second", "nd"),
            (3, "third", "rd"),
            (4, "fourth", "th"),
            (5, "fifth", "th"),
            (6, "sixth", "th"),
            (7, "seventh", "th"),
            (8, "eighth", "th"),
            (9, "ninth", "th"),
            (10, "tenth", "th"),
        )
    },
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
    **dict.fromkeys(("percent", "pct", "%"), "%"),
    **dict.fromkeys(("ft", "foot", "feet"), "ft"),
}
"""Unit lemmas right after a number, and the unit they name: "200 ms" is not "200 s",
and "4 months" is not "4 weeks". Units of time, size, money, share and length."""

SECONDS: Mapping[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 365.25 * 86400.0 / 12,
    "quarter": 365.25 * 86400.0 / 4,
    "year": 365.25 * 86400.0,
}
"""Each unit of time in seconds (a month is a twelfth of a Julian year), so that "36 months"
and "3 years", or "90 minutes" and "1.5 hours", are the same amount."""


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
    ordinal = _ORDINAL.match(token)
    if ordinal is not None:  # "2nd" as "second" is
        return ordinal.group(1) + _ordinal_suffix(int(ordinal.group(1)))
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
        return not (self.number or self.negation or self.unit or self.lemma in FUNCTION_WORDS)

    @property
    def unit(self) -> bool:
        """True for a unit written right after a number ("4 *months*", "49 *USD*")."""
        return "UNIT" in self.tags


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
        sentence_of: The sentence (0, 1, ...) of each token.
        clause_of: The clause (0, 1, ...) of each token: sentences split at commas, colons and semicolons too.
        questions: The sentences (as in ``sentence_of``) that end in a question mark.
        request: Whether the text asks something of its reader: a question mark, or a
            first person ("we", "our", "me"), as requests to an assistant have; a
            statement ("The method returns a table.") has neither; an instruction is one too.
        instruction: Whether a sentence opens with a verb in its base form ("*Approve*
            replacing the compressors."): an instruction, which asks for what it names.
        amounts: Each number as an amount: a duration in seconds ("36 months" and
            "3 years" give the same), else its canonical value; sorted.
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
    amounts: tuple[str, ...] = ()
    sentence_of: tuple[int, ...] = ()
    clause_of: tuple[int, ...] = ()
    questions: frozenset[int] = frozenset()
    request: bool = True
    instruction: bool = False


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
            if (
                value in _ANOTHER
                and raw.isalpha()
                and previous is not None
                and previous.lemma in {"a", "an"}
                and not text[match.end() :].lstrip().lower().startswith("of ")
            ):
                value = None  # "a second dryer" is one more, as "an additional dryer" is: not a count
                raw = "additional"
            if value in ("x2", "x3") and text[match.end() : match.end() + 1] == "-":
                value = None  # "double-check", "double-booked": a word, not twice something
            if value is not None and not _is_pronoun_one(raw):
                if previous is not None and previous.number and raw.lower() in MULTIPLIERS:
                    scaled = _scale(previous.lemma, MULTIPLIERS[raw.lower()])
                    if scaled is not None:  # "2 million" is one number
                        tokens[-1] = _merged(previous, raw, scaled)
                        forms[scaled] = tokens[-1].text
                        continue
                spelled = _spelled_on(previous, raw) if previous is not None else None
                if spelled is not None and previous is not None:  # "one hundred fifty" is 150
                    tokens[-1] = _merged(previous, raw, spelled, number=True)
                    forms[spelled] = tokens[-1].text
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
            else:
                if raw.isupper() and raw.isalpha() and (len(raw) >= 2 or _is_label(text, match.start(), raw)):
                    lemma, lemmas, tags = raw, frozenset({raw}), frozenset({"PROPN"})  # "US" is no pronoun
                elif (
                    clitic := raw.lower().replace("’", "'").split("'")[0]
                ) in FUNCTION_WORDS and clitic != raw.lower():
                    lemma, lemmas, tags = analyse(clitic)  # "we're", "I'd", "it's"
                else:
                    lemma, lemmas, tags = analyse(raw)
                unit = UNITS.get(lemma.lower()) or UNITS.get(raw.lower())
                if unit is None and len(raw) > 3 and raw.lower().endswith("s"):
                    unit = UNITS.get(raw.lower()[:-1])  # plurals the lexicon lacks: "euros"
                if previous is not None and previous.number and unit is not None:
                    quantities.add((previous.lemma, unit))
                    if unit == "%" and not previous.lemma.endswith("%"):  # "ten percent" is "10%"
                        share = previous.lemma + "%"
                        tokens[-1] = _merged(previous, raw, share)
                        forms[share] = tokens[-1].text
                        continue
                    tags = frozenset({"UNIT"})
                elif lemma == "no" and index == 0 and text[match.end() : match.end() + 1] in ",.!":
                    lemma, lemmas = "no,", frozenset({"no,"})  # "No, ..." opening an answer is no negation
        entity = "NUM" not in tags and _is_entity(text, match.start(), raw_word)
        tokens.append(Token(raw_word, lemma, lemmas, tags, entity, match.start()))
    tokens = _without_frame(
        _without_label(text, _without_filler(text, _without_reassurance(text, _phrases(_as_meant(tokens)))))
    )
    sentence_of: list[int] = []
    clause_of: list[int] = []
    questions: set[int] = set()
    end = 0
    for token in tokens:
        gap = text[end : token.start]
        if sentence_of and "?" in gap:
            questions.add(sentence_of[-1])
        gap = _unabbreviated(gap, text[max(0, end - 16) : end])
        sentence_of.append((sentence_of[-1] if sentence_of else 0) + (not _SENTENCE_END.isdisjoint(gap)))
        clause_of.append((clause_of[-1] if clause_of else 0) + (not _CLAUSE_END.isdisjoint(gap)))
        end = token.start + len(token.text)
    if sentence_of and "?" in text[end:]:
        questions.add(sentence_of[-1])
    numbers = sorted(t.lemma for t in tokens if t.number)
    entities = {t.lemma: t.text for t in tokens if t.entity and t.content}
    instruction = _imperative(tokens, sentence_of)
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
        sentence_of=tuple(sentence_of),
        clause_of=tuple(clause_of),
        questions=frozenset(questions),
        request="?" in text or any(t.lemma in FIRST_PERSON for t in tokens) or instruction,
        instruction=instruction,
        amounts=tuple(
            sorted(
                _amount(t, tokens[i + 1] if i + 1 < len(tokens) else None)
                for i, t in enumerate(tokens)
                if t.number
            )
        ),
    )


def _without_filler(text: str, tokens: list[Token]) -> list[Token]:
    """``tokens`` less the clauses that are phatic talk or sentence framing only.

    A clause runs to the next comma, colon or sentence end. It is filler when it
    has a :data:`~budgetgraph.budgets.cache.lexicon.PHATIC` or
    :data:`~budgetgraph.budgets.cache.lexicon.DISCOURSE` word and otherwise only
    function words ("Thanks in advance.", "Quick question:", "Good idea?"), or
    when it is a short greeting ("Hi Sam,"). A clause with a number, a negation
    or a name (outside a greeting) is never filler; nor is the last clause left.

    A preamble is filler too: a clause closed by a colon, full stop or exclamation
    mark, before a question, in which the writer talks to the reader about the asking
    (:func:`_aside`: "I'm just trying to figure this out:", "Hope your week is going
    well.", "quick question when you get a chance:").
    """
    clauses: list[list[Token]] = []
    closers: list[str] = []
    end = 0
    for token in tokens:
        gap = _unabbreviated(text[end : token.start], text[max(0, end - 16) : end])
        if not clauses or not _CLAUSE_END.isdisjoint(gap):
            if clauses:
                closers.append(gap)
            clauses.append([])
        clauses[-1].append(token)
        end = token.start + len(token.text)
    closers.append(text[end:])
    asked = [i for i, closer in enumerate(closers) if "?" in closer]
    kept = [
        c
        for i, c in enumerate(clauses)
        if not (
            _filler(c) or (asked and i < asked[-1] and not _PREAMBLE_END.isdisjoint(closers[i]) and _aside(c))
        )
    ]
    if len(kept) == len(clauses) or not kept:
        return tokens
    return [t for c in kept for t in c]


PHRASES: Mapping[tuple[str, str], str] = {
    ("ahead", "of"): "before",
    ("prior", "to"): "before",
    ("just", "for"): "only",
}
"""Two-word prepositions read as the one word they mean ("*ahead of* harvest": "before harvest",
"*just for* subscribers": "only subscribers")."""

VERB_PHRASES: Mapping[tuple[str, str], str] = {
    ("give", "up"): "forgo",
    ("make", "money"): "earn",
    ("turn", "down"): "decline",
    ("take", "on"): "hire",
}
"""Two-word verbs read as the one verb they mean ("what do we *give up*": "what do we forgo")."""

SAME_AS: Mapping[str, str] = {"extra": "additional"}
"""Lemmas read as another ("an *extra* line": "an additional line")."""


def _as_meant(tokens: list[Token]) -> list[Token]:
    """``tokens`` with three word forms read as what they mean.

    "yes or *no*" and "or *not*" name the two answers, no negation; "two *more*" is two
    additional; an ordinal beside a month is its day ("October *1st*" is "1 Oct").
    """
    out = list(tokens)
    for i, token in enumerate(tokens):
        before = tokens[i - 1].lemma if i else ""
        if (token.lemma == "no" and before == "or" and i >= 2 and tokens[i - 2].lemma == "yes") or (
            token.lemma == "not" and before == "or"
        ):  # "a yes or no on", "introduce it or not": the two answers asked for, no negation
            out[i] = Token(
                token.text, "answer", frozenset({"answer"}), frozenset({"NOUN"}), False, token.start
            )
            continue
        if token.lemma == "more" and i and tokens[i - 1].number:  # "two more drivers": two additional
            out[i] = Token(
                token.text, "additional", frozenset({"additional"}), token.tags, False, token.start
            )
            continue
        ordinal = _ORDINAL.match(token.lemma) if token.number else None
        if ordinal is None:
            continue
        beside = [tokens[k].lemma.lower() for k in (i - 1, i + 1) if 0 <= k < len(tokens)]
        if MONTHS.intersection(beside) or (
            i >= 2 and tokens[i - 1].lemma == "of" and tokens[i - 2].lemma.lower() in MONTHS
        ):
            day = repr(float(ordinal.group(1)))
            out[i] = Token(token.text, day, frozenset({day}), token.tags, False, token.start)
    return out


def _phrases(tokens: list[Token]) -> list[Token]:
    """``tokens`` with :data:`PHRASES` and :data:`VERB_PHRASES` made one token, :data:`SAME_AS` applied."""
    out: list[Token] = []
    for token in tokens:
        previous = out[-1] if out else None
        pair = (previous.lemma, token.lemma) if previous is not None else None
        meant = PHRASES.get(pair) if pair is not None else None
        verb = VERB_PHRASES.get(pair) if pair is not None else None
        if (meant or verb) and previous is not None:
            tags = frozenset({"ADP"} if meant else {"VERB"})
            out[-1] = Token(
                previous.text, meant or verb, frozenset({meant or verb}), tags, False, previous.start
            )
            continue
        same = SAME_AS.get(token.lemma)
        if same is not None:
            token = Token(token.text, same, frozenset({same}), token.tags, token.entity, token.start)
        out.append(token)
    return out


_ANOTHER = frozenset({"2nd"})
"""Ordinals that after "a" or "an" mean one more ("a second line"), read as "additional"
(not "a third": one more than two, nor "a second of", a fraction)."""

_REASSURANCE = re.compile(
    r"(?:(?:^|(?<=[.!?,;:(]))\s*"
    r"(?:no (?:rush|hurry|worries|pressure|stress)(?: at all| really| on (?:this|it))?|yes or no|yes/no)"
    r"|\b(?:if|when) you (?:have|get|find) (?:a|the) (?:minute|moment|sec|second|chance))"
    r"\s*(?=$|[.!?,;:)]|[-–—]\s)",
    re.I,
)
"""Reassurance and courtesy, not negation or a condition, standing as a clause of their own:
"No rush.", "no rush at all,", "quick question if you have a minute:", "Yes or no?" (not "no
pressure testing")."""


def _without_reassurance(text: str, tokens: list[Token]) -> list[Token]:
    """``tokens`` less the words of a reassurance (:data:`_REASSURANCE`)."""
    spans = [match.span() for match in _REASSURANCE.finditer(text)]
    if not spans:
        return tokens
    return [t for t in tokens if not any(start <= t.start < end for start, end in spans)]


FRAME_WORDS: frozenset[str] = frozenset(
    "need want like love decision decide view input thought advice answer figure understand know "
    "wonder ask tell clarity try recommendation recommend opinion look".split()
)
"""Lemmas of a request's frame, which asks for the decision without being part of it: "*I need a
decision on* whether to close", "*we want to know* if it makes sense", "*tell me* whether"."""

_OPENERS = frozenset({"whether", "if"})
_MODALS = frozenset("shall should can could will would may might must".split())


def _without_label(text: str, tokens: list[Token]) -> list[Token]:
    """``tokens`` less a label that opens the request before a colon.

    "*Proposal:* move the night sort", "*Decision needed:* ...", "*Pls confirm:* do we ...":
    up to three words of :data:`LABELS` and :data:`LABEL_WORDS`, closed by a colon.
    """
    for end in range(1, min(4, len(tokens))):
        gap = text[tokens[end - 1].start + len(tokens[end - 1].text) : tokens[end].start]
        if ":" in gap:
            words = tokens[:end]
            if all(t.lemma in LABELS or t.lemma in LABEL_WORDS for t in words):
                return tokens[end:]
            return tokens
        if not gap.isspace():
            return tokens
    return tokens


LABELS = frozenset("proposal idea ask request decision suggestion plan option recommendation".split())
"""Words that label an instruction before a colon ("*Proposal:* move the kiosks ...")."""

LABEL_WORDS = frozenset("need require please pls plz confirm advise quick".split())
"""Words that may join :data:`LABELS` in a label ("Decision *needed*:", "*Pls confirm*:")."""


def _without_frame(tokens: list[Token]) -> list[Token]:
    """``tokens`` less a frame that opens the request before "whether" or "if".

    The frame is every word before the first "whether" or "if", when those are
    only function words and :data:`FRAME_WORDS`, phatic or discourse words, with
    no number, name or negation: "I need a decision on whether to close the store"
    reads "whether to close the store", as "Should we close the store?" asks. A
    condition that opens the request ("If the round fails, should we ...") has no
    frame before it.
    """
    opener = next(
        (
            i
            for i, t in enumerate(tokens)
            if t.lemma in _OPENERS or (t.lemma in _ON and i and tokens[i - 1].lemma in _ASKED_FOR)
        ),
        None,
    )
    if not opener:
        return tokens
    frame = tokens[:opener]
    if frame[0].lemma in _MODALS and not (len(frame) > 1 and frame[1].lemma == "you"):
        return tokens  # "Should we call it if ..." asks; "Could you tell me whether" frames
    start = opener  # the frame's first word: back over frame, talk and function words
    while start and _framing(tokens[start - 1]):
        start -= 1
    frame = tokens[start:opener]
    if not frame or not any(t.lemma in FRAME_WORDS or _talk(t) for t in frame):
        return tokens
    if start and not any(t.lemma in _FRAME_VERBS for t in frame):
        return tokens  # after a subject, only "needs a decision on": "the *board's decision* on"
    kept = tokens[:start] + tokens[opener + (tokens[opener].lemma in _ON) :]
    return kept if kept else tokens


_ON = frozenset({"on", "about"})
_ASKED_FOR = frozenset("decision call steer view input thought advice recommendation opinion answer".split())
"""Nouns after which "on" or "about" opens what is asked: "we need a decision *on* moving X"."""
_FRAME_VERBS = frozenset("need want like love ask".split())


def _framing(token: Token) -> bool:
    """A word a frame may hold: a function word, talk or a frame word, nothing that decides."""
    if token.number or token.negation or (token.entity and token.lemma.lower() != "i"):
        return False
    return _function(token) or _talk(token) or token.lemma in _FRAMED or token.lemma in _ASKED_FOR


_CLAUSE_END = frozenset(",.?!:;")

ABBREVIATED = frozenset(
    "st mt ft dr mr mrs ms prof rev gen col sgt lt capt inc co corp ltd llc plc bros dept univ assn "
    "est approx vs etc jr sr ave blvd rd hwy no nos fig vol ch sec".split()
)
"""Words abbreviated with a full stop that ends no sentence ("St. Mary's", "Acme Inc. and")."""

_DASHES = frozenset({"-", "–", "—"})
_AFTER_WORD = re.compile(r"([^\W\d_]+)\W*$")


def _unabbreviated(gap: str, before: str) -> str:
    """The gap between two tokens, read as punctuation.

    A spaced dash closes a clause as a colon does ("Hi team - should we ..."); the full stop
    of an abbreviation (:data:`ABBREVIATED`, or one capital letter: "J. Smith") closes nothing.
    """
    if gap.strip() in _DASHES and gap[:1].isspace() and gap[-1:].isspace():
        return gap + ":"
    if gap.strip() == ".":
        found = _AFTER_WORD.search(before)
        word = found.group(1) if found else ""
        if word.lower() in ABBREVIATED or (len(word) == 1 and word.isupper()):
            return gap.replace(".", " ")
    return gap


_PREAMBLE_END = frozenset(".!:")

SPEECH_PERSONS = frozenset("i me my mine myself you your yours yourself".split())
"""Pronouns of the writer alone and of the reader: a clause with one and nothing of the
decision in it talks about the asking ("I'm just checking", "hope you're well"); the first
person plural ("we", "our") speaks for the organisation, and its clauses are context."""
_SENTENCE_END = frozenset(".?!;")

FIRST_PERSON = frozenset("i me my mine myself we us our ours ourselves".split())
"""Pronouns of the first person: a text with one speaks for its writer (a request, not a statement)."""


_READER = SPEECH_PERSONS - FIRST_PERSON
_ASKING_NOUNS = frozenset("recommendation advice opinion view input thought".split())
_FRAMED = FRAME_WORDS | {"give", "take", "help"}
"""Words of a clause that asks the reader ("*give* me a recommendation", "your *take*")."""


def _filler(clause: list[Token]) -> bool:
    if clause[0].lemma in GREETINGS and len(clause) <= 3 and not any(t.number or t.negation for t in clause):
        return True
    # A clause that asks the reader ("give me a recommendation", "would love your take") frames the
    # request with its words too.
    framing = any(t.lemma in _READER or t.lemma in _ASKING_NOUNS for t in clause)
    talk = [t for t in clause if _talk(t) or (framing and t.lemma in _FRAMED)]
    return bool(talk) and all(
        (_talk(t) or _function(t) or (framing and t.lemma in _FRAMED))
        and not (t.number or t.negation or (t.entity and t.lemma not in SPEECH_PERSONS))
        for t in clause
    )


def _aside(clause: list[Token]) -> bool:
    """Whether a clause talks to the reader about the asking, not about the decision.

    It has a pronoun of :data:`SPEECH_PERSONS` or a phatic word, and no number,
    negation, name, condition ("if", "unless", "once") or first person plural.
    """
    if not any(t.lemma in SPEECH_PERSONS or t.lemmas & PHATIC for t in clause):
        return False
    return not any(
        t.number
        or t.negation
        or (t.entity and t.lemma not in SPEECH_PERSONS)
        or t.lemma in FIRST_PERSON - SPEECH_PERSONS
        or ("SCONJ" in t.tags and t.lemma != "when")
        for t in clause
    )


def _talk(token: Token) -> bool:
    return bool(token.lemmas & PHATIC or token.lemmas & DISCOURSE)


def _function(token: Token) -> bool:
    """A function word, also with a clitic ("you're", "I'd")."""
    lower = token.text.lower().replace("’", "'")
    return token.lemma in FUNCTION_WORDS or lower.split("'")[0] in FUNCTION_WORDS


def _merged(previous: Token, raw: str, value: str, *, number: bool = False) -> Token:
    """``previous`` (a number, or "one" when ``number``) and the word after it as one number token."""
    tags = frozenset({"NUM"}) if number else previous.tags
    return Token(previous.text + " " + raw, value, frozenset({value}), tags, False, previous.start)


def _amount(number: Token, after: Token | None) -> str:
    """A number's amount: in seconds when a unit of time follows it, else its canonical value."""
    unit = UNITS.get(after.lemma) if after is not None and after.unit else None
    if unit in SECONDS:
        try:
            return f"{round(float(number.lemma) * SECONDS[unit], 3)!r} s"
        except ValueError:
            pass
    return number.lemma


SCALES: Mapping[str, float] = {"hundred": 1e2, "thousand": 1e3, "million": 1e6, "billion": 1e9}
"""Number words that multiply the count before them ("one hundred", "two thousand")."""


def _spelled_on(previous: Token, raw: str) -> str | None:
    """The value of a spelled number continued by the word ``raw``, else ``None``.

    "one" + "hundred" is 100 ("one" is otherwise a pronoun), "two hundred" is 200,
    "one hundred" + "fifty" is 150 and "twenty" + "five" is 25: a scale word multiplies
    a spelled count before it, a smaller spelled number adds to a round one before it.
    """
    word = raw.lower()
    if not all(w.lower() in NUMBER_WORDS or w.lower() == "one" for w in previous.text.split()):
        return None
    if word in SCALES:
        count = 1.0 if previous.text.lower() == "one" else _float(previous.lemma)
        return None if count is None else repr(count * SCALES[word])
    before, after = _float(previous.lemma), _float(NUMBER_WORDS.get(word, ""))
    if not previous.number or before is None or after is None or after >= 100:
        return None
    if (before >= 100 and before % 100 == 0) or (20 <= before < 100 and before % 10 == 0 and after < 10):
        return repr(before + after)
    return None


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _scale(value: str, factor: float) -> str | None:
    try:
        return repr(float(value) * factor)
    except ValueError:
        return None


def _is_pronoun_one(token: str) -> bool:
    return token.lower() == "one"


def _is_label(text: str, start: int, letter: str) -> bool:
    """Whether a single capital letter names something ("hall *B*", "Plan *A*"), not "I" or an article.

    "A" opening a sentence is the article; anywhere else a capital letter alone is a label.
    """
    if letter == "I":
        return False
    before = text[:start].rstrip()
    return letter != "A" or not (before == "" or before[-1] in _SENTENCE_START)


def _imperative(tokens: Sequence[Token], sentence_of: Sequence[int]) -> bool:
    """Whether the request opens with a verb in its base form ("*Approve* replacing the compressors").

    An instruction asks for what it names, as a question does; a statement ("The
    method returns a table.", "*Evaluate* is a library") opens with its subject, and
    documentation's how-to (:data:`HOW_TO`: "*Use* ``map()`` to apply a function")
    tells the reader how, which its paraphrases reword freely. A label before a colon
    ("Proposal:") is gone by then (:func:`_without_label`).
    """
    if len(tokens) < 2 or sentence_of[1] != sentence_of[0]:
        return False
    verb, following = tokens[0], tokens[1]
    if "VERB" not in verb.tags or verb.lemma != verb.text.lower() or not verb.content or verb.lemma in HOW_TO:
        return False
    return "AUX" not in following.tags


HOW_TO = frozenset("use see note remember refer read install import call pass specify try".split())
"""Verbs that open documentation's instructions to its reader, not a decision asked for."""


def _is_entity(text: str, start: int, token: str) -> bool:
    if any(ord(ch) > 0x2FF for ch in token):
        return True
    if any(ch.isdigit() for ch in token) and any(ch.isalpha() for ch in token):
        return True  # Q3, FY25, GPT-4o, S3
    if any(ch.isupper() for ch in token[1:]):
        return True  # iOS, eBay, SaaS
    if not token[0].isupper():
        return False
    before = text[:start].rstrip()
    return not (before == "" or before[-1] in _SENTENCE_START)


__all__ = [
    "MULTIPLIERS",
    "NUMBER_WORDS",
    "SECONDS",
    "UNITS",
    "TextFeatures",
    "Token",
    "features",
    "normalize",
    "number_value",
]
