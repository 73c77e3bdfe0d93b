"""The gateway: the one door every model call goes through.

``Gateway.call`` runs a :class:`~budgetgraph.budgets.request.CallRequest` through the
node's plugin chain down to :class:`~budgetgraph.budgets.chat.ChatModels`. A node talks to
it through a :class:`NodeSession`, which keeps the node's spend, runs the
tools the model asks for, and asks once more when an answer fails its schema.

A call that fails on every tier the router tried with a failure another try
may cure (HTTP 429 or 5xx, a timeout, a broken connection, an unusable body)
is sent again, up to the asked tier's ``max_retries`` times, after the server's
``Retry-After`` or an exponential backoff; never past the node's latency cap
(the retry is then refused with :class:`~budgetgraph.budgets.errors.BudgetExceededError`)
and never past its budget (each try reserves anew in ``limits``).

Completed calls are journaled by thread, node, checkpoint and prompt, and
replayed when the node runs again after a crash; an answer that failed its
schema is never journaled, so a resume asks again. A call whose attempt was
left open by a process that died (see :class:`~budgetgraph.budgets.ledger.base.Attempt`)
is closed when it is asked again: its reservation is released at once, and
it is recorded as unsettled at that reservation unless its stored answer is
fetched back.

The default chain is ``router -> cache -> limits``: the router settles the tier, so
the cache looks in that model's namespace and the limits price that model; a cache
hit reaches no limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from budgetgraph.budgets.caps import Scopes, caps_for, latency_exceeded, latency_left_ms, rooms
from budgetgraph.budgets.chat import ChatModels
from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig, Tier
from budgetgraph.budgets.deferred.queue import PENDING_STATES, BatchQueue, open_queue
from budgetgraph.budgets.errors import DeferredFailedError, DeferredPending, ModelOutputError
from budgetgraph.budgets.estimates import Estimator
from budgetgraph.budgets.ledger import Ledger, open_ledger, scope_part
from budgetgraph.budgets.ledger.base import Attempt
from budgetgraph.budgets.plugins.base import Plugin, PluginContext, build_chain
from budgetgraph.budgets.plugins.router import _describe, _retry_after, _trigger
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import (
    CallRequest,
    CallResult,
    ModelCall,
    Totals,
    from_journal,
    journal_entry,
    ledger_record,
)
from budgetgraph.lazy import lazy_module
from budgetgraph.settings import Settings, load_settings
from budgetgraph.tracing import BudgetLeft, model_call_span, record_result, tool_span

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

logger = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5
"""The first wait before a retry without ``Retry-After`` (s); it doubles with each retry."""

MAX_RETRY_WAIT_S = 60.0
"""The longest wait before one retry (s), whatever ``Retry-After`` asks."""

ORPHANED = "its process ended while the request was in flight; closed when the run resumed"
"""The reason recorded on an attempt closed by a resume."""

DEFAULT_CHAIN: tuple[str, ...] = ("router", "cache", "limits")
"""Plugins every node runs unless configured otherwise, outermost first."""

S = TypeVar("S", bound=BaseModel)

REPAIR_PROMPT = (
    "Your last answer did not match the required JSON schema:\n{error}\n"
    "Answer again with JSON that matches the schema exactly."
)


class Gateway:
    """Runs model calls through plugin chains.

    Args:
        models: The resolved ``models.yaml``.
        budgets: The loaded ``budgets.yaml``.
        ledger: Where spend is reserved and recorded (default: an in-process ledger).
        chains: Plugin names per node, outermost first, over those of ``budgets.yaml``.
        default_chain: The chain of every other node (default: ``budgets.yaml``'s
            ``plugins``, else :data:`DEFAULT_CHAIN`).
        settings: The process's settings, handed to the plugins (default: read from
            the ``BUDGETGRAPH_*`` variables now, :func:`~budgetgraph.settings.load_settings`).
        batches: The queue of deferred calls (default: the settings' ``batch_queue``).

    Raises:
        ConfigError: A chain names an unknown plugin, or a setting is invalid.
    """

    def __init__(
        self,
        models: ModelsConfig,
        budgets: BudgetsConfig,
        *,
        ledger: Ledger | None = None,
        chains: Mapping[str, Sequence[str]] | None = None,
        default_chain: Sequence[str] | None = None,
        settings: Settings | None = None,
        batches: BatchQueue | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.models = models
        self.budgets = budgets
        self.ledger = ledger if ledger is not None else open_ledger("memory:")
        self.prices = PriceBook(models.file.prices, models.file.batch_discounts)
        self.batches = batches if batches is not None else open_queue(self.settings.batch_queue)
        """The queue of deferred calls (opened on its first use)."""
        self.chat = ChatModels(models, self.prices, self.batches)
        self.estimator = Estimator(models, budgets, self.prices, self.ledger)
        """What plans ask of the budgets: tiers, rooms and step estimates."""
        context = PluginContext(
            models=models, budgets=budgets, prices=self.prices, ledger=self.ledger, settings=self.settings
        )
        names = default_chain or budgets.chain or DEFAULT_CHAIN
        self._default = build_chain(names, context, source=budgets.source)
        per_node: dict[str, Sequence[str]] = {
            node: b.plugins for node, b in budgets.nodes.items() if b.plugins is not None
        }
        per_node.update(chains or {})
        self._chains = {
            node: build_chain(chain, context, source=budgets.source) for node, chain in per_node.items()
        }

    def chain(self, node: str) -> list[Plugin]:
        """Return the plugins ``node``'s calls pass through, outermost first."""
        return self._chains.get(node, self._default)

    def call(self, request: CallRequest, *, journal_key: str | None = None) -> CallResult:
        """Run ``request`` through its node's chain and return the result.

        Args:
            request: The call.
            journal_key: A key naming this call within its run. A call whose key
                is in the ledger's journal already completed (before a crash or a
                resume): its result is replayed without calling the chain, and its
                spend, already settled, is not counted again. Attempts of the call
                left open by a process that died are closed (see the module docstring).

        Raises:
            BudgetExceededError: A limit refused the call, or the latency cap ran out
                before a retry.
            openai.APIError: The model server failed, on every tier tried and every retry.
        """
        now = datetime.now(UTC)
        scopes = Scopes.named(request.node, thread_id=request.thread_id, tenant=request.tenant, now=now)
        # One read for what the call needs from the ledger: its journal entry, the attempts
        # a dead process left open, and the totals the router and the limits read.
        start = self.ledger.open_call(journal_key, scopes.all())
        request = request.evolve(started=time.monotonic(), held=start.totals)
        orphans: list[Attempt] = []
        if journal_key is not None:
            entry = start.journal
            if entry is not None and entry.get("parse_error") is None:
                logger.info("Node `%s`: replaying a completed call from the journal", request.node)
                return from_journal(entry, request)
            deferred = [a for a in start.attempts if a.record.get("deferred")]
            orphans = self._close_orphans([a for a in start.attempts if not a.record.get("deferred")])
            request = request.evolve(
                call_id=journal_key, recover=bool(orphans), recover_ids=tuple(o.key for o in orphans)
            )
            if deferred:
                request = self._deferred(request, deferred[-1])
        try:
            result = self._run(request)
        except BaseException:
            self._unsettle(orphans, recovered=None)
            raise
        self._unsettle(orphans, recovered=result.recovered)
        # One write: the journal entry (an answer that failed its schema is not kept) and
        # a ledger record of every call, for reports (totals are the plugins' job).
        ts = datetime.now(UTC).isoformat()
        records = [
            ledger_record(call, tenant=request.tenant, thread_id=request.thread_id or "", ts=ts)
            for call in ([] if result.kept else result.calls)
        ]
        journaled = journal_key if result.parse_error is None and not result.journaled else None
        self.ledger.finish_call(journaled, journal_entry(result) if journaled else None, records)
        return result

    def _deferred(self, request: CallRequest, attempt: Attempt) -> CallRequest:
        """The call asked again while its request is in the batch queue.

        Returns:
            The request to run the chain with: answering from the queue and settling the
            attempt's reservation (answered, or never queued: a process died between
            reserving and queueing), or sent live (the batch request failed and
            ``deferred.on_failure`` is ``live``).

        Raises:
            DeferredPending: The answer is not in yet.
            DeferredFailedError: The batch request failed and ``on_failure`` is ``stop``.
        """
        queued = self.batches.get(attempt.key)
        if queued is not None and queued.state in PENDING_STATES:
            raise DeferredPending(node=request.node, custom_id=attempt.key, batch_id=queued.batch_id)
        if queued is None or queued.state in ("done", "consumed"):
            return request.evolve(
                deferred=True, deferred_attempt=attempt, tier=attempt.record["tier"], attempt_id=attempt.key
            )
        # Expired, cancelled or failed: nothing was billed; the reservation goes back.
        if self.ledger.end_attempt(attempt.key):
            self.ledger.release(attempt.reservation)
        reason = json.dumps((queued.result or {}).get("error"))[:300]
        if self.budgets.deferred.on_failure == "stop":
            raise DeferredFailedError(
                node=request.node, custom_id=attempt.key, batch_id=queued.batch_id, reason=reason
            )
        logger.info(
            "Node `%s`: batch request %s failed (%s); sending it live", request.node, attempt.key, reason
        )
        return request.evolve(deferred=False).decide(
            "gateway", "live", f"batch request in {queued.batch_id} failed ({reason}); sent live"
        )

    def forget_thread(self, thread_id: str) -> int:
        """Drop the journal of a finished run (``thread_id``); its calls are never replayed again.

        Returns:
            What the ledger dropped (see :meth:`~budgetgraph.budgets.ledger.Ledger.prune_journal`).
        """
        return self.ledger.prune_journal(scope_part(thread_id) + ":")

    def _close_orphans(self, open_attempts: Sequence[Attempt]) -> list[Attempt]:
        """Close the attempts of this call that a dead process left open; release their reservations.

        An attempt whose answer the server may have stored (its tier has
        ``store_completions``) is returned, to be fetched back; any other is
        recorded as unsettled at once.
        """
        kept: list[Attempt] = []
        for attempt in open_attempts:
            endpoint = self.models.endpoints.get(attempt.record["tier"])
            if endpoint is None or not endpoint.settings.store_completions:
                self.ledger.unsettle(attempt.key, ORPHANED)
            elif self.ledger.end_attempt(attempt.key):
                self.ledger.release(attempt.reservation)
                kept.append(attempt)
        return kept

    def _reachable(self, request: CallRequest) -> CallRequest:
        """``request``, or on the local tier when its tier has no endpoint to call.

        The router sends such calls local before any limit reserves; a chain without
        the router (``plugins: [limits]``) reaches here with the tier it was asked.
        """
        if request.tier == "local":
            return request
        endpoint = self.models.endpoints.get(request.tier)
        if endpoint is not None and endpoint.configured:
            return request
        return request.evolve(tier="local").decide(
            "gateway", "local", f"tier `{request.tier}` has no model endpoint (no base_url or API key): local"
        )

    def _unsettle(self, orphans: Sequence[Attempt], *, recovered: str | None) -> None:
        """Record the closed orphans whose answers were not fetched back as unsettled."""
        for attempt in orphans:
            if attempt.key != recovered:
                record = {**attempt.record, "reason": ORPHANED}
                charge = attempt.reservation.charge
                self.ledger.keep_unsettled(record, charge, attempt.reservation.scopes)

    def _run(self, request: CallRequest) -> CallResult:
        """Run the chain, and again after a failure a retry may cure (see the module docstring)."""
        chain = self.chain(request.node)

        def step(index: int, req: CallRequest) -> CallResult:
            if index == len(chain):
                return self.chat.invoke(self._reachable(req))
            return chain[index].wrap(req, lambda nxt: step(index + 1, nxt))

        asked = self.models.endpoints.get(request.tier)
        retries = asked.settings.max_retries if asked is not None else 0
        with model_call_span(
            node=request.node,
            tier=request.tier,
            thread_id=request.thread_id,
            request_model=asked.settings.model if asked is not None else None,
        ) as span:
            failures = 0
            while True:
                try:
                    result = step(0, request)
                    break
                except openai.APIError as exc:
                    wait = self._retry_wait(request, exc, failures, retries)
                    failures += 1
                    logger.info(
                        "`%s`: %s; retry %d of %d in %.2f s",
                        request.node,
                        _describe(exc),
                        failures,
                        retries,
                        wait,
                    )
                    time.sleep(wait)
                    request = request.decide(
                        "gateway",
                        "retry",
                        f"{_describe(exc)} on every tier tried;"
                        f" retry {failures} of {retries} after {wait:.2f} s",
                    )
            endpoint = self.models.endpoints.get(result.calls[-1]["tier"]) if result.calls else None
            record_result(
                span,
                result.calls,
                provider=(endpoint.settings.provider or "openai") if endpoint is not None else None,
                request_model=endpoint.settings.model if endpoint is not None else None,
                budget_left=self._budget_left(request, result),
            )
        return result

    def _retry_wait(self, request: CallRequest, exc: openai.APIError, failures: int, retries: int) -> float:
        """How long to wait before retrying after ``exc``; re-raise it when no retry is due.

        Raises:
            openai.APIError: ``exc``, when it is not worth a retry or the retries are spent.
            BudgetExceededError: The wait would run past the node's latency cap.
        """
        if failures >= retries or _trigger(exc) is None:
            raise exc
        wait = min(_retry_after(exc) or RETRY_BACKOFF_S * 2**failures, MAX_RETRY_WAIT_S)
        node = self.budgets.node(request.node)
        left = latency_left_ms(node, request)
        if left is not None and wait * 1000 >= left:
            raise latency_exceeded(request, node, left, wait * 1000) from exc
        return wait

    def _budget_left(self, request: CallRequest, result: CallResult) -> BudgetLeft:
        """What the node's and the task's caps in ``budgets.yaml`` leave after ``result``.

        Counted from the run's state (the spend before the request plus the
        result), not read from the ledger; room granted by approvals is not included.
        """
        node, task = request.node_spent, request.task_spent
        for call in result.calls:
            node, task = node + call, task + call
        scopes = Scopes.named(
            request.node, thread_id=request.thread_id, tenant=request.tenant, now=datetime.now(UTC)
        )
        applied = [
            c for c in caps_for(self.budgets, request.node, scopes, request.tenant) if c.level != "window"
        ]
        left = {
            (room.limit, room.unit): room.cap - room.spent
            for room in rooms(applied, {}, node_spent=node, task_spent=task)
        }
        return BudgetLeft(
            node_tokens=left.get(("max_tokens", "tokens")),
            node_micro_usd=left.get(("max_cost_usd", "micro_usd")),
            task_tokens=left.get(("total_task_budget.max_tokens", "tokens")),
            task_micro_usd=left.get(("total_task_budget.max_cost_usd", "micro_usd")),
        )

    def session(
        self,
        node: str,
        *,
        history: Iterable[ModelCall] = (),
        thread_id: str | None = None,
        tenant: str = "default",
        step: str = "",
        deferred: bool = False,
        wait: Callable[[DeferredPending], object] | None = None,
        subject: str | None = None,
        semantic: bool = True,
        may_approve: bool = True,
    ) -> NodeSession:
        """Open a session for one run of ``node``.

        Args:
            node: The graph node.
            history: The task's calls so far (every node), from the run's state.
            thread_id: The run's thread; with one, completed calls are journaled
                and replayed when the node runs again after a crash.
            tenant: Who pays.
            step: Names this run of the node within its thread (e.g. the re-plan
                loop), so a later loop does not replay an earlier loop's calls.
            deferred: Send the node's calls through the batch API (needs ``thread_id``).
            wait: Called when a deferred call's answer is not in yet; it pauses the
                run (the graph's interrupt) and returns once the run is resumed, and
                the call is asked again. ``None``: :class:`DeferredPending` is raised.
            subject: What the node's calls are about (the run's decision), for the
                semantic cache (:attr:`CallRequest.subject`); ``None``: each prompt's text.
            semantic: ``False``: the node's calls are looked up by their exact key only
                (:attr:`CallRequest.semantic`).
            may_approve: Whether the run's interrupts may approve going over a cap
                (:attr:`CallRequest.may_approve`).
        """
        return NodeSession(
            self,
            node,
            list(history),
            thread_id=thread_id,
            tenant=tenant,
            step=step,
            deferred=deferred and thread_id is not None,
            wait=wait,
            subject=subject,
            semantic=semantic,
            may_approve=may_approve,
        )

    @property
    def default_tier(self) -> Tier:
        """The tier a request gets when it names none."""
        return self.models.file.default_tier


class NodeSession:
    """One node's calls during one step of the graph.

    Attributes:
        calls: The calls made in this session, in order (the node's new spend).
    """

    def __init__(
        self,
        gateway: Gateway,
        node: str,
        history: list[ModelCall],
        *,
        thread_id: str | None,
        tenant: str,
        step: str = "",
        deferred: bool = False,
        wait: Callable[[DeferredPending], object] | None = None,
        subject: str | None = None,
        semantic: bool = True,
        may_approve: bool = True,
    ) -> None:
        self._gateway = gateway
        self._node = node
        self._history = history
        self._thread_id = thread_id
        self._tenant = tenant
        self._step = step
        self._deferred = deferred
        self._wait = wait
        self._subject = subject
        self._semantic = semantic
        self._may_approve = may_approve
        self._round_trips = 0
        self.calls: list[ModelCall] = []

    @property
    def node(self) -> str:
        """The graph node whose calls this session makes."""
        return self._node

    @property
    def thread_id(self) -> str | None:
        """The run's thread, or ``None``."""
        return self._thread_id

    @property
    def tenant(self) -> str:
        """Who pays for the run."""
        return self._tenant

    @property
    def history(self) -> list[ModelCall]:
        """The task's calls so far, every node's: those before this session, then this session's."""
        return [*self._history, *self.calls]

    def ask(
        self,
        messages: Sequence[BaseMessage],
        schema: type[S],
        *,
        local: Callable[[], S],
        tier: Tier | None = None,
        reason: str | None = None,
        tools: Sequence[BaseTool] = (),
    ) -> S:
        """Ask for a structured answer, running tools the model calls on the way.

        Args:
            messages: The prompt.
            schema: The answer's pydantic model.
            local: The deterministic no-model answer, for the ``local`` tier.
            tier: The tier wanted (default: ``models.yaml``'s ``default_tier``).
            reason: Why the caller wants this tier (the plan's routing decision), recorded
                on each call's spend row as a ``plan``/``route`` decision.
            tools: Tools the model may call first.

        Returns:
            The answer, validated as ``schema``.

        Raises:
            BudgetExceededError: A limit refused a call.
            ModelOutputError: The answer failed the schema twice in a row.
            DeferredPending: A deferred call waits for its batch, and the session has no ``wait``.
            DeferredFailedError: A deferred call's batch request failed and ``on_failure`` is ``stop``.
        """
        conversation = list(messages)
        tools_by_name = {tool.name: tool for tool in tools}
        repaired = False
        while True:
            request = self._request(conversation, schema, local, tier, tools)
            if reason is not None and request.tier != self._gateway.default_tier:
                # The plan chose another tier than the default: its reason rides on the call's row.
                request = request.decide("plan", "local" if request.tier == "local" else "route", reason)
            try:
                result = self._gateway.call(request, journal_key=self._journal_key(request))
            except DeferredPending as pending:
                if self._wait is None:
                    raise
                self._wait(pending)  # returns once the run is resumed: ask the same call again
                self._round_trips -= 1
                continue
            self.calls.extend(result.calls)
            if result.output is not None:
                assert isinstance(result.output, schema)
                return result.output
            assert result.message is not None
            if result.tool_calls:
                conversation.append(result.message)
                conversation.extend(_run_tools(result.tool_calls, tools_by_name))
                continue
            # The answer as text: a message with tool calls nobody answers is no valid prompt.
            conversation.append(AIMessage(content=_answer_text(result.message)))
            if repaired:
                raise ModelOutputError(
                    node=self._node, schema=schema.__name__, detail=_one_line(result.parse_error or "")
                )
            repaired = True
            conversation.append(HumanMessage(REPAIR_PROMPT.format(error=result.parse_error)))

    def _journal_key(self, request: CallRequest) -> str | None:
        """``thread:node:step:n:digest`` of the request's content; ``None`` without a thread."""
        self._round_trips += 1
        if self._thread_id is None:
            return None
        content = json.dumps(
            [[m.type, m.text] for m in request.messages]
            + [request.schema.__name__, request.tier, [t.name for t in request.tools]],
        )
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        thread, node, step = (scope_part(part) for part in (self._thread_id, self._node, self._step))
        return f"{thread}:{node}:{step}:{self._round_trips}:{digest}"

    def _request(
        self,
        messages: list[BaseMessage],
        schema: type[BaseModel],
        local: Callable[[], BaseModel],
        tier: Tier | None,
        tools: Sequence[BaseTool],
    ) -> CallRequest:
        spent = [*self._history, *self.calls]
        return CallRequest(
            node=self._node,
            messages=tuple(messages),
            schema=schema,
            tier=tier or self._gateway.default_tier,
            local=local,
            tools=tuple(tools),
            node_spent=Totals.of(c for c in spent if c["node"] == self._node),
            task_spent=Totals.of(spent),
            thread_id=self._thread_id,
            tenant=self._tenant,
            deferred=self._deferred,
            subject=self._subject,
            semantic=self._semantic,
            may_approve=self._may_approve,
        )


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (a failed run's error is one line), at most ``limit`` characters."""
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _answer_text(message: AIMessage) -> str:
    """What a failed answer said: its text, else the arguments of the tool calls it botched."""
    if message.text:
        return message.text
    return "\n".join(str(c.get("args") or "") for c in message.invalid_tool_calls) or "(no answer)"


def _run_tools(calls: Sequence[Mapping[str, object]], tools: Mapping[str, BaseTool]) -> list[ToolMessage]:
    replies = []
    for call in calls:
        name = str(call["name"])
        call_id = str(call.get("id") or name)
        tool = tools.get(name)
        if tool is None:
            replies.append(
                ToolMessage(f"Error: no tool named `{name}`.", tool_call_id=call_id, status="error")
            )
            continue
        args = dict(call.get("args") or {})  # type: ignore[call-overload]
        with tool_span(name, call_id=call_id, arguments=args) as span:
            try:
                content = tool.invoke(args)
            except Exception as exc:  # the model sees the error and may try again
                logger.info("Tool `%s` failed: %s", name, exc)
                span.failed(exc)
                replies.append(ToolMessage(f"Error: {exc}", tool_call_id=call_id, status="error"))
                continue
            span.result(content)
        replies.append(ToolMessage(str(content), tool_call_id=call_id))
    return replies


__all__ = ["DEFAULT_CHAIN", "Gateway", "NodeSession"]
