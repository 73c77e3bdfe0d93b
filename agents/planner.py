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
from datetime import UTC, datetime

from langchain_core.messages import HumanMessage, SystemMessage

from budgetgraph.agents import rules
from budgetgraph.agents.beam import beam_search
from budgetgraph.agents.prompts import PLANNER_SYSTEM, REPLAN_NOTE_TEMPLATE, SPECIALIST_TEMPLATE
from budgetgraph.agents.schemas import Plan, PlanBrief, PlanCap, PlanStep
from budgetgraph.agents.text import bullets, task_block
from budgetgraph.budgets import BudgetExceededError, Gateway, ModelCall, NodeSession, Tier, usd
from budgetgraph.budgets.caps import UNIT_NAMES, Room, StepOption, exceeded, over, plain, tightest_usd
from budgetgraph.budgets.estimates import Estimator
from budgetgraph.budgets.routing import Complexity

logger = logging.getLogger(__name__)

SPECIALISTS: tuple[str, ...] = ("cto", "coo")
"""The specialist nodes a plan can run, in parallel."""

NEW_RUN = "(new run)"
"""The thread :func:`estimate` plans for when given none: a run not started, which has spent nothing."""

_FIGURES = re.compile(r"\d")


def plan(
    session: NodeSession,
    gateway: Gateway,
    *,
    task: str,
    constraints: Sequence[str],
    note: str | None = None,
    all_constraints: Sequence[str] | None = None,
) -> Plan:
    """Frame the decision with a model (through ``session``) and plan one step per specialist.

    Args:
        session: The planner node's session with the gateway.
        gateway: For the tiers' models, prices, budgets and ledger.
        task: The decision to review.
        constraints: The constraint texts the planner reads.
        note: The reviewer's note when this is a re-plan.
        all_constraints: Every constraint text of the decision, the specialists'
            too: the router scores the whole decision, as ``budgetgraph plan``
            does (``None``: ``constraints``).

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
    every = constraints if all_constraints is None else all_constraints
    decision = gateway.estimator.score(task, every, note)
    tier, reason = gateway.estimator.planned_tier("planner", decision)
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
        decision=decision,
    )
    if stop is not None:
        logger.info("Plan is infeasible and a cap says stop: %s", made.reason)
        raise stop
    return made


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
    decision: Complexity | None = None,
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
        decision: The decision's score, when the caller has it (default: scored
            from ``task``, ``constraints`` and ``note``).

    Returns:
        The plan, and the error to raise when a ``stop`` cap makes it
        infeasible (``None`` otherwise).

    Raises:
        ConfigError: The ``router:`` section of ``budgets.yaml`` is invalid.
    """
    now = now or datetime.now(UTC)
    budget = gateway.estimator
    questions: dict[str, list[str]] = {"cto": brief.cto_questions, "coo": brief.coo_questions}
    figures = bool(_FIGURES.search(" ".join([task, *constraints])))
    if decision is None:  # quality priors depend on it, routed or not
        decision = budget.score(task, constraints, note)
    score = decision.score
    planner_ran = any(c["node"] == "planner" for c in history)
    # A planner that has run spent already (in ``history``, so in every cap's room);
    # before it runs (``budgetgraph plan``), its step is planned with the others.
    planned = (*(() if planner_ran else ("planner",)), *SPECIALISTS, "reconcile")
    found = budget.rooms(planned, thread_id=thread_id, tenant=tenant, now=now, history=history)
    caps: dict[tuple[str, str], Room] = {}
    nodes: list[_NodeOptions] = []
    routed: list[tuple[str, Tier, list[str]]] = []
    for node in planned:
        for room in found[node]:
            caps.setdefault((room.scope, room.limit), room)
        prompt = SPECIALIST_TEMPLATE.format(
            task_block=task_block(task, constraints),
            objective=brief.objective,
            questions=bullets(questions.get(node, [])),
            assumptions=bullets(brief.assumptions),
        )
        if note:
            prompt += REPLAN_NOTE_TEMPLATE.format(note=note)
        wanted, why = budget.planned_tier(node, decision)
        decided = budget.route(
            wanted,
            node=node,
            text=None if budget.by_decision or node not in SPECIALISTS else prompt,
            budget=tightest_usd(found[node]),
        )
        reasons = ([why] if why else []) + [reason for _, reason in decided.decisions]
        routed.append((node, decided.tier, reasons))
    ran_tier = _ran_tier(budget, history, decision) if planner_ran else None
    steps_read = [(node, tier) for node, tier, _ in routed] + ([("planner", ran_tier)] if ran_tier else [])
    recent = budget.recent(steps_read, now=now)  # the estimates' history, read at once
    for node, tier, reasons in routed:
        tools = figures and node in SPECIALISTS
        options = budget.options(node, tier, tools=tools, score=score, now=now, recent=recent)
        nodes.append(_NodeOptions(node, options, reasons))

    all_caps = list(caps.values())
    planning = budget.planning
    best = beam_search(
        [n.options for n in nodes],
        all_caps,
        width=planning.beam_width,
        quality_per_usd=planning.quality_per_usd,
    )
    assert best is not None, "a plan of local steps always fits"
    steps: list[PlanStep] = []
    problems: list[str] = []
    stop: BudgetExceededError | None = None
    for index, entry in enumerate(nodes):
        others = best[:index] + best[index + 1 :]
        pick, within, problem, error = _settle(entry, best[index], others, all_caps, planning.on_infeasible)
        if problem is not None:
            problems.append(f"`{entry.node}`: {problem}")
        stop = stop or error
        steps.append(_step(pick, questions.get(entry.node, []), entry.reasons, within=within))
    if planner_ran:
        steps.insert(0, _planner_step(budget, decision, ran_tier, now=now, recent=recent))
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


def _settle(
    entry: _NodeOptions,
    pick: StepOption,
    others: Sequence[StepOption],
    caps: Sequence[Room],
    on_infeasible: str,
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
    if on_infeasible == "on_exceed" and "stop" in actions:
        cap = next(c for c in blocking if c.on_exceed == "stop")
        needed = sum(o.uses(cap.unit) for o in [*others, cheapest] if cap.node in (None, o.node))
        error = exceeded(entry.node, cap, needed)
        entry.reasons.append(f"no model step fits: {shown}; on_exceed `stop`: `run` stops in the planner")
    elif on_infeasible == "on_exceed" and "approve" in actions:
        pick, within = models[0], False
        entry.reasons.append(
            f"no model step fits: {shown}; on_exceed `approve`: the call will ask for approval"
        )
    else:
        entry.reasons.append(f"no model step fits: {shown}; local path")
    return pick, within, entry.reasons[-1], error


def _ran_tier(budget: Estimator, history: Sequence[ModelCall], decision: Complexity) -> Tier:
    """The tier the planner ran at (its last call in ``history``), else the one planned."""
    ran = [c for c in history if c["node"] == "planner"]
    if ran:
        return ran[-1]["tier"]
    return budget.planned_tier("planner", decision)[0]


def _planner_step(
    budget: Estimator,
    decision: Complexity,
    tier: Tier | None,
    *,
    now: datetime,
    recent: Mapping[tuple[str, Tier], list[tuple[int, int]]],
) -> PlanStep:
    """The planner's own step, at the tier it ran at (:func:`_ran_tier`)."""
    _, why = budget.planned_tier("planner", decision)
    if tier is None or not budget.reachable(tier):
        option = budget.local("planner")
    else:
        option = budget.estimate("planner", tier, "llm", score=decision.score, now=now, recent=recent)
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


def _cap(room: Room) -> PlanCap:
    return PlanCap(
        limit=room.limit,
        scope=room.scope,
        unit=UNIT_NAMES[room.unit],  # type: ignore[arg-type]
        cap=float(plain(room.unit, room.cap)),
        left=float(plain(room.unit, room.left)),
        on_exceed=room.on_exceed,
    )


__all__ = ["NEW_RUN", "SPECIALISTS", "estimate", "plan", "plan_steps"]
