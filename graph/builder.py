r"""Builds the decision graph.

::

    START -> planner --Send--> cto ----\
                       \--Send--> coo ----+-> reconcile -> review -> END
                                                ^             |
                                                +-- replan ---+   (at most 3 times)

Importing this module builds nothing. :func:`build_graph` builds a graph;
:func:`make_graph` is the factory ``langgraph dev`` and the LangGraph server
call to serve it as ``decision`` (built on the first request, then cached;
without a checkpointer, as the server brings its own persistence).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt

from budgetgraph import agents
from budgetgraph.agents import Analysis, Plan, PlanStep
from budgetgraph.budgets import (
    BudgetsConfig,
    Gateway,
    ModelCall,
    ModelsConfig,
    NodeSession,
    load_budgets,
    load_models,
)
from budgetgraph.budgets.errors import DeferredPending
from budgetgraph.budgets.ledger import Ledger, open_ledger
from budgetgraph.budgets.routing.decision import decision_subject
from budgetgraph.graph.context import Context
from budgetgraph.graph.dependencies import constraints_for, fingerprint, plan_view
from budgetgraph.graph.review import ReviewAnswer, parse_answer, summary_message
from budgetgraph.graph.serving import (
    DEFAULT_PROFILE,
    DEFAULT_TENANT,
    Profile,
    Serving,
    caller_of,
    load_serving,
)
from budgetgraph.graph.state import InputState, NodeRun, RunSettings, SpecialistInput, State
from budgetgraph.settings import Settings, load_settings
from budgetgraph.tracing import traced_graph, traced_node

logger = logging.getLogger(__name__)

DEFERRED_KIND = "deferred"
"""The ``kind`` of a waiting node's interrupt value: it waits for batch answers, not for a human."""

NODE_NAMES: dict[str, str] = {
    "planner": "planner",
    "orchestrator": "planner",
    "cto": "cto",
    "cto_agent": "cto",
    "coo": "coo",
    "coo_agent": "coo",
    "reconcile": "reconcile",
    "reconcile_gpt": "reconcile",
}
"""Every name ``budgets.yaml`` may give a node (the design document's included)."""

LOCAL_AUTHOR = "local rules (no model)"


class EmptyTaskError(ValueError):
    """Raised when a run has no task: neither ``task`` nor a human message."""


def load_config(
    settings: Settings,
    *,
    models: str | Path | None = None,
    budgets: str | Path | None = None,
) -> tuple[ModelsConfig, BudgetsConfig]:
    """Load and check ``models.yaml`` and ``budgets.yaml`` as the settings say.

    Args:
        settings: The settings: the files when none is given, and the variables a
            tier's ``api_key_env`` may name (``BUDGETGRAPH_ALLOWED_KEY_ENV``).
        models: ``models.yaml`` (default: the settings', else the packaged one).
        budgets: ``budgets.yaml`` (default: the settings', else the packaged one).

    Raises:
        ConfigError: A file is missing or invalid, its ``router:`` or ``cache:`` section
            included (the plugins read them later, when a store may already be open);
            nothing is opened.
    """
    from budgetgraph.budgets.routing.settings import ROUTER_SECTION, RouterSettings

    keys = settings.allowed_key_env
    models_config = load_models(models or settings.models, allowed_key_env=keys)
    budgets_config = load_budgets(budgets or settings.budgets, node_names=NODE_NAMES, allowed_key_env=keys)
    budgets_config.section(ROUTER_SECTION, RouterSettings)
    if budgets_config.sections.get("cache") is not None:
        from budgetgraph.budgets.cache.config import CacheSettings

        budgets_config.section("cache", CacheSettings)
    return models_config, budgets_config


def build_graph(
    *,
    checkpointer: BaseCheckpointSaver | None = None,
    models: ModelsConfig | str | Path | None = None,
    budgets: BudgetsConfig | str | Path | None = None,
    ledger: Ledger | str | None = None,
    gateway: Gateway | None = None,
    name: str = "decision",
    configure_telemetry: bool = True,
    settings: Settings | None = None,
    serving: Serving | None = None,
) -> CompiledStateGraph[State, Context, InputState, State]:
    """Build and compile the decision graph.

    Args:
        checkpointer: Any LangGraph checkpointer; ``None`` keeps no checkpoints
            (the LangGraph server supplies its own).
        models: ``models.yaml``, as a path or loaded; ``None``: the settings'
            ``models`` (``BUDGETGRAPH_MODELS``), else the packaged default.
        budgets: ``budgets.yaml``, likewise (``BUDGETGRAPH_BUDGETS``).
        ledger: The spend ledger or its URL (``memory:``, ``sqlite:///PATH``,
            ``redis://...``); ``None``: the settings' ``ledger_url``
            (``BUDGETGRAPH_LEDGER_URL``), else SQLite under ``.budgetgraph/``.
        gateway: A ready gateway; overrides ``models``, ``budgets`` and ``ledger``.
        name: The compiled graph's name.
        configure_telemetry: Set up OpenTelemetry from the ``OTEL_*`` variables when
            the first run starts (once per process; what is pending is exported at
            exit), so that a graph built in Python or served traces with no other
            call; ``OTEL_SDK_DISABLED=true`` turns telemetry off all the same.
            ``False`` leaves the set-up to the program (a host's own SDK provider, or
            :func:`~budgetgraph.tracing.configure_telemetry`). Either way every
            invocation is a run span and every node execution a span below it (see
            :mod:`budgetgraph.tracing.runs`); without a set-up they cost nothing.
        settings: The settings (:mod:`budgetgraph.settings`); ``None`` reads the
            ``BUDGETGRAPH_*`` variables now.
        serving: The profiles a run's context may name (``profile``), whose default
            profile is the graph's own files; ``None``: one profile, ``default``.

    Returns:
        The compiled graph, which opens a run span for each invocation
        (:func:`~budgetgraph.tracing.traced_graph`). Invoke it with
        ``{"task": ..., "constraints": [...]}`` and
        ``{"configurable": {"thread_id": ...}}``; pass a
        :class:`~budgetgraph.graph.context.Context` as ``context=`` to set the tenant, the
        review threshold and the profile.

    Raises:
        ConfigError: A setting or YAML file is invalid (nothing is opened then).
    """
    if gateway is None:
        settings = settings if settings is not None else load_settings()
        models_config = (
            models
            if isinstance(models, ModelsConfig)
            else load_models(models or settings.models, allowed_key_env=settings.allowed_key_env)
        )
        budgets_config = (
            budgets if isinstance(budgets, BudgetsConfig) else load_config(settings, budgets=budgets)[1]
        )
        owned = None
        if not isinstance(ledger, Ledger):
            ledger = owned = open_ledger(ledger or settings.ledger_url)
        try:
            gateway = Gateway(models_config, budgets_config, ledger=ledger, settings=settings)
        except BaseException:
            if owned is not None:
                owned.close()
            raise
    if serving is None:
        serving = Serving({DEFAULT_PROFILE: Profile(DEFAULT_PROFILE, None, None)}, DEFAULT_PROFILE)
    nodes = _Nodes(gateway, serving)
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)

    def traced(node: str, fn: Any) -> Any:
        return traced_node(node, fn, configure=configure_telemetry)

    builder.add_node("planner", traced("planner", nodes.planner))
    builder.add_node("cto", traced("cto", nodes.specialist))
    builder.add_node("coo", traced("coo", nodes.specialist))
    builder.add_node("reconcile", traced("reconcile", nodes.reconcile))
    builder.add_node("review", traced("review", nodes.review), destinations=("planner", END))
    builder.add_edge(START, "planner")
    builder.add_conditional_edges("planner", _dispatch, list(agents.SPECIALISTS))
    for specialist in agents.SPECIALISTS:
        builder.add_edge(specialist, "reconcile")
    builder.add_edge("reconcile", "review")
    return traced_graph(builder.compile(checkpointer=checkpointer, name=name), configure=configure_telemetry)


class _Nodes:
    """The graph's nodes, bound to the default profile's gateway and the declared profiles."""

    def __init__(self, gateway: Gateway, serving: Serving) -> None:
        self.gateway = gateway
        self.serving = serving
        self._by_profile: dict[str, Gateway] = {}
        self._lock = threading.Lock()

    def _gateway(self, runtime: Runtime[Context], recorded: RunSettings | None = None) -> Gateway:
        """The gateway of this run's profile: the graph's own for the default profile.

        The profile is the context's, else the one the run started with (so an
        MCP or A2A resume without a context keeps it), else the default.

        A profile's gateway is built on its first run and shares the graph's
        ledger, so every profile's spend lands in one place.

        Raises:
            ProfileError: The context names a profile that is not declared, or
                that the served caller may not use.
        """
        profile = self.serving.profile(self._profile_name(runtime, recorded), caller_of(runtime))
        if profile.name == self.serving.default_profile:
            return self.gateway
        with self._lock:
            gateway = self._by_profile.get(profile.name)
            if gateway is None:
                settings = self.gateway.settings
                models, budgets = load_config(settings, models=profile.models, budgets=profile.budgets)
                gateway = self._by_profile[profile.name] = Gateway(
                    models, budgets, ledger=self.gateway.ledger, settings=settings
                )
        return gateway

    def _context(self, runtime: Runtime[Context]) -> Context:
        """The run's context, or the defaults."""
        return runtime.context or Context()

    def _profile_name(self, runtime: Runtime[Context], recorded: RunSettings | None) -> str | None:
        context = runtime.context
        if context is not None and context.profile is not None:
            return context.profile
        return (recorded or {}).get("profile")

    def _settings_update(
        self, node: str, runtime: Runtime[Context], recorded: RunSettings | None
    ) -> dict[str, Any]:
        """``{"run_settings": ...}`` when this node runs on other files than the run recorded.

        The first node records the run's files (or, served, only its profile: a
        client never sees the server's paths); a later node that runs on others
        (a resume given other files) records each change as an override.
        """
        gateway = self._gateway(runtime, recorded)
        served = caller_of(runtime) is not None
        profile = self.serving.profile(self._profile_name(runtime, recorded), caller_of(runtime)).name
        now: RunSettings = {
            "models": None if served else _source(gateway.models.source),
            "budgets": None if served else _source(gateway.budgets.source),
            "profile": profile,
        }
        if not recorded:
            return {"run_settings": now}
        changes = [
            {"node": node, "setting": key, "before": recorded.get(key), "after": value}
            for key, value in now.items()
            if recorded.get(key) != value
        ]
        return {"run_settings": {**now, "overrides": changes}} if changes else {}

    def _tenant(self, runtime: Runtime[Context], recorded: str | None) -> str:
        """Who pays for this run.

        Served: the authenticated caller, always (a context's or state's tenant is
        ignored; threads are owned, so a resume comes from the same tenant). From
        Python or the CLI: the tenant the run started with, else the context's,
        else the settings' (``BUDGETGRAPH_TENANT``).
        """
        caller = caller_of(runtime)
        if caller is not None:
            return caller.tenant
        return recorded or self._context(runtime).tenant or self.gateway.settings.tenant

    def _deferred(self, runtime: Runtime[Context], started: bool | None) -> bool | None:
        """Whether the run's calls are deferred: the context's choice, else the run's input's."""
        chosen = self._context(runtime).deferred
        return chosen if chosen is not None else started

    def _session(
        self,
        node: str,
        spend: Sequence[ModelCall],
        runtime: Runtime[Context],
        tenant: str | None,
        recorded: RunSettings | None,
        deferred: bool | None = None,
        subject: str | None = None,
        semantic: bool = True,
    ) -> NodeSession:
        info = runtime.execution_info
        # The run's own tenant pays: a resume or an edit with another context does not move it.
        tenant = self._tenant(runtime, tenant)
        gateway = self._gateway(runtime, recorded)
        deferred = self._deferred(runtime, deferred)
        if deferred is None:
            deferred = node in gateway.budgets.deferred.nodes
        # The checkpoint a task starts from is the same when it runs again after a crash,
        # and new for every later step, re-plan or edit: it names this run of the node.
        caller = caller_of(runtime)
        return gateway.session(
            node,
            history=spend,
            thread_id=info.thread_id if info else None,
            tenant=tenant,
            may_approve=caller is None or caller.may_approve,
            step=info.checkpoint_id if info else "",
            deferred=deferred,
            subject=subject,
            semantic=semantic,
            wait=functools.partial(
                _wait_for_batch,
                run={
                    "tenant": tenant,
                    "review_threshold": self._context(runtime).review_threshold,
                    "profile": self._profile_name(runtime, recorded),
                },
            ),
        )

    def planner(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        recorded = state.get("run_settings")
        settings_update = self._settings_update("planner", runtime, recorded)  # checks the profile first
        task = _task_of(state)
        review = state.get("review") or {}
        plan = state.get("plan")
        # A re-plan note stands until the next one: an edit after a re-plan keeps it (and the plan).
        note = review.get("note") if review.get("decision") == "replan" else (plan or {}).get("replan_note")
        constraints = state.get("constraints") or []
        inputs = fingerprint("planner", task=task, constraints=constraints, extra=note)
        context = self._context(runtime)
        threshold, tenant = context.review_threshold, self._tenant(runtime, state.get("tenant"))
        if plan is not None and plan.get("inputs") == inputs:
            return {
                "review_threshold": threshold,
                "tenant": tenant,
                "node_runs": [_run("planner", inputs, reused=True)],
                **settings_update,
            }
        general = [c["text"] for c in constraints_for("planner", constraints)]
        # The router scores, and every node's cache lookup compares, the whole decision: a
        # constraint only the CTO reads still makes the COO's lookup miss (a hit lost, never a
        # wrong one), and one embedding per run serves them all.
        every = [c["text"] for c in constraints]
        session = self._session(
            "planner",
            state.get("spend", []),
            runtime,
            tenant,
            recorded,
            state.get("deferred"),
            subject=decision_subject(task, every, note),
        )
        made = agents.plan(
            session,
            self._gateway(runtime, recorded),
            task=task,
            constraints=general,
            note=note,
            all_constraints=every,
        )
        return {
            **settings_update,
            "task": task,
            "plan": {**made.model_dump(mode="json"), "authored_by": _author(session), "inputs": inputs},
            "reconciliation": None,
            "review_threshold": threshold,
            "tenant": tenant,
            "spend": session.calls,
            "node_runs": [_run("planner", inputs, calls=session.calls)],
        }

    def specialist(self, state: SpecialistInput, runtime: Runtime[Context]) -> dict[str, Any]:
        step = PlanStep.model_validate(state["step"])
        recorded = state.get("run_settings")
        plan = Plan.model_validate(_plain(state["plan"]))
        constraints = [c["text"] for c in constraints_for(step.node, state["constraints"])]
        session = self._session(
            step.node,
            state["spend"],
            runtime,
            state.get("tenant"),
            recorded,
            state.get("deferred"),
            subject=_subject(state),
        )
        analysis = agents.analyze(session, step, plan, task=state["task"], constraints=constraints)
        inputs = _specialist_inputs(step.node, state)
        record = {**analysis.model_dump(mode="json"), "authored_by": _author(session), "inputs": inputs}
        return {
            **self._settings_update(step.node, runtime, recorded),
            "analyses": {step.node: record},
            "spend": session.calls,
            "node_runs": [_run(step.node, inputs, calls=session.calls)],
        }

    def reconcile(self, state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        analyses = state.get("analyses") or {}
        recorded = state.get("run_settings")
        session = self._session(
            "reconcile",
            state.get("spend", []),
            runtime,
            state.get("tenant"),
            recorded,
            state.get("deferred"),
            subject=_subject(state),
            # A reconciliation answers its analyses as much as the decision: one stored for a
            # like decision is served only when both analyses were served from the cache too.
            semantic=_from_cache(state.get("spend", []), ("cto", "coo")),
        )
        result = agents.reconcile(
            session,
            task=state["task"],
            constraints=_texts(state),
            cto=Analysis.model_validate(_plain(analyses["cto"])),
            coo=Analysis.model_validate(_plain(analyses["coo"])),
            step=_planned_step(state, "reconcile"),
        )
        return {
            **self._settings_update("reconcile", runtime, recorded),
            "reconciliation": {**result.model_dump(mode="json"), "authored_by": _author(session)},
            "spend": session.calls,
            "node_runs": [_run("reconcile", "", calls=session.calls)],
        }

    def review(self, state: State, runtime: Runtime[Context]) -> Command:
        context = self._context(runtime)
        threshold = state.get("review_threshold", context.review_threshold)
        context = dataclasses.replace(context, review_threshold=threshold)
        reconciliation = state.get("reconciliation") or {}
        score = int(reconciliation.get("risk_score", 0))
        replans = state.get("replans", 0)
        if score < context.review_threshold:
            outcome: dict[str, Any] = {
                "decision": "auto-approved",
                "by": "threshold",
                "note": f"risk score {score} is below the review threshold {context.review_threshold}",
            }
            self._forget(runtime, state)
            return _finish(state, outcome)
        answer = self._ask(score, context, replans)
        if answer.action == "replan":
            outcome = {"decision": "replan", "by": "human", "note": answer.note}
            return Command(
                goto="planner",
                update={"review": outcome, "replans": replans + 1, "node_runs": [_run("review", "")]},
            )
        outcome = {
            "decision": "approved" if answer.action == "approve" else "rejected",
            "by": "human",
            "note": answer.note,
        }
        self._forget(runtime, state)
        return _finish(state, outcome)

    def _forget(self, runtime: Runtime[Context], state: State) -> None:
        """Prune the finished run's call journal: no node of it will ask a model again."""
        info = runtime.execution_info
        if info is not None and info.thread_id:
            self._gateway(runtime, state.get("run_settings")).forget_thread(info.thread_id)

    @staticmethod
    def _ask(score: int, context: Context, replans: int) -> ReviewAnswer:
        """Interrupt until the reviewer gives an answer the run can take."""
        problem = None
        while True:
            can_replan = replans < context.max_replans
            raw = interrupt(
                {
                    "kind": "review",
                    "question": f"The reconciliation scores the risk {score} of 5, at or above the "
                    f"review threshold {context.review_threshold}. Approve, reject or re-plan?",
                    "risk_score": score,
                    "threshold": context.review_threshold,
                    "replans": replans,
                    "max_replans": context.max_replans,
                    "actions": ["approve", "reject", "replan"] if can_replan else ["approve", "reject"],
                    "problem": problem,
                }
            )
            answer, problem = parse_answer(raw)
            if answer is None:
                continue
            if answer.action == "replan" and not can_replan:
                problem = f"The re-plan limit ({context.max_replans}) is reached: approve or reject."
                continue
            return answer


def _wait_for_batch(pending: DeferredPending, *, run: dict[str, Any]) -> object:
    """Pause the run until a deferred call's answer is in: a LangGraph interrupt.

    The interrupt's value is ``{"kind": "deferred", "node", "custom_id",
    "batch_id", "run"}``, where ``run`` holds what the run was started with
    (``tenant``, ``review_threshold``, ``profile``) so that the collector resumes
    it as it was started (see :func:`budgetgraph.graph.collect.resume_context`).
    The collector resumes the run (``Command(resume=...)``) once every answer it
    waits for is in, and the call is asked again.
    """
    return interrupt({"kind": DEFERRED_KIND, **pending.to_json(), "run": run})


def _dispatch(state: State) -> list[Send]:
    """Send each plan step to its specialist, unless its analysis already answers the same inputs."""
    plan = state["plan"] or {}
    base: dict[str, Any] = {
        "task": state["task"],
        "constraints": state.get("constraints", []),
        "plan": plan,
        "spend": state.get("spend", []),
        "tenant": state.get("tenant"),
        "run_settings": state.get("run_settings") or {},
        "deferred": state.get("deferred"),
    }
    analyses = state.get("analyses") or {}
    sends = []
    for step in plan.get("steps", []):
        if step["node"] not in agents.SPECIALISTS:  # the planner's own and reconcile's run in place
            continue
        payload: SpecialistInput = {**base, "step": step}  # type: ignore[typeddict-item]
        done = analyses.get(step["node"])
        if done is None or done.get("inputs") != _specialist_inputs(step["node"], payload):
            sends.append(Send(step["node"], payload))
    return sends


def _planned_step(state: State, node: str) -> PlanStep | None:
    """The plan's step for ``node`` (its tier is the contract), or ``None`` in an older plan."""
    for step in (state.get("plan") or {}).get("steps", []):
        if step.get("node") == node:
            return PlanStep.model_validate(step)
    return None


def _specialist_inputs(node: str, state: SpecialistInput) -> str:
    return fingerprint(
        node, task=state["task"], constraints=state["constraints"], extra=plan_view(state["plan"], node)
    )


def _run(node: str, inputs: str, *, calls: Sequence[ModelCall] = (), reused: bool = False) -> NodeRun:
    return NodeRun(
        node=node, reused=reused, cost_micro_usd=sum(c["cost_micro_usd"] for c in calls), inputs=inputs
    )


def _finish(state: State, outcome: dict[str, Any]) -> Command:
    """End the run with the review's ``outcome`` and the closing summary message."""
    return Command(
        goto=END,
        update={
            "review": outcome,
            "messages": [summary_message(state, outcome)],
            "node_runs": [_run("review", "")],
        },
    )


def _task_of(state: State) -> str:
    task = (state.get("task") or "").strip()
    if not task:
        for message in reversed(state.get("messages") or []):
            if isinstance(message, HumanMessage) and message.text.strip():
                task = message.text.strip()
                break
    if not task:
        raise EmptyTaskError(
            "The task is empty: give the decision to review as `task` or as a human message."
        )
    return task


def _texts(state: State | SpecialistInput) -> list[str]:
    return [c["text"] for c in state.get("constraints") or []]


def _subject(state: State | SpecialistInput) -> str:
    """The run's decision as its plan stands: the task, every constraint and the plan's re-plan note."""
    return decision_subject(state["task"], _texts(state), (state.get("plan") or {}).get("replan_note"))


def _from_cache(spend: Sequence[ModelCall], nodes: Sequence[str]) -> bool:
    """Whether the latest call of each of ``nodes`` in ``spend`` was answered from the cache."""
    latest = {row["node"]: row for row in spend if row["node"] in nodes}
    return len(latest) == len(nodes) and all(row.get("cache_hit") for row in latest.values())


def _author(session: NodeSession) -> str:
    last = session.calls[-1]
    if last["tier"] == "local":
        return LOCAL_AUTHOR
    return f"{last['model']} ({last['tier']} tier)"


def _source(source: str) -> str | None:
    """A loaded file's path as the run records it: absolute, or ``None`` for a packaged file."""
    return None if source.startswith("<") else _resolved(source, os.getcwd())


@functools.lru_cache(maxsize=64)
def _resolved(source: str, cwd: str) -> str:
    """``source`` made absolute from ``cwd`` with links resolved (every node of every run asks)."""
    return str((Path(cwd) / source).resolve())


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("authored_by", "inputs")}


_served: CompiledStateGraph[State, Context, InputState, State] | None = None
_served_lock = threading.Lock()


def make_graph(config: RunnableConfig) -> CompiledStateGraph[State, Context, InputState, State]:
    """The graph factory the LangGraph server calls (``langgraph.json`` serves it as ``decision``).

    The server calls it for every request that needs the graph, passing the
    request's config. The graph is built on the first call, from the
    settings the server's environment holds then (``BUDGETGRAPH_*``, see
    :mod:`budgetgraph.settings`), and the same compiled graph is returned
    afterwards. It has no checkpointer: the server brings its own. Each run
    is one run span with its node spans below, telemetry being set up from
    the server's ``OTEL_*`` variables on the first run (see
    :mod:`budgetgraph.tracing.runs`).

    Args:
        config: The request's config (unused: the graph is the same for every request).

    Raises:
        ConfigError: A setting or YAML file is invalid (the server reports it on the request).
    """
    global _served
    if _served is None:
        with _served_lock:
            if _served is None:
                settings = load_settings()
                serving = load_serving(settings)
                if not serving.auth_enabled:
                    logger.warning(
                        "budgetgraph: no clients are declared (BUDGETGRAPH_SERVING), so there is no "
                        "auth: every caller runs as tenant `%s`",
                        DEFAULT_TENANT,
                    )
                default = serving.profiles[serving.default_profile]
                _served = build_graph(
                    models=default.models,
                    budgets=default.budgets,
                    settings=settings,
                    serving=serving,
                    configure_telemetry=True,
                )
    return _served


__all__ = ["NODE_NAMES", "EmptyTaskError", "build_graph", "load_config", "make_graph"]
