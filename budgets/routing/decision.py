"""How much model a *decision* deserves: its complexity and stakes, scored from 0 to 1.

The request scorer (:mod:`~budgetgraph.budgets.routing.complexity`) reads one
prompt; every specialist prompt the graph assembles reads as complex
(objective, questions, assumptions), so routing on it never moves a decision
off the default tier. This scorer reads the decision itself, as the user gave
it: the task, its constraints and a re-plan note, and measures what makes a
wrong answer expensive:

- **money**: the largest amount named (``$180k``, ``$2.4M a year``), on a log scale;
- **scale**: how many people, customers, sites or records it touches;
- **irreversibility**: migrations, rewrites, replacing or consolidating
  platforms, shutting down, layoffs and reorganisations, acquisitions,
  multi-year or exclusive contracts;
- **regulation** (PCI, HIPAA, GDPR, SOX, SOC 2, COPPA, audits, lawsuits) and
  **security** (breaches, leaked credentials, vulnerabilities);
- **critical systems**: production, payments, checkout, login, patient safety,
  uptime and recovery targets;
- **a small team taking on a heavy system** (a 3-person team self-hosting);
- and what pulls down: look-up questions (``What is our office address?``),
  routine office matters (snacks, offsites, room bookings), small purchases.

The weights are a proportional-odds (ordinal logistic) model over the tiers
of a hand-labelled set of decisions (``bench/data/decisions/``: economy,
standard, premium), fitted offline by ``bench/fit_decision_router.py``, which
prints these constants. The score is the model's expected grade on a 0-1
scale (0: surely economy, 0.5: standard, 1: premium). Which tier each node
runs at for each band of scores is the ``router.decision`` section of
``budgets.yaml`` (:class:`~budgetgraph.budgets.routing.settings.DecisionRouting`).
Scoring is a few regular expressions: microseconds, no model call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from budgetgraph.budgets.routing.complexity import Complexity, scored

# --------------------------------------------------------------------------- features

_AMOUNT = re.compile(
    r"(?:[$€£]\s?(?P<a>\d[\d,]*(?:\.\d+)?)\s?(?P<au>k|m|mm|b|bn|million|billion|thousand)?\b)"
    r"|(?:\b(?P<b>\d[\d,]*(?:\.\d+)?)\s?(?P<bu>k|m|mm|b|bn|million|billion|thousand)?\s?"
    r"(?:usd|dollars|eur|euros|gbp|pounds)\b)",
    re.I,
)
_UNITS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9}
_MONTHLY = re.compile(r"^\s*(?:/\s?mo(?:nth)?|a month|per month|monthly)\b", re.I)
_COUNT = re.compile(
    r"\b(?P<n>\d[\d,.]*)\s?(?P<u>k|m|million|thousand)?\+?\s"
    r"(?:\w+\s){0,2}?(?:employees|staff|people|users|customers|clients|patients|members|accounts|"
    r"stores|sites|locations|clinics|restaurants|warehouses|plants|factories|offices|countries|"
    r"records|devices|servers|services|microservices|drivers|agents|students|subscribers|tenants)\b",
    re.I,
)
_TEAM = re.compile(
    r"\b(?:(?P<a>\d{1,2}|one|two|three|four|five)[- ](?:person|people|engineer|member)s?\b"
    r"|team of (?P<b>\d{1,2}|one|two|three|four|five)\b"
    r"|(?P<c>\d{1,2}|one|two|three|four|five) (?:\w+ )?(?:engineers|devs|developers|sres|admins|ops staff|"
    r"analysts|people)\b|(?:a |our )?(?P<d>one|single|solo)[- ](?:engineer|admin|person|developer)\b)",
    re.I,
)
_NUMBER_WORDS = {"one": 1, "single": 1, "solo": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_BURDEN = re.compile(
    r"\b(?:self-?host\w*|run (?:it|our own|the)|operat\w*|maintain\w*|on-?call|in-?house|build our own|"
    r"migrat\w*|rewrit\w*|own (?:the|it)|manage (?:it|our own))\b",
    re.I,
)
_IRREVERSIBLE = re.compile(
    r"\b(?:migrat\w*|move (?:all|everything|our|the|manufacturing|production)\b|rewrit\w*|re-?platform\w*|"
    r"replac\w*|consolidat\w*|switch(?:ing)? (?:our |the )?(?:\w+ )?(?:vendor|provider|platform|"
    r"stack|erp|crm|ehr)|"
    r"self-?host\w*|shut(?:ting)? down|sunset\w*|decommission\w*|acqui\w*|merg(?:e|er|ing)|divest\w*|"
    r"lay(?:ing)? off|layoffs?|reorg\w*|restructur\w*|outsourc\w*|offshor\w*|multi-?year|exclusiv\w*|"
    r"cut-?over|relocat\w*|close (?:the|our|a|\d+) (?:\w+ )?(?:office|site|plant|store|factory|"
    r"warehouse|clinic)s?|"
    r"open (?:a|an|our|\d+) (?:new )?(?:office|plant|site|store|factory|region|warehouse|market)s?|"
    r"expand\w* into|enter(?:ing)? (?:the )?\w+ market|raise prices|price increase|pricing model|"
    r"drop (?:our|the) \w+|discontinu\w*|remove (?:all|password|the)|delete (?:all|the|our) (?:\w+ )?"
    r"(?:data|logs|records|backups))\b",
    re.I,
)
_REGULATED = re.compile(
    r"\b(?:pci(?:[- ]dss)?|hipaa|gdpr|ccpa|sox|soc ?2|coppa|ferpa|baa|dpa|data processing agreement|"
    r"fda|dea|osha|fedramp|iso ?27001|export control\w*|sanction\w*|regulat\w*|complian\w*|audit\w*|"
    r"legal|lawsuit\w*|litigat\w*|subpoena\w*|attorney|counsel|license\w*|liabilit\w*|fines?|penalt\w*|"
    r"data residency|personal data|phi|pii|consent|background checks?|union\w*|labor law|tax\w*)\b",
    re.I,
)
_SECURITY = re.compile(
    r"\b(?:breach\w*|attacker\w*|foothold|compromis\w*|leak\w*|ransomware|malware|vulnerab\w*|cves?|"
    r"zero-?day|exploit\w*|credentials?|secrets?|phish\w*|intrusion|incident\w*|mfa|2fa|encrypt\w*|"
    r"unencrypted|access control|admin access|root access|security|pentest\w*|sso|passwords?)\b",
    re.I,
)
_CRITICAL = re.compile(
    r"\b(?:production|prod|checkout|payments?|payroll|billing|login|authentication|auth|customer data|"
    r"patients?|safety|clinical|core (?:api|product|system|platform|database)|outages?|downtime|uptime|"
    r"sla|rto|rpo|disaster recovery|data loss|live|revenue|arr|runway|cash)\b",
    re.I,
)
_STRATEGIC = re.compile(
    r"\b(?:strateg\w*|fundrais\w*|series [a-e]\b|investors?|board|ipo|valuation|market share|"
    r"competitor\w*|go-?to-?market|new market|headcount|hiring plan|hire (?:\d+|a team|ten|twenty)|"
    r"vendor lock-?in|lock-?in|single point of failure|roadmap)\b",
    re.I,
)
_LOOKUP = re.compile(
    r"^\W*(?:what(?:'s| is| are| was)\b(?! (?:the )?(?:best|right|risks?|trade-?offs?|impact|cost of))|"
    r"where(?:'s| is| are| do| can)\b|when(?:'s| is| are| does| do)\b|who(?:'s| is| are)\b|"
    r"which (?:day|date|room|floor|time)|what time\b|how many\b(?!.*\bshould\b)|remind me\b|"
    r"do we have\b|is there\b|can you (?:find|look up|tell me))",
    re.I,
)
_ROUTINE = re.compile(
    r"\b(?:snacks?|coffee|tea|offsite|party|parties|swag|lunch(?:es)?|pizza|catering|plants?|parking|desks?|"
    r"chairs?|mugs?|t-?shirts?|hoodies?|stickers?|fonts?|wallpaper|meeting rooms?|conference rooms?|"
    r"kitchen|fridge|birthday|holiday cards?|newsletter|emoji|channel names?|stale (?:\w+ )?branch\w*|"
    r"typos?|rename\w*|dark mode|logo color|office address|wifi password|team photo|bulletin|"
    r"whiteboards?|printer paper|light bulbs?|calendar invite|all-hands room|dress code|playlist)\b",
    re.I,
)
_EMERGENCY = re.compile(
    r"\b(?:recall\w*|ransom\w*|caught fire|fires?|overheat\w*|injur\w*|deaths?|fatal\w*|contaminat\w*|"
    r"outbreak|attackers?|breach\w*|exfiltrat\w*|foothold|whistleblow\w*|regulators? (?:is|are|has|have)|"
    r"investigation|class action|data loss|lost data|emergency|urgent\w*|tonight|this morning)\b",
    re.I,
)
_COMMITMENT = re.compile(
    r"\b(?:(?:\d+|two|three|five|ten)[- ]year (?:lease|contract|deal|commitment|term|agreement)|"
    r"sign (?:a|the|an) (?:\w+ ){0,4}(?:lease|contract|agreement|term sheet)|leases?|mortgage|loans?|debt|"
    r"credit (?:line|facility)|term sheet|guarantee\w*|penetration test|pen ?test\w*)\b",
    re.I,
)
_DERISKED = re.compile(
    r"\b(?:staging|sandbox|test (?:environment|account|data)|synthetic|read-only|no (?:customer|"
    r"pii|personal)|"
    r"already (?:signed|agreed|approved|says|paid|in place|budgeted|covers?)|unchanged|"
    r"same (?:price|terms|seat|"
    r"plan|vendor)|no (?:seat |price )?changes?|team agreed|reversible|can be undone|roll(?:ed)? back|"
    r"internal only|dev only|dry run|free (?:tier|plan|public)|no cost|at no charge|still happens|"
    r"supports? (?:early|it)|as (?:the|our) (?:\w+ )?suggests?|matches|agreed|available)\b",
    re.I,
)
_SMALL_SPEND = re.compile(r"[$€£]\s?\d{1,3}(?:\.\d+)?\b(?!\s?(?:k|m|b|million|billion|thousand|,\d))", re.I)
_DECISION = re.compile(
    r"\b(?:should (?:we|our|i)|is it worth|whether to|go/no-go|build or buy|do we need|"
    r"or (?:should|keep|stay))\b",
    re.I,
)
_WORD = re.compile(r"[^\W\d_][\w'-]*|\d[\d,.:%]*")

FEATURES: tuple[str, ...] = (
    "money",
    "scale",
    "small_team_burden",
    "irreversible",
    "regulated",
    "security",
    "critical",
    "strategic",
    "emergency",
    "commitment",
    "lookup",
    "routine",
    "derisked",
    "small_spend",
    "constraints",
    "decision",
    "words",
)
"""The features, in the order of the weights."""


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def largest_amount(text: str) -> float:
    """The largest money amount named in ``text`` (its unit applied; monthly amounts times 12), or 0."""
    largest = 0.0
    for match in _AMOUNT.finditer(text):
        raw = match.group("a") or match.group("b")
        unit = (match.group("au") or match.group("bu") or "").lower()
        value = _number(raw or "")
        if value is None:
            continue
        value *= _UNITS.get(unit, 1.0)
        if _MONTHLY.match(text[match.end() :]):
            value *= 12
        largest = max(largest, value)
    return largest


def _scale(text: str) -> float:
    largest = 0.0
    for match in _COUNT.finditer(text):
        value = _number(match.group("n"))
        if value is None:
            continue
        unit = (match.group("u") or "").lower()
        largest = max(largest, value * _UNITS.get(unit, 1.0))
    return largest


def _small_team(text: str) -> bool:
    for match in _TEAM.finditer(text):
        raw = next(g for g in match.groups() if g)
        size = _NUMBER_WORDS.get(raw.lower()) or (int(raw) if raw.isdigit() else 99)
        if size <= 5:
            return True
    return False


def decision_text(task: str, constraints: Sequence[str] = (), note: str | None = None) -> str:
    """The text the scorer reads: the task, each constraint and a re-plan note, one per line."""
    return "\n".join([task, *constraints, *([note] if note else [])])


def features(task: str, constraints: Sequence[str] = (), note: str | None = None) -> dict[str, float]:
    """Measure a decision: one value per name in :data:`FEATURES`, each between 0 and about 4.

    Counts are capped and magnitudes logarithmic: ``money`` is log10 of the
    largest amount in USD (``$180k`` a year is 5.3) less 2, at least 0;
    ``scale`` is log10 of the most people or things named, less 1.
    """
    text = decision_text(task, constraints, note)
    first = task.strip()
    amount = largest_amount(text)
    scale = _scale(text)
    return {
        "money": max(math.log10(amount) - 2.0, 0.0) if amount > 0 else 0.0,
        "scale": max(math.log10(scale) - 1.0, 0.0) if scale > 0 else 0.0,
        "small_team_burden": 1.0 if _small_team(text) and _BURDEN.search(text) else 0.0,
        "irreversible": float(min(len(_IRREVERSIBLE.findall(text)), 3)),
        "regulated": float(min(len(_REGULATED.findall(text)), 3)),
        "security": float(min(len(_SECURITY.findall(text)), 3)),
        "critical": float(min(len(_CRITICAL.findall(text)), 3)),
        "strategic": float(min(len(_STRATEGIC.findall(text)), 2)),
        "emergency": float(min(len(_EMERGENCY.findall(text)), 2)),
        "commitment": float(min(len(_COMMITMENT.findall(text)), 2)),
        "lookup": 1.0 if _LOOKUP.match(first) and not _DECISION.search(first) else 0.0,
        "routine": float(min(len(_ROUTINE.findall(text)), 2)),
        "derisked": float(min(len(_DERISKED.findall(text)), 2)),
        "small_spend": 1.0 if _SMALL_SPEND.search(text) and amount < 1000 else 0.0,
        "constraints": float(min(len([c for c in constraints if c.strip()]), 4)),
        "decision": 1.0 if _DECISION.search(text) else 0.0,
        "words": math.log1p(len(_WORD.findall(text))),
    }


# --------------------------------------------------------------------------- the fitted model

WEIGHTS: Mapping[str, float] = {
    "money": 0.4398,
    "scale": 0.7124,
    "small_team_burden": 0.0151,
    "irreversible": 1.5729,
    "regulated": 2.6840,
    "security": -0.6640,
    "critical": 0.5702,
    "strategic": 0.9124,
    "emergency": 2.2140,
    "commitment": 1.7931,
    "lookup": -1.7650,
    "routine": -0.9879,
    "derisked": -2.6159,
    "small_spend": -1.4475,
    "constraints": 2.0225,
    "decision": 0.1916,
    "words": -0.4692,
}
"""Weight of each feature (log-odds per unit), fitted by ``bench/fit_decision_router.py``."""

CUTS: tuple[float, float] = (0.4628, 4.3433)
"""Cut points of the ordinal model, economy|standard and standard|premium (log-odds)."""


DecisionScore = Complexity
"""A decision's score: the request scorer's record (score 0-1, features, contributions, drivers)."""


def score_decision(
    task: str,
    constraints: Sequence[str] = (),
    note: str | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    cuts: tuple[float, float] | None = None,
) -> DecisionScore:
    """Score a decision (its task, constraints and re-plan note).

    Args:
        task: The decision as the user gave it.
        constraints: Its constraints' texts.
        note: A reviewer's re-plan note, if any.
        weights: Feature weights (default: the fitted :data:`WEIGHTS`).
        cuts: The ordinal model's cut points (default: :data:`CUTS`).

    Returns:
        The score, with the features and their contributions for the reason.
    """
    measured = features(task, constraints, note)
    return scored(measured, WEIGHTS if weights is None else weights, CUTS if cuts is None else cuts)


__all__ = [
    "CUTS",
    "FEATURES",
    "WEIGHTS",
    "DecisionScore",
    "decision_text",
    "features",
    "largest_amount",
    "score_decision",
]
