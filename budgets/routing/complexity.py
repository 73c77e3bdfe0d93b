"""How complex a request is: a score from 0 to 1, and the tier it calls for.

The features start from the design documents' list - length, analysis and
comparison verbs, trade-off wording, code, many factors, "what is" questions -
and add what the labelled set (``labelled_requests.jsonl``) showed they miss:

- the *instruction's* length, not the pasted payload's: a paragraph to
  translate or a JSON document to convert is long but simple, so text inside
  quotes and code fences counts apart (``payload``), and a code *block*
  (fenced, or several lines of code) apart from inline code;
- rote tasks (translate, rewrite, convert, sort, fix typos, "write a haiku")
  and look-up questions ("what is", "how many", "who"), which pull down;
- decisions and judgement ("should we", "is it worth", "the best way"),
  reasoning questions ("why", "how should we"), the organisation's own
  context ("we", "our"), scope words (strategy, migration, rollout) and
  regulated domains (GDPR, SOX, PCI), which push up.

The weights are a proportional-odds (ordinal logistic) model over the three
grades of the labelled set - simple (economy), complex (standard) and complex
needing the strongest model (premium) - fitted by
:mod:`budgetgraph.budgets.routing.calibrate` (``python -m budgetgraph.budgets.routing.calibrate``
prints them). The score is the model's expected grade on a 0-1 scale (0
surely simple, 0.5 a standard-tier request, 1 a premium one); the default
thresholds :data:`STANDARD_AT` and :data:`PREMIUM_AT` come from the same
calibration. Accuracy on 60 requests written after the features and weights
were frozen: 91.7% (90% of the complex ones reach standard or premium). The
features were designed while reading the calibration split, so its own
cross-validated accuracy (96%) flatters them. Scoring is a handful of regular
expressions: microseconds, no model call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from budgetgraph.budgets.config import Tier

# --------------------------------------------------------------------------- features

_WORD = re.compile(r"[^\W\d_][\w'-]*|\d[\d,.:%]*")
_QUOTED = re.compile(r"\"[^\"]{12,}\"|“[^”]{12,}”")
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`|\b\w+\([^)]*\)|[{}\[\]]|==|=>|:=|\$\w+|\\d")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |func |for |if |return |import |from |select |\w+ = |\}|File \")", re.I
)
_ANALYSIS = re.compile(
    r"\b(?:analy[sz]\w*|evaluat\w*|assess\w*|diagnos\w*|investigat\w*|design\w*|architect\w*|"
    r"propos\w*|prioriti[sz]\w*|optimi[sz]\w*|recommend\w*|critiqu\w*|review\w*|refactor\w*|"
    r"debug\w*|troubleshoot\w*|estimat\w*|forecast\w*|weigh\w*|justif\w*|break down|work out|"
    r"redesign\w*|restructur\w*|outline|draft|explain|decide|help me decide|walk through|model)\b",
    re.I,
)
_COMPARISON = re.compile(
    r"\b(?:compar\w*|versus|vs\.?|pros and cons|for and against|against|instead of|rather than|"
    r"whether|which (?:would|should|gives|option|approach))\b",
    re.I,
)
_ALTERNATIVE = re.compile(r"\bor\b", re.I)
_TRADEOFF = re.compile(
    r"\b(?:trade-?offs?|balanc\w*|at the cost of|without \w+ing|while keep\w*|risks?|downsides?|"
    r"impact\w*|implications?|constraints?|consider\w*|given|despite|however|although|whereas|"
    r"failure modes?|incentives?|minimi[sz]\w*|maximi[sz]\w*)\b",
    re.I,
)
_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,.]*(?:\s?%|[kKmMbB]\b|x\b)?")
_CLAUSE = re.compile(r"[,;:]|\band\b", re.I)
_LOOKUP = re.compile(
    r"^\W*(?:what(?:'s| is| are| does| do)\b(?! (?:the )?(?:best|right|real|most|risks?|arguments?|"
    r"trade-?offs?|options?))|who\b|when\b|where\b|how many\b|how much is\b|how do (?:i|you)\b|"
    r"is (?!it (?:worth|time))|are\b|does\b|do you\b|define\b|spell\b|name\b|list\b|tell me\b|"
    r"remind me\b|roughly how\b|which\b(?!.*\b(?:should|would|best|better)\b))",
    re.I,
)
_ROTE = re.compile(
    r"^\W*(?:please )?(?:translate|rewrite|rephrase|fix the (?:typos?|grammar)|find the typo|"
    r"summari[sz]e (?:this|in one)|convert|format|capitali[sz]e|sort|put these|shorten|turn this|"
    r"make this|extract|count the|round|rename|spell|give me (?:a|an|one|two|three) "
    r"(?:synonyms?|title|name|short|subject)|write a (?:haiku|subject line|one-line|two-sentence|short|"
    r"thank-you)|(?:suggest|recommend) a name|tell me a (?:joke|fun fact|fact))",
    re.I,
)
_DECISION = re.compile(
    r"\b(?:should (?:we|our|i accept|i take)|is it worth|is it time|whether to|go/no-go|build or buy|"
    r"do we need|help me decide|how should we|what would it take)\b",
    re.I,
)
_JUDGEMENT = re.compile(
    r"\b(?:best way|right (?:\w+ )?(?:policy|structure|way|approach)|real cost|most defensible|"
    r"realistic|likely|root cause|what's really|matter most|make the case|"
    r"what (?:could|might) (?:cause|be))\b",
    re.I,
)
_REASONING = re.compile(
    r"^\W*(?:why (?:is|are|do|does|did) (?:our|we|the \w+ (?:of|in) our)|why does this|how (?:should|would|"
    r"can|could|do) we|what (?:would|might|could)|what are the (?:risks|arguments|trade-?offs|options))",
    re.I,
)
_ORG = re.compile(r"\b(?:we|our|us|we're|we've|ours)\b", re.I)
_SCOPE = re.compile(
    r"\b(?:strateg\w*|roadmap|architecture|migrat\w*|end-to-end|long-term|phased|polic(?:y|ies)|process|"
    r"workflow|rollout|runbook|continuity|integration|capacity|pricing|go-to-market|experiment|"
    r"retention|staffing|headcount|allocation|allocate|rotation|resilien\w*|scal\w*|consistency|"
    r"isolation|idempoten\w*|concurren\w*|thread-safe|race condition|leaks?|lag|latency)\b",
    re.I,
)
_REGULATED = re.compile(
    r"\b(?:complian\w*|gdpr|hipaa|soc ?2|pci|sox|regulat\w*|security|breach|legal|audit\w*|tax(?:es)?|"
    r"privacy|residency|exclusivity|tariffs?|encryption)\b",
    re.I,
)

FEATURES: tuple[str, ...] = (
    "instruction_words",
    "payload_words",
    "code_block",
    "inline_code",
    "analysis",
    "comparison",
    "alternatives",
    "tradeoff",
    "numbers",
    "clauses",
    "questions",
    "lookup",
    "rote",
    "decision",
    "judgement",
    "reasoning",
    "org",
    "scope",
    "regulated",
)
"""The features, in the order of the weights."""


def capped(pattern: re.Pattern[str], text: str, cap: int) -> float:
    """How many times ``pattern`` matches in ``text``, counted up to ``cap``."""
    return float(min(len(pattern.findall(text)), cap))


def features(text: str) -> dict[str, float]:
    """Measure ``text``: one value per name in :data:`FEATURES`.

    Counts are capped (a request does not get more complex with its tenth
    comma) and lengths are logarithmic (ln of 1 + words).

    Args:
        text: The request's text (its non-system messages, joined).

    Returns:
        Feature name -> value, each between 0 and about 6.
    """
    fences = _FENCE.findall(text)
    bare = _FENCE.sub(" ", text)
    quoted = _QUOTED.findall(bare)
    instruction = _QUOTED.sub(" ", bare)
    payload_words = sum(len(_WORD.findall(q)) for q in (*fences, *quoted))
    code_lines = sum(1 for line in text.splitlines() if _CODE_LINE.match(line))
    first = instruction.strip()
    return {
        "instruction_words": math.log1p(len(_WORD.findall(instruction))),
        "payload_words": math.log1p(payload_words),
        "code_block": 1.0 if fences or code_lines >= 3 else 0.0,
        "inline_code": capped(_INLINE_CODE, instruction, 3),
        "analysis": capped(_ANALYSIS, instruction, 3),
        "comparison": capped(_COMPARISON, instruction, 2),
        "alternatives": capped(_ALTERNATIVE, instruction, 2),
        "tradeoff": capped(_TRADEOFF, instruction, 3),
        "numbers": capped(_NUMBER, instruction, 4),
        "clauses": capped(_CLAUSE, instruction, 6),
        "questions": float(min(instruction.count("?"), 3)),
        "lookup": 1.0 if _LOOKUP.match(first) else 0.0,
        "rote": 1.0 if _ROTE.match(first) else 0.0,
        "decision": capped(_DECISION, instruction, 2),
        "judgement": capped(_JUDGEMENT, instruction, 2),
        "reasoning": 1.0 if _REASONING.match(first) else 0.0,
        "org": capped(_ORG, instruction, 4),
        "scope": capped(_SCOPE, instruction, 3),
        "regulated": capped(_REGULATED, instruction, 2),
    }


# --------------------------------------------------------------------------- the fitted model

WEIGHTS: Mapping[str, float] = {
    "instruction_words": 1.5865,
    "payload_words": 0.1231,
    "code_block": 0.2362,
    "inline_code": -0.4443,
    "analysis": 0.5495,
    "comparison": 1.0010,
    "alternatives": 0.2574,
    "tradeoff": 0.5733,
    "numbers": 0.0723,
    "clauses": 0.2400,
    "questions": -0.7210,
    "lookup": -3.1231,
    "rote": -3.4874,
    "decision": 0.8251,
    "judgement": 0.7166,
    "reasoning": 0.8671,
    "org": 0.8590,
    "scope": 1.1267,
    "regulated": 1.2660,
}
"""Weight of each feature (log-odds per unit), fitted by :mod:`budgetgraph.budgets.routing.calibrate`."""

CUTS: tuple[float, float] = (3.7145, 9.7758)
"""Cut points of the ordinal model, economy|standard and standard|premium (log-odds)."""

STANDARD_AT = 0.27
"""Default score from which a request goes to the standard tier: the highest at which 95% of the
complex requests of the calibration split, scored out-of-fold, still reach it."""

PREMIUM_AT = 0.75
"""Default score from which a request goes to the premium tier: the model's standard|premium cut."""


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def expected_grade(linear: float, cuts: tuple[float, float]) -> float:
    """The score of a linear predictor: the expected grade on a 0-1 scale.

    ``(P(grade >= standard) + P(grade >= premium)) / 2``: 0 is surely simple,
    0.5 surely a standard-tier request, 1 surely a premium one. The model's
    cuts fall near 0.25 and 0.75.
    """
    return (_sigmoid(linear - cuts[0]) + _sigmoid(linear - cuts[1])) / 2


@dataclass(frozen=True)
class Complexity:
    """The complexity of one request.

    Attributes:
        score: Expected grade, 0 (simple) to 1 (needs the premium tier); see
            :func:`expected_grade`.
        features: The measured features.
        contributions: Each feature's part of the linear predictor (weight x value, log-odds).
    """

    score: float
    features: Mapping[str, float]
    contributions: Mapping[str, float]

    def tier(self, standard_at: float, premium_at: float) -> Tier:
        """The model tier the score calls for, given the two thresholds."""
        if self.score >= premium_at:
            return "premium"
        if self.score >= standard_at:
            return "standard"
        return "economy"

    def drivers(self, count: int = 3) -> list[str]:
        """The features that moved the score most, as ``name +1.2`` strings, strongest first."""
        ranked = sorted(self.contributions.items(), key=lambda item: -abs(item[1]))
        return [f"{name} {value:+.1f}" for name, value in ranked[:count] if abs(value) >= 0.05]


def score(
    text: str,
    *,
    weights: Mapping[str, float] | None = None,
    cuts: tuple[float, float] | None = None,
) -> Complexity:
    """Score ``text``.

    Args:
        text: The request's non-system messages, joined.
        weights: Feature weights (default: the calibrated :data:`WEIGHTS`).
        cuts: The ordinal model's cut points (default: :data:`CUTS`).

    Returns:
        The complexity, with the features and their contributions for the reason.
    """
    return scored(features(text), WEIGHTS if weights is None else weights, CUTS if cuts is None else cuts)


def scored(
    measured: Mapping[str, float], weights: Mapping[str, float], cuts: tuple[float, float]
) -> Complexity:
    """The ordinal model's score of measured features: each one's contribution, and the expected grade."""
    contributions = {name: weights.get(name, 0.0) * value for name, value in measured.items()}
    return Complexity(
        score=expected_grade(sum(contributions.values()), cuts),
        features=measured,
        contributions=contributions,
    )


__all__ = [
    "CUTS",
    "FEATURES",
    "PREMIUM_AT",
    "STANDARD_AT",
    "WEIGHTS",
    "Complexity",
    "expected_grade",
    "features",
    "score",
    "scored",
]
