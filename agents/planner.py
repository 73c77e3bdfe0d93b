"""The planner: frames the decision and plans the specialists' steps within budget.

Planning has two parts. The **brief** (objective, questions per specialist,
assumptions) is written by a model through the planner's session, or by the
local rules. The **steps** come from :func:`plan_steps`, which calls no model:

1. For each specialist, the routing policy that the ``router`` plugin applies
   to every call (:func:`budgetgraph.budgets.routing.route`) gives the tier its call would
   get: the default tier, bounded by the node's ``min_tier`` / ``max_tier``,
   scored for complexity on the very prompt the specialist will send (when
   complexity routing is on), lowered by the budget left, and local without
   an endpoint. A plan and the run that follows it therefore choose alike.
2. The options of each specialist are that tier and every model tier below it
   - each as a direct answer (``llm``) and, when the task has figures to
   compute, as an answer after a ``calculate`` round trip (``tool``) - and the
   ``local`` path. Each is estimated from the ledger's history of the same
   node, tier and model, blended with the priors of ``router.plan``.
3. A beam search (:mod:`budgetgraph.agents.beam`) keeps the best plan within every cap
   that applies: each node's caps, the task's, and the tenant's windows, less
   what is already spent.
4. A specialist for which no model step fits is *infeasible*; the plan says so
   (``feasible: false`` and the ``reason``) and follows the blocking cap's
   ``on_exceed`` (``router.plan.on_infeasible``): ``local`` and ``degrade``
   plan the local path, ``approve`` keeps the step so that its call asks for
   approval, and ``stop`` stops the run in the planner, before any specialist
   spends (:class:`~budgetgraph.budgets.BudgetExceededError` naming the node and the cap).
   With ``on_infeasible: local`` the local path is planned whatever the action.

``budgetgraph plan`` runs the same code with the local rules' brief, so it
calls no model at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from langchain_core.messages import HumanMessage, SystemMessage

from budgetgraph.agents import rules
from budgetgraph.agents.beam import StepOption, beam_search, over
from budgetgraph.agents.prompts import PLANNER_SYSTEM, REPLAN_NOTE_TEMPLATE, SPECIALIST_TEMPLATE
from budgetgraph.agents.schemas import Plan, PlanBrief, PlanCap, PlanStep
from budgetgraph.agents.text import bullets, task_block
from budgetgraph.budgets import (
    MODEL_TIERS,
    BudgetExceededError,
    Gateway,
    ModelCall,
    NodeSession,
    Tier,
    Totals,
    usd,
)
from budgetgraph.budgets.ledger import LedgerRecord
from budgetgraph.budgets.routing import (
    ROUTER_SECTION,
    Room,
    RouterSettings,
    no_endpoint,
    plan_tier,
    rooms,
    route,
    score_decision,
    tightest_usd,
)
from budgetgraph.budgets.routing.settings import Planning

logger = logging.getLogger(__name__)

SPECIALISTS: tuple[str, ...] = ("cto", "coo")
"""The specialist nodes a plan can run, in parallel."""

NEW_RUN = "(new run)"
"""The thread :func:`estimate` plans for when given none: a run not started, which has spent nothing."""

HISTORY_DAYS = 90
"""Ledger records older than this (days) are not read for estimates."""

_FIGURES = re.compile(r"\d")


def plan(
    session: NodeSession,
    gateway: Gateway,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
) -> Plan:
    """Frame the decision with a model (through ``session``) and plan one step per specialist.

    Args:
        session: The planner node's session with the gateway.
        gateway: For the tiers' models, prices, budgets and ledger.
        task: The decision to review.
        constraints: Constraint texts.
        note: The reviewer's note when this is a re-plan.

    Returns:
        The plan, with an estimate per step (see :func:`plan_steps`).

    Raises:
        BudgetExceededError: A specialist has no model step within a cap whose
            ``on_exceed`` is ``stop``, or a limit refused the brief's own call.
        ModelOutputError: The brief failed its schema twice.
    """
    content = task_block(task, constraints)
    if note:
        content += REPLAN_NOTE_TEMPLATE.format(note=note)
    texts = list(constraints) + ([note] if note else [])
    tier, reason = planned_tier(gateway, "planner", task=task, constraints=constraints, note=note)
    brief = session.ask(
        [SystemMessage(PLANNER_SYSTEM), HumanMessage(content)],
        PlanBrief,
        local=lambda: rules.brief(task, texts),
        tier=tier,
        reason=reason,
    )
    made, stop = plan_steps(
        gateway,
        brief,
        task=task,
        constraints=constraints,
        note=note,
        thread_id=session.thread_id,
        tenant=session.tenant,
        history=session.history,
    )
    if stop is not None:
        logger.info("Plan is infeasible and a cap says stop: %s", made.reason)
        raise stop
    return made


def planned_tier(
    gateway: Gateway,
    node: str,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
) -> tuple[Tier, str | None]:
    """The tier the plan gives ``node`` for this decision, and the reason when it is not ``default_tier``.

    With ``router.decision`` on, the decision's score picks the node's band
    (:func:`~budgetgraph.budgets.routing.plan_tier`); off, every node asks for
    ``default_tier``. Caps, cooldowns and fallbacks apply later, on the call.
    """
    settings = gateway.budgets.section(ROUTER_SECTION, RouterSettings)
    if not settings.decision.enabled:
        return gateway.default_tier, None
    tier, reason = plan_tier(node, score_decision(task, constraints, note), settings)
    return tier, (reason if tier != gateway.default_tier else None)


def estimate(
    gateway: Gateway,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
    thread_id: str | None = None,
    tenant: str = "default",
    now: datetime | None = None,
) -> Plan:
    """Plan without calling any model: the local rules write the brief.

    What ``budgetgraph plan`` prints. Spend so far is read from the ledger's
    scopes of ``thread_id`` and ``tenant``.

    Args:
        gateway: For the tiers' models, prices, budgets and ledger.
        task: The decision to review.
        constraints: Constraint texts.
        note: A re-plan note.
        thread_id: The run whose spend counts against the task and node caps
            (``None``: a new run, :data:`NEW_RUN`, which has spent nothing).
        tenant: Who pays (for the windows).
        now: The current time (default: now, UTC).

    Returns:
        The plan; when a ``stop`` cap makes it infeasible, ``feasible`` is
        False and ``reason`` says that ``run`` would stop in the planner.
    """
    texts = list(constraints) + ([note] if note else [])
    brief = rules.brief(task, texts)
    made, _ = plan_steps(
        gateway,
        brief,
        task=task,
        constraints=constraints,
        note=note,
        thread_id=thread_id or NEW_RUN,
        tenant=tenant,
        now=now,
    )
    return made


def plan_steps(
    gateway: Gateway,
    brief: PlanBrief,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
    thread_id: str | None = None,
    tenant: str = "default",
    history: Sequence[ModelCall] = (),
    now: datetime | None = None,
) -> tuple[Plan, BudgetExceededError | None]:
    """Plan one step per specialist within every budget (see the module docstring).

    Args:
        gateway: For the tiers' models, prices, budgets (``router:`` section
            included) and ledger.
        brief: The decision's framing.
        task: The decision to review.
        constraints: Constraint texts.
        note: The reviewer's re-plan note.
        thread_id: The run's thread (its node and task scopes in the ledger).
        tenant: Who pays (its window scopes).
        history: The run's calls so far, from its state (node and task spend).
        now: The current time (default: now, UTC).

    Returns:
        The plan, and the error to raise when a ``stop`` cap makes it
        infeasible (``None`` otherwise).

    Raises:
        ConfigError: The ``router:`` section of ``budgets.yaml`` is invalid.
    """
    now = now or datetime.now(UTC)
    settings = gateway.budgets.section(ROUTER_SECTION, RouterSettings)
    records = _history(gateway, now, settings.plan)
    questions: dict[str, list[str]] = {"cto": brief.cto_questions, "coo": brief.coo_questions}
    figures = bool(_FIGURES.search(" ".join([task, *constraints])))
    caps: dict[tuple[str, str], Room] = {}
    nodes: list[_NodeOptions] = []
    by_decision = settings.decision.enabled
    planner_ran = any(c["node"] == "planner" for c in history)
    # A planner that has run spent already (in ``history``, so in every cap's room);
    # before it runs (``budgetgraph plan``), its step is planned with the others.
    for node in (*(() if planner_ran else ("planner",)), *SPECIALISTS, "reconcile"):
        node_rooms = rooms(
            gateway.budgets,
            gateway.ledger,
            node=node,
            thread_id=thread_id,
            tenant=tenant,
            now=now,
            node_spent=Totals.of(c for c in history if c["node"] == node),
            task_spent=Totals.of(history),
        )
        for room in node_rooms:
            caps.setdefault((room.scope, room.limit), room)
        prompt = SPECIALIST_TEMPLATE.format(
            task_block=task_block(task, constraints),
            objective=brief.objective,
            questions=bullets(questions.get(node, [])),
            assumptions=bullets(brief.assumptions),
        )
        if note:
            prompt += REPLAN_NOTE_TEMPLATE.format(note=note)
        wanted, why = planned_tier(gateway, node, task=task, constraints=constraints, note=note)
        decided = route(
            wanted,
            node=node,
            text=None if by_decision or node not in SPECIALISTS else prompt,
            settings=settings,
            budget=tightest_usd(node_rooms),
            unreachable=lambda tier: no_endpoint(gateway.models, tier),
        )
        tools = figures and node in SPECIALISTS
        nodes.append(_options(gateway, settings.plan, records, node, decided.tier, figures=tools))
        nodes[-1].reasons.extend([why] if why else [])
        nodes[-1].reasons.extend(reason for _, reason in decided.decisions)

    all_caps = list(caps.values())
    best = beam_search([n.options for n in nodes], all_caps, width=settings.plan.beam_width)
    assert best is not None, "a plan of local steps always fits"
    steps: list[PlanStep] = []
    problems: list[str] = []
    stop: BudgetExceededError | None = None
    for index, entry in enumerate(nodes):
        others = best[:index] + best[index + 1 :]
        pick, within, problem, error = _settle(entry, best[index], others, all_caps, settings.plan)
        if problem is not None:
            problems.append(f"`{entry.node}`: {problem}")
        stop = stop or error
        steps.append(_step(pick, questions.get(entry.node, []), entry.reasons, within=within))
    if planner_ran:
        steps.insert(0, _planner_step(gateway, settings.plan, records, task, constraints, note, history))
    return (
        Plan(
            objective=brief.objective,
            assumptions=brief.assumptions,
            steps=steps,
            estimated_total_usd=round(sum(s.estimated_cost_usd for s in steps), 6),
            estimated_total_tokens=sum(s.estimated_tokens for s in steps),
            feasible=not problems,
            reason="; ".join(problems) or None,
            caps=[_cap(room) for room in all_caps],
            replan_note=note,
        ),
        stop,
    )


@dataclass
class _NodeOptions:
    """One specialist's options, best first and the local path last, and why its tier is what it is."""

    node: str
    options: list[StepOption]
    reasons: list[str] = field(default_factory=list)

    @property
    def model_options(self) -> list[StepOption]:
        return [o for o in self.options if o.path != "local"]


def _options(
    gateway: Gateway,
    planning: Planning,
    records: Sequence[LedgerRecord],
    node: str,
    routed: Tier,
    *,
    figures: bool,
) -> _NodeOptions:
    """The routed tier and every reachable model tier below it, each ``tool`` then ``llm``; then local."""
    options: list[StepOption] = []
    if routed != "local":
        top = MODEL_TIERS.index(routed)
        for tier in reversed(MODEL_TIERS[: top + 1]):
            if no_endpoint(gateway.models, tier) is None:
                paths = ("tool", "llm") if figures else ("llm",)
                options += [_estimate(gateway, planning, records, node, tier, path) for path in paths]
    return _NodeOptions(node, [*options, _local(node, planning)])


def _local(node: str, planning: Planning) -> StepOption:
    """The local path of ``node``: no model, no cost, the local rules' quality."""
    return StepOption(
        node=node,
        path="local",
        tier="local",
        tokens=0,
        micro_usd=0,
        latency_ms=planning.local_latency_ms,
        tool_calls=0,
        quality=planning.local_quality,
        source="local rules",
    )


def _settle(
    entry: _NodeOptions,
    pick: StepOption,
    others: Sequence[StepOption],
    caps: Sequence[Room],
    planning: Planning,
) -> tuple[StepOption, bool, str | None, BudgetExceededError | None]:
    """Explain the search's pick for one node, and act when no model step fits.

    Returns:
        The step to plan, whether it is within budget, the problem when no
        model step fits (else ``None``), and the error to raise when a
        ``stop`` cap is in the way (else ``None``).
    """
    models = entry.model_options
    if not models:
        return pick, True, None, None
    if pick.path != "local":
        best = models[0]
        passed = over([*others, best], caps) if pick != best else []
        if passed:
            entry.reasons.append(
                f"{best.tier} ({best.path}) would pass "
                + ", ".join(f"{cap.where()} ({cap.shown()} left)" for cap in passed)
                + f": {pick.tier} ({pick.path})"
            )
        return pick, True, None, None
    cheapest = min(models, key=lambda o: (o.micro_usd, o.tokens))
    blocking = over([*others, cheapest], caps)
    shown = "; ".join(
        f"{cap.where()} has {cap.shown()} left, {cheapest.tier} needs about "
        f"{cap.shown(cheapest.uses(cap.unit))}"
        for cap in blocking
    )
    actions = {cap.on_exceed for cap in blocking}
    error = None
    within = True
    if planning.on_infeasible == "on_exceed" and "stop" in actions:
        cap = next(c for c in blocking if c.on_exceed == "stop")
        needed = sum(o.uses(cap.unit) for o in [*others, cheapest] if cap.node in (None, o.node))
        error = _stop_error(entry.node, cap, needed)
        entry.reasons.append(f"no model step fits: {shown}; on_exceed `stop`: `run` stops in the planner")
    elif planning.on_infeasible == "on_exceed" and "approve" in actions:
        pick, within = models[0], False
        entry.reasons.append(
            f"no model step fits: {shown}; on_exceed `approve`: the call will ask for approval"
        )
    else:
        entry.reasons.append(f"no model step fits: {shown}; local path")
    return pick, within, entry.reasons[-1], error


def _history(gateway: Gateway, now: datetime, planning: Planning) -> list[LedgerRecord]:
    """The ledger's records that estimates may use (none when ``history_window`` is 0)."""
    if planning.history_window == 0:
        return []
    return gateway.ledger.records(since=now - timedelta(days=HISTORY_DAYS))


def _estimate(
    gateway: Gateway,
    planning: Planning,
    records: Sequence[LedgerRecord],
    node: str,
    tier: Tier,
    path: str,
) -> StepOption:
    """Estimate a model step: history of the same node, tier and model blended with the prior.

    Each estimate is ``(n * mean + k * prior) / (n + k)`` over the latest
    ``history_window`` records (``n`` of them) and ``k = prior_weight``: the
    prior counts as ``k`` records, so a few unusual calls do not swing it. A
    ``tool`` step adds the round trip that asks for the tool: its input again,
    plus ``tool_round_trip_tokens``, and ``tool_round_trip_ms``.
    """
    assert tier in MODEL_TIERS
    settings = gateway.models.endpoints[tier].settings
    prior = planning.tiers.of(tier)  # type: ignore[arg-type]
    rows = (
        [
            r
            for r in records
            if r["node"] == node and r["tier"] == tier and r["model"] == settings.model and not r["cache_hit"]
        ][-planning.history_window :]
        if planning.history_window
        else []
    )
    n, k = len(rows), planning.prior_weight
    if n + k > 0:
        input_tokens = round((sum(r["input_tokens"] for r in rows) + k * prior.input_tokens) / (n + k))
        output_tokens = round((sum(r["output_tokens"] for r in rows) + k * prior.output_tokens) / (n + k))
    else:
        input_tokens, output_tokens = prior.input_tokens, prior.output_tokens
    latency, quality, tool_calls = prior.latency_ms, prior.quality, 0
    if path == "tool":
        input_tokens = 2 * input_tokens + planning.tool_round_trip_tokens
        latency += planning.tool_round_trip_ms
        quality = min(1.0, quality + planning.tool_quality_gain)
        tool_calls = 1
    price = gateway.prices.price(
        settings.model, input_tokens=input_tokens, output_tokens=output_tokens, provider=settings.provider
    )
    return StepOption(
        node=node,
        path="tool" if path == "tool" else "llm",
        tier=tier,
        tokens=input_tokens + output_tokens,
        micro_usd=price.micro_usd,
        latency_ms=latency,
        tool_calls=tool_calls,
        quality=quality,
        source=f"history of {n} call(s) blended with the prior" if n else "prior",
    )


def _planner_step(
    gateway: Gateway,
    planning: Planning,
    records: Sequence[LedgerRecord],
    task: str,
    constraints: Sequence[str],
    note: str | None,
    history: Sequence[ModelCall],
) -> PlanStep:
    """The planner's own step: the tier it ran at (its call in ``history``), else the one planned."""
    tier, why = planned_tier(gateway, "planner", task=task, constraints=constraints, note=note)
    ran = [c for c in history if c["node"] == "planner"]
    if ran:
        tier = ran[-1]["tier"]
    if tier == "local" or no_endpoint(gateway.models, tier) is not None:
        option = _local("planner", planning)
    else:
        option = _estimate(gateway, planning, records, "planner", tier, "llm")
    return _step(option, [], [why] if why else [], within=True)


def _step(option: StepOption, questions: list[str], reasons: list[str], *, within: bool) -> PlanStep:
    return PlanStep(
        node=option.node,  # type: ignore[arg-type]
        path=option.path,
        tier=option.tier,
        questions=questions,
        estimated_tokens=option.tokens,
        estimated_cost_usd=float(usd(option.micro_usd)),
        estimated_latency_ms=option.latency_ms,
        estimated_tool_calls=option.tool_calls,
        expected_quality=round(option.quality, 4),
        estimate_source=option.source,
        within_budget=within,
        reason="; ".join(reasons),
    )


_UNITS: Mapping[str, str] = {
    "tokens": "tokens",
    "micro_usd": "USD",
    "latency_ms": "ms",
    "tool_calls": "tool calls",
}


def _cap(room: Room) -> PlanCap:
    def value(amount: int) -> float:
        return float(usd(amount)) if room.unit == "micro_usd" else float(amount)

    return PlanCap(
        limit=room.limit,
        scope=room.scope,
        unit=_UNITS[room.unit],  # type: ignore[arg-type]
        cap=value(room.cap),
        left=value(room.left),
        on_exceed=room.on_exceed,
    )


def _stop_error(node: str, cap: Room, needed: int) -> BudgetExceededError:
    """The error ``limits`` would raise for the call, raised before any specialist spends."""
    if cap.unit == "micro_usd":
        spent: int | Decimal = usd(cap.spent)
        limit: int | Decimal = usd(cap.cap)
        requested: int | Decimal = usd(needed)
    else:
        spent, limit, requested = cap.spent, cap.cap, needed
    return BudgetExceededError(node=node, limit=cap.limit, spent=spent, cap=limit, requested=requested)


__all__ = ["HISTORY_DAYS", "NEW_RUN", "SPECIALISTS", "estimate", "plan", "plan_steps"]
