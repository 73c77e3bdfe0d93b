"""The local tier: deterministic rules that stand in for a model.

They read plain signals from the task and its constraints (team size,
deadlines, audits and regulation, migrations, hiring, money) and turn them
into the same structured outputs a model would give. The rules are simple on
purpose and say so in every output: no model wrote them. Severity rules follow
common delivery heuristics: a large change inside the window before an audit
of the system it touches, or with a team too small to run it and the business
at once, is among the worst risks a plan can carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from budgetgraph.agents.schemas import (
    Analysis,
    Conflict,
    CostEstimate,
    PlanBrief,
    Reconciliation,
    Risk,
    TradeOff,
)

NOTICE = "No model wrote this: it comes from budgetgraph's deterministic local rules."
"""Opening words of every output of the local tier."""

_TEAM = re.compile(r"(\d+)\s+(?:\w+\s+)?(?:engineers?|developers?|devs|people|staff|employees)", re.I)
_SPAN = re.compile(r"(\d+)\s+(months?|weeks?|days?)", re.I)
_MONEY = re.compile(r"\$\s?([\d,.]+)\s*([kKmM])?")
_COMPLIANCE = re.compile(
    r"\b(PCI(?:[- ]DSS)?|SOC ?2|HIPAA|GDPR|ISO ?27001|audit|compliance|regulat\w*)\b", re.I
)
_CHANGE = re.compile(
    r"\b(migrat\w*|move|moving|rewrite|re-?architect\w*|microservices?|re-?platform\w*|split|replace)\b", re.I
)
_HIRING = re.compile(r"\b(hire|hiring|headcount|recruit\w*)\b", re.I)
_VENDOR = re.compile(r"\b(vendor|outsourc\w*|buy|SaaS|contractor|agency)\b", re.I)


@dataclass(frozen=True)
class Signals:
    """What the rules read from a task and its constraints."""

    text: str
    team_size: int | None = None
    deadline_weeks: float | None = None
    compliance: list[str] = field(default_factory=list)
    change: list[str] = field(default_factory=list)
    hiring: bool = False
    vendor: bool = False
    money_usd: float | None = None

    @classmethod
    def read(cls, task: str, constraints: list[str]) -> Signals:
        """Extract the signals from ``task`` and ``constraints``."""
        text = " ".join([task, *constraints])
        team = _TEAM.search(text)
        weeks = [_weeks(int(n), unit) for n, unit in _SPAN.findall(text)]
        money = _MONEY.search(text)
        amount = None
        if money:
            amount = float(money.group(1).replace(",", "") or 0)
            amount *= {"k": 1e3, "m": 1e6}.get((money.group(2) or "").lower(), 1)
        return cls(
            text=text,
            team_size=int(team.group(1)) if team else None,
            deadline_weeks=min(weeks) if weeks else None,
            compliance=_unique(m.group(1) for m in _COMPLIANCE.finditer(text)),
            change=_unique(m.group(1).lower() for m in _CHANGE.finditer(text)),
            hiring=bool(_HIRING.search(text)),
            vendor=bool(_VENDOR.search(text)),
            money_usd=amount,
        )

    @property
    def audit_pressure(self) -> bool:
        """A compliance event falls within six months."""
        return bool(self.compliance) and self.deadline_weeks is not None and self.deadline_weeks <= 26

    @property
    def small_team(self) -> bool:
        """Fewer than ten engineers."""
        return self.team_size is not None and self.team_size < 10


def brief(task: str, constraints: list[str]) -> PlanBrief:
    """The planner's framing, by rule."""
    s = Signals.read(task, constraints)
    cto = ["What does the change require of the architecture, and what can be deferred?"]
    coo = ["What does the decision require of people, process and timeline?"]
    if s.team_size:
        cto.append(f"Can {s.team_size} engineers deliver it while keeping the current system running?")
        coo.append(f"How is the load on a team of {s.team_size} shared between the change and operations?")
    if s.compliance:
        names = ", ".join(s.compliance)
        cto.append(f"What does the change do to the scope and evidence of {names}?")
        coo.append(f"What must be frozen or documented before {names}?")
    assumptions = [NOTICE]
    if s.deadline_weeks is not None:
        assumptions.append(f"The nearest deadline mentioned is about {s.deadline_weeks:.0f} weeks away.")
    return PlanBrief(
        objective=f"Decide: {task.strip()}",
        cto_questions=cto,
        coo_questions=coo,
        assumptions=assumptions,
    )


def cto_analysis(task: str, constraints: list[str]) -> Analysis:
    """The CTO's analysis, by rule."""
    s = Signals.read(task, constraints)
    findings, risks, recs = [], [], []
    if s.change:
        findings.append(f"The task involves a structural change ({', '.join(s.change)}).")
        severity = 4 if s.small_team else 3
        risks.append(
            Risk(
                description="A structural change adds distributed-system work (deployment, observability, "
                "data consistency) on top of feature work.",
                severity=severity,
                mitigation="Extract one bounded part first behind a stable interface; "
                "keep the rest as it is.",
            )
        )
    if s.audit_pressure:
        risks.append(
            Risk(
                description=f"Changing in-scope systems about {s.deadline_weeks:.0f} weeks before "
                f"{', '.join(s.compliance)} changes the audited architecture and its evidence.",
                severity=5 if (s.deadline_weeks or 0) <= 17 else 4,
                mitigation="Freeze the in-scope architecture until the audit closes; "
                "plan the change after it.",
            )
        )
        recs.append("Pass the audit on the current architecture, then start the change.")
    if s.small_team:
        findings.append(f"A team of {s.team_size} engineers limits how much can change at once.")
    if not risks:
        risks.append(
            Risk(
                description="The task gives too little technical detail for a firm view.",
                severity=2,
                mitigation="List the systems, their owners and their constraints before deciding.",
            )
        )
    recs.append("Write down the target architecture and the first reversible step.")
    weeks = 4.0 * min(s.team_size or 3, 4) * (3 if s.change else 1)
    return Analysis(
        summary=f"{NOTICE} Technology view: {len(risks)} risk(s), the worst rated "
        f"{max(r.severity for r in risks)} of 5.",
        findings=findings,
        risks=sorted(risks, key=lambda r: -r.severity),
        cost_estimate=CostEstimate(
            engineer_weeks=weeks,
            one_time_usd=weeks * 4_000,
            recurring_usd_per_month=1_500.0 if s.change else 0.0,
            basis="Rule of thumb: 4 engineer-weeks per engineer involved (at most 4) per phase, "
            "3 phases for a structural change; USD 4,000 per engineer-week.",
        ),
        recommendations=recs,
        confidence=0.3,
    )


def coo_analysis(task: str, constraints: list[str]) -> Analysis:
    """The COO's analysis, by rule."""
    s = Signals.read(task, constraints)
    findings, risks, recs = [], [], []
    if s.compliance:
        findings.append(f"Compliance obligations are in play: {', '.join(s.compliance)}.")
        severity = 4 if s.audit_pressure else 2
        risks.append(
            Risk(
                description="Audit preparation competes with delivery for the same people.",
                severity=severity,
                mitigation="Name an audit owner and freeze in-scope process changes until it closes.",
            )
        )
    if s.small_team:
        risks.append(
            Risk(
                description=f"{s.team_size} engineers cannot staff a change, on-call "
                "and the roadmap at once.",
                severity=4 if s.change else 3,
                mitigation="Budget for contractors or defer roadmap work explicitly.",
            )
        )
        recs.append("Agree which roadmap items stop while the change runs.")
    if s.hiring:
        findings.append("Hiring is part of the plan; new hires take months to be productive.")
    if s.vendor:
        findings.append("A vendor or outside party is involved; contract and lead times apply.")
    if not risks:
        risks.append(
            Risk(
                description="The task gives too little operational detail for a firm view.",
                severity=2,
                mitigation="Name the owners, the timeline and the budget before deciding.",
            )
        )
    recs.append("Set a go/no-go review with named owners and dates.")
    return Analysis(
        summary=f"{NOTICE} Operations view: {len(risks)} risk(s), the worst rated "
        f"{max(r.severity for r in risks)} of 5.",
        findings=findings,
        risks=sorted(risks, key=lambda r: -r.severity),
        cost_estimate=CostEstimate(
            engineer_weeks=0.0,
            one_time_usd=s.money_usd or 0.0,
            recurring_usd_per_month=0.0,
            basis="Only amounts stated in the task are counted.",
        ),
        recommendations=recs,
        confidence=0.3,
    )


def reconciliation(cto: Analysis, coo: Analysis) -> Reconciliation:
    """Compare two analyses, by rule.

    The risk score is the worst severity either side reports, lowered by one
    when the other side rates nothing above 2 (the two disagree on how bad it is).
    """
    worst_cto = max((r.severity for r in cto.risks), default=1)
    worst_coo = max((r.severity for r in coo.risks), default=1)
    score = max(worst_cto, worst_coo)
    if min(worst_cto, worst_coo) <= 2 and score > 1:
        score -= 1
    agreements = [f"Both rate their worst risk at {worst_cto} or more."] if worst_cto == worst_coo else []
    conflicts = []
    if abs(worst_cto - worst_coo) >= 2:
        conflicts.append(
            Conflict(
                topic="How risky the decision is",
                cto_position=f"worst risk {worst_cto}/5",
                coo_position=f"worst risk {worst_coo}/5",
            )
        )
    return Reconciliation(
        summary=f"{NOTICE} The CTO's worst risk is {worst_cto}/5 and the COO's {worst_coo}/5.",
        agreements=agreements + [r for r in cto.recommendations if r in coo.recommendations],
        conflicts=conflicts,
        trade_offs=[
            TradeOff(
                option="Proceed now",
                gains="Earliest benefit of the change",
                costs=cto.risks[0].description if cto.risks else "Delivery risk",
            ),
            TradeOff(
                option="Sequence it: first the constraint, then the change",
                gains="Lower risk while the constraint is open",
                costs="Later benefit",
            ),
            TradeOff(option="Do not proceed", gains="No delivery risk", costs="The problem stays"),
        ],
        risk_score=score,
        risk_rationale="Worst severity reported by either analysis, lowered by one when the other "
        "side sees little risk.",
        recommendation="Sequence it" if score >= 4 else "Proceed with the first reversible step",
    )


def _weeks(n: int, unit: str) -> float:
    unit = unit.lower()
    if unit.startswith("month"):
        return n * 52 / 12
    if unit.startswith("day"):
        return n / 7
    return float(n)


def _unique(items: object) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:  # type: ignore[attr-defined]
        seen.setdefault(item, None)
    return list(seen)
