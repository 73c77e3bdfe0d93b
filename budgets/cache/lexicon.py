"""Word classes the guard reads: lemmas and parts of speech, closed classes, valence, opposite affixes.

Where a maintained package has the knowledge, it comes from there:

- **Lemmas and open-class parts of speech**: ``lemminflect`` (Jascob; its
  lexicon is derived from the NIH SPECIALIST Lexicon and the Automatically
  Generated Inflection Database), ``getAllLemmas(word) -> {UPOS: lemmas}``.
  Loaded on first use (about 0.14 s and 34 MB); only a judged candidate loads
  it, never a miss. Its lexicon covers the open classes only (``the``, ``of``,
  ``with`` have no entry), so the closed classes below complete it.
- **Valence**: the VADER lexicon (Hutto and Gilbert, 2014, ``vaderSentiment``
  package, ``vader_lexicon.txt``): 7,500 words rated from -4 to +4 by human
  raters. Two requests that differ in a word of opposite valence ("risks" /
  "benefits", "worst" / "best", "hurt" / "help") ask the opposite side of a
  question.

- **Synonyms**: Princeton WordNet 3.0 (Miller, 1995) as Debian's ``wordnet-base``
  installs it (``/usr/share/wordnet``; ``BUDGETGRAPH_WORDNET`` names another
  directory in WordNet's database format, ``wndb(5WN)``): two words mean the same
  when, as one part of speech, the most frequent sense of one is a sense of the other
  ("hire" / "employ", "terminate" / "end", "auto" / "car"). :func:`synonyms` reads
  the index files; when they are not there it says so once in a warning and finds
  none, and the guard falls back on the embedder alone.

What no maintained package on PyPI ships is written here, each class named
for what it is: the closed word classes of Universal Dependencies (a finite,
grammatical set, not a list of "unimportant" words), the pairs of opposite
relation words, and the derivational prefixes that turn a word into its
opposite or its reverse (English morphology: "upgrade" / "downgrade",
"centralize" / "decentralize", "advantage" / "disadvantage"). WordNet's data
is on no PyPI package from its maintainers (checked: ``wn`` and ``nltk``
download their data at run time; ``oewn-core`` is code only;
``wordnet-lookup`` has no relations), hence Debian's; NLTK's reader refuses
that directory (it lacks NLTK's ``lexnames`` file and lies outside NLTK's
allowed data paths), and a synonym test needs only the index files' synset
offsets, so :func:`synonyms` reads them itself.
"""

from __future__ import annotations

import bisect
import importlib.resources
import logging
import os
import re
import threading
from array import array
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

CLOSED_CLASSES: Mapping[str, frozenset[str]] = {
    "DET": frozenset(
        "a an the this that these those each every any some all both either neither no another such "
        "what which whatever whichever much many several few".split()
    ),
    "PRON": frozenset(
        "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his "
        "himself she her hers herself it its itself they them their theirs themselves one someone "
        "somebody something anyone anybody anything everyone everybody everything who whom whose".split()
    ),
    "ADP": frozenset(
        "about above across after against along among around as at before behind below beneath beside "
        "between beyond by despite down during except for from in inside into like near of off on onto "
        "out outside over past per since than through throughout till to toward towards under until up "
        "upon via versus vs with within without instead".split()
    ),
    "AUX": frozenset(
        "be am is are was were been being have has had having do does did done doing can could may "
        "might must shall should will would ought".split()
    ),
    "CCONJ": frozenset("and or but nor so yet plus".split()),
    "SCONJ": frozenset(
        "if whether because although though while when where unless once how why given".split()
    ),
    "PART": frozenset("not to 's".split()),
}
"""Universal Dependencies' closed classes for English (determiners, pronouns, adpositions,
auxiliaries, conjunctions, particles): the words the open-class lexicon has no entry for."""

FUNCTION_WORDS: frozenset[str] = frozenset().union(*CLOSED_CLASSES.values()) | frozenset(
    "there here then also just very really too s t d ll m re ve".split()
)
"""Words that never carry a decision by themselves (closed classes, expletive ``there``, clitics)."""

NEGATIONS: frozenset[str] = frozenset(
    "not no never none nothing nobody neither nor cannot without unless non".split()
)
"""Negation cues; ``n't`` contractions count as ``not``, ``unless`` is "if not", and ``non``
is the prefix of a hyphenated word ("non-compliant"), which the tokenizer splits off."""

TOWARD_WORDS = ("to", "into", "onto", "toward", "towards")
"""Prepositions of a movement's goal: "move the platform *to* ClickHouse"."""
AWAY_WORDS = ("from", "off", "out", "away")
"""Prepositions and particles of a movement's source: "move the platform *off* ClickHouse"."""

RELATION_OPPOSITES: tuple[tuple[str, str, str], ...] = (
    *((toward, away, "direction") for toward in TOWARD_WORDS for away in AWAY_WORDS),
    ("in", "out", "direction"),
    ("on", "off", "direction"),
    ("up", "down", "direction"),
    ("over", "under", "direction"),
    ("above", "below", "direction"),
    ("before", "after", "direction"),
    ("ahead", "behind", "direction"),
    ("inside", "outside", "direction"),
    ("toward", "away", "direction"),
    ("with", "without", "negation"),
    ("for", "against", "polarity"),
    ("pro", "con", "polarity"),
    ("pros", "cons", "polarity"),
    ("more", "less", "direction"),
    ("more", "fewer", "direction"),
    ("most", "least", "direction"),
)
"""Closed-class words whose swap reverses a request, and the category of the change."""

RELATIONS: frozenset[str] = frozenset(
    "to from into onto off than vs versus over under before after against instead with for toward towards "
    "above below ahead behind by through via 1st first then afterwards".split()
)
"""Words that give the terms around them different roles: "from AWS to GCP" / "from GCP to AWS",
"reroute Rotterdam cargo *through* Antwerp" / "Antwerp cargo through Rotterdam", "trench *first*
and pour afterwards" / "pour first and trench afterwards" ("first" is read as the number "1st")."""

OPPOSITE_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("up", "down", "direction"),
    ("in", "out", "direction"),
    ("inbound", "outbound", "direction"),
    ("over", "under", "direction"),
    ("im", "ex", "direction"),
    ("in", "ex", "direction"),
    ("in", "de", "direction"),
    ("en", "de", "direction"),
    ("on", "off", "direction"),
    ("pre", "post", "direction"),
    ("max", "min", "direction"),
    ("", "de", "action"),
    ("", "dis", "polarity"),
    ("", "un", "polarity"),
    ("", "non", "polarity"),
    ("", "anti", "polarity"),
    ("", "counter", "polarity"),
    ("", "in", "polarity"),
    ("", "im", "polarity"),
    ("", "il", "polarity"),
    ("", "ir", "polarity"),
    ("", "mis", "polarity"),
)
"""Derivational prefixes of English that make a word's opposite or reverse, as
``(prefix of one, prefix of the other, category)``: "upgrade" / "downgrade",
"insource" / "outsource", "increase" / "decrease", "centralize" / "decentralize",
"advantage" / "disadvantage". The stem left after the prefixes must be at least
:data:`MIN_STEM` letters and the same in both words."""

MIN_STEM = 4
"""Shortest stem an opposite prefix is read on ("in"/"out" + "side" passes; "un" + "it" does not)."""

FRAMING: frozenset[str] = frozenset(
    "consider assess decide determine evaluate weigh identify estimate call whether".split()
)
"""Lemmas of the imperative and deliberative forms of a decision request ("assess whether we
should", "we are considering", "make a call on whether to", "identify the risks"): they
recast the request without changing the decision asked for."""

DISCOURSE: frozenset[str] = (
    frozenset(
        "please kindly thank thanks honestly quick question tell know think wonder opinion view idea good "
        "wise sensible sense make worth advisable advise recommend recommendation right correct best way "
        "actually currently basically really just".split()
    )
    | FRAMING
)
"""Lemmas that recast a request without changing it: politeness ("could you tell me",
"please"), and the sentence forms of "should we" ("is it a good idea to", "would it be
wise to", "does it make sense to", "what is the best way to"). A span made only of these
and function words is filler, not a qualifier."""

PHATIC: frozenset[str] = frozenset(
    "hi hello hey dear greeting morning afternoon evening team folks everyone sorry bother apologize "
    "apology thank thanks appreciate grateful hope well fine follow following earlier note check "
    "checking wonder wondering question quick one moment time advance advise let know input thought "
    "feedback ask curious mind again reminder ping um uh erm hmm cheers steer flag flagging pls plz "
    "yes".split()
)
"""Lemmas of phatic talk: greetings, thanks, apologies, follow-ups and requests for an opinion
("Hi team, quick question:", "Thanks in advance.", "Following up on my earlier note:",
"Let me know what you think."). Only a whole sentence or clause of these, function words and
:data:`DISCOURSE` words is filler (``budgetgraph.budgets.cache.text.features`` drops it);
alone, "check" or "team" can carry a decision."""

RESTRICTIVES: frozenset[str] = frozenset("only except excluding exclusively solely apart besides".split())
"""Words that narrow a request to part of what it names ("for commercial customers *only*",
"everyone *except* contractors"): in one request alone, however reworded, a qualifier."""

REVERSALS: frozenset[str] = frozenset("back revert undo rollback reverse restore".split())
"""Words that undo a move ("roll the firmware *back*", "fail *back* to Chicago", "*revert* to
the old plan"): in one request alone, however reworded, the reverse direction."""

CONTRASTS: frozenset[str] = frozenset({"rather", "instead"})
"""Words that name the alternative turned down ("customer success, *rather than* sales",
"lease *instead of* buying"): in one request alone, however reworded, a changed question."""

OPPOSED: frozenset[str] = frozenset({"against"})
"""Words that ask for the other side ("the arguments *against*" / "make the case for"): in one
request alone, however reworded, the other polarity."""

PEOPLE: frozenset[str] = frozenset(
    "contractor employee staff intern temp freelancer volunteer consultant vendor supplier partner "
    "customer client patient student teacher nurse doctor physician manager engineer driver agent "
    "member tenant guest visitor resident parent user subscriber".split()
)
"""Nouns for the groups of people a decision is about or made by: one group for another
("contractors" / "our own employees"), however reworded, is another actor."""

GREETINGS: frozenset[str] = frozenset("hi hello hey dear greetings morning".split())
"""Words that open a greeting clause, which may name its addressee ("Hi Sam,", "Hello team,")."""

SIDES: Mapping[str, int] = {
    **dict.fromkeys(
        "benefit advantage upside pro plus merit strength opportunity gain profit revenue income "
        "earnings save saving savings earn return payoff reward win success succeed help tailwind improve "
        "improvement better best right upswing strong strongest".split(),
        1,
    ),
    **dict.fromkeys(
        "risk drawback disadvantage downside con minus weakness threat danger loss cost expense "
        "spend penalty pitfall liability harm hurt fail failure burden headwind deteriorate lose "
        "deterioration worsen worse worst wrong downturn forgo sacrifice weak weakest".split(),
        -1,
    ),
}
"""The two sides of a cost-benefit question, as nouns (and their verbs) that name what a
decision brings (+1) or takes (-1): "the *upsides* of" / "the *downsides* of", "what
would we *save*" / "what would it *cost*", "extra *revenue*" / "extra *cost*". VADER rates
some of them ("benefit" +2.0, "risk" -1.1) and leaves the accounting ones unrated ("cost",
"saving", "revenue", "upside", "drawback"), which are the ones a business request asks about;
this closed set completes it, with the directions of an outcome ("improve" / "deteriorate",
"what could go *right*" / "go *wrong*", "tailwinds" / "headwinds"). :func:`side` reads both."""

WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's ``wordnet-base`` puts WordNet 3.0 (``BUDGETGRAPH_WORDNET`` overrides it)."""

WORDNET_POS: Mapping[str, str] = {"VERB": "verb", "NOUN": "noun", "ADJ": "adj", "ADV": "adv"}
"""Universal POS tags and WordNet's index files (``index.verb``, ...)."""

logger = logging.getLogger(__name__)
_WORDNET: dict[str, tuple[bytes, array[int]] | None] = {}

_LEXICON_LOCK = threading.Lock()
_VALENCE: dict[str, float] | None = None


def valence(word: str) -> float:
    """The word's VADER valence, -4 (most negative) to +4; 0.0 when it is not rated.

    Reads ``vaderSentiment/vader_lexicon.txt`` from the installed package on the
    first call (about 10 ms); the word is looked up lower-cased.
    """
    global _VALENCE
    if _VALENCE is None:
        with _LEXICON_LOCK:
            if _VALENCE is None:
                _VALENCE = _read_valence()
    return _VALENCE.get(word.lower(), 0.0)


def _read_valence() -> dict[str, float]:
    text = (importlib.resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    table: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                table[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return table


@lru_cache(maxsize=65536)
def analyse(word: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """A word's canonical lemma, all its lemmas, and the parts of speech (UPOS) it can take.

    Open classes come from ``lemminflect``; closed classes from
    :data:`CLOSED_CLASSES`; a word neither knows keeps its lower-cased form
    and the tag ``X``. The canonical lemma is the verb's when the word can be
    a verb ("leasing" -> "lease"), else the noun's, the adjective's, the
    adverb's: the same choice for the same word in both requests, so that
    aligned words compare equal.

    Args:
        word: One token as written (case is ignored).

    Returns:
        ``(lemma, lemmas, tags)``.
    """
    lower = word.lower().replace("’", "'")
    tags = {tag for tag, words in CLOSED_CLASSES.items() if lower in words}
    from lemminflect import getAllLemmas  # noqa: PLC0415 (loaded on the first judged candidate only)

    found = getAllLemmas(lower)
    lemmas = {lemma.lower() for forms in found.values() for lemma in forms}
    closed = set(tags)
    if not tags:
        tags = set(found)
    canonical = lower
    for tag in ("VERB", "NOUN", "ADJ", "ADV"):
        if tag in found and not closed - {"AUX"}:  # "given" (SCONJ) stays itself; "is" (AUX) is "be"
            canonical = found[tag][0].lower()
            break
    return canonical, frozenset(lemmas | {lower, canonical}), frozenset(tags or {"X"})


def _wordnet_dir() -> Path:
    """WordNet's database folder: ``BUDGETGRAPH_WORDNET``, else :data:`WORDNET_DIR`."""
    return Path(os.environ.get("BUDGETGRAPH_WORDNET") or WORDNET_DIR)


def _wordnet_index(pos: str) -> tuple[bytes, array[int]] | None:
    """WordNet's ``index.<pos>`` and the start of each entry line, or ``None`` when it is not installed.

    The entries are sorted by lemma (``wndb(5WN)``), so a lemma is found by binary search.
    """
    if pos in _WORDNET:
        return _WORDNET[pos]
    with _LEXICON_LOCK:
        if pos not in _WORDNET:
            try:
                data = (_wordnet_dir() / f"index.{pos}").read_bytes()
            except OSError as exc:
                if not any(found is None for found in _WORDNET.values()):
                    logger.warning(
                        "WordNet not found (%s): the cache's guard tests replaced words for synonymy with "
                        "the embedder only; install Debian's `wordnet-base` or set BUDGETGRAPH_WORDNET",
                        exc,
                    )
                _WORDNET[pos] = None
            else:
                starts = array("l", [0] if data[:1] != b" " else [])
                starts.extend(
                    m.end() for m in _LINE.finditer(data) if data[m.end() : m.end() + 1] not in (b" ", b"")
                )
                _WORDNET[pos] = (data, starts)
        return _WORDNET[pos]


_LINE = re.compile(rb"\n")


@lru_cache(maxsize=8192)
def synsets(word: str, tag: str) -> tuple[str, ...]:
    """WordNet's synsets (byte offsets, as written) of ``word`` as the part of speech ``tag``.

    The most frequent sense comes first.

    Args:
        word: A lemma ("hire", "auto"); lower-cased, spaces as ``_``.
        tag: A Universal POS tag of :data:`WORDNET_POS`; any other gives none.

    Returns:
        The synset offsets, empty when the word is not in WordNet or WordNet is not installed.
    """
    pos = WORDNET_POS.get(tag)
    found = _wordnet_index(pos) if pos else None
    if found is None:
        return ()
    data, starts = found
    key = word.lower().replace(" ", "_").encode("utf-8", "replace")

    def lemma_at(i: int) -> bytes:
        start = starts[i]
        return data[start : data.index(b" ", start)]

    at = bisect.bisect_left(range(len(starts)), key, key=lemma_at)
    if at == len(starts) or lemma_at(at) != key:
        return ()
    end = data.find(b"\n", starts[at])
    fields = data[starts[at] : end if end >= 0 else len(data)].split()
    # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...,
    # the offsets most frequent sense first
    count = int(fields[2])
    return tuple(f.decode() for f in fields[len(fields) - count :])


def synonyms(a: str, b: str, tags: frozenset[str]) -> bool:
    """Whether ``a`` and ``b`` mean the same as one of the parts of speech ``tags``, by WordNet.

    The most frequent sense of one must be a sense of the other ("hire" / "employ", "cut" /
    "reduce"): a rare sense shared is not enough ("fire" and "raise" share one, "acquire"
    and "grow" another). Verbs count too when the most frequent sense of one is a manner of
    one of the other's :data:`TROPONYM_SENSES` commonest senses (its direct hypernym,
    ``wndb(5WN)`` pointer ``@``): "postpone" is a way to "delay", "raise" one to "increase".
    """
    for tag in tags:
        if tag in WORDNET_POS:
            mine, theirs = synsets(a, tag), synsets(b, tag)
            if (mine and mine[0] in theirs) or (theirs and theirs[0] in mine):
                return True
            if tag == "VERB" and mine and theirs and (_manner_of(mine, theirs) or _manner_of(theirs, mine)):
                return True
    return False


def _manner_of(senses: tuple[str, ...], others: tuple[str, ...]) -> bool:
    """Whether the commonest of ``senses`` has one of the commonest ``others`` as its direct hypernym."""
    return not set(hypernyms(senses[0], "VERB")).isdisjoint(others[:TROPONYM_SENSES])


TROPONYM_SENSES = 3
"""How many of a verb's commonest senses another verb's commonest sense may be a manner of."""


@lru_cache(maxsize=8192)
def hypernyms(offset: str, tag: str) -> tuple[str, ...]:
    """The direct hypernyms (synset offsets) of WordNet's synset at ``offset`` as the part of speech ``tag``.

    Read from ``data.<pos>`` at that byte offset (``wndb(5WN)``); empty when WordNet is not installed.
    """
    pos = WORDNET_POS.get(tag)
    if pos is None or _wordnet_index(pos) is None:
        return ()
    try:
        with (_wordnet_dir() / f"data.{pos}").open("rb") as data:
            data.seek(int(offset))
            fields = data.readline().split(b"|")[0].split()
    except (OSError, ValueError):
        return ()
    # offset lex_filenum ss_type w_cnt (word lex_id)... p_cnt (symbol offset pos source/target)...
    at = 4 + 2 * int(fields[3], 16)
    count = int(fields[at])
    pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(count)]
    return tuple(p[1].decode() for p in pointers if p[0] == b"@")


def opposite_affix(a: str, b: str) -> str | None:
    """The category when ``a`` and ``b`` are one stem under opposite prefixes, else ``None``.

    See :data:`OPPOSITE_PREFIXES`.
    """
    if a == b:
        return None
    for left, right, category in OPPOSITE_PREFIXES:
        for x, y in ((a, b), (b, a)):
            if x.startswith(left) and y.startswith(right):
                stem_x, stem_y = x[len(left) :], y[len(right) :]
                if stem_x == stem_y and len(stem_x) >= MIN_STEM:
                    return category
    return None


def opposite_relation(a: str, b: str) -> str | None:
    """The category when ``a`` and ``b`` are opposite relation words, else ``None``.

    See :data:`RELATION_OPPOSITES`.
    """
    for left, right, category in RELATION_OPPOSITES:
        if {a, b} == {left, right}:
            return category
    return None


def side(word: str) -> int:
    """Which side of a cost-benefit question ``word`` names (:data:`SIDES`): +1, -1, or 0 for neither.

    Words VADER rates on opposite sides ("threats" / "strengths") are :func:`opposite_valence`'s.
    """
    lower = word.lower()
    found = SIDES.get(lower, 0)
    if not found and len(lower) > 4 and lower.endswith("s"):
        found = SIDES.get(lower[:-1], 0)  # plurals no lexicon lemmatises ("tailwinds")
    return found


def opposite_valence(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` lie on opposite sides of VADER's scale.

    Both rated, with opposite signs, each at least 0.5 from neutral ("downside" -1.0 /
    "upside" unrated does not count on valence; the opposite prefixes catch it).
    """
    va, vb = valence(a), valence(b)
    return va * vb < 0 and abs(va) >= 0.5 and abs(vb) >= 0.5


__all__ = [
    "CLOSED_CLASSES",
    "CONTRASTS",
    "DISCOURSE",
    "FRAMING",
    "FUNCTION_WORDS",
    "GREETINGS",
    "NEGATIONS",
    "OPPOSITE_PREFIXES",
    "OPPOSED",
    "PEOPLE",
    "PHATIC",
    "RESTRICTIVES",
    "REVERSALS",
    "RELATIONS",
    "RELATION_OPPOSITES",
    "SIDES",
    "analyse",
    "opposite_affix",
    "opposite_relation",
    "opposite_valence",
    "side",
    "synonyms",
    "synsets",
    "valence",
]
