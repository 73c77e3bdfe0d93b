"""Confirming a near semantic hit with a model before it is served, when it pays (issue #19).

The guard (:mod:`budgetgraph.budgets.cache.guard`) refuses candidates that
differ in what changes a decision; what it lets through near the threshold
is where a wrong hit is likeliest. ``cache: confirm: band: [low, high]`` in
``budgets.yaml`` (per node under ``cache: nodes: NODE: confirm:``, see
:class:`~budgetgraph.budgets.cache.config.ConfirmSettings`) puts a model on
those candidates: a semantic candidate that passed the guard at a cosine
similarity ``low <= s < high`` is served only when the cheapest model tier
answers yes to one structured question (:class:`CacheConfirmation`): are the
two requests the same decision, so that the stored answer answers the new
one? A "no" refuses the candidate as a guard refusal does, with category
``confirm``; at ``high`` and above the candidate is served without asking.

The question is a model call of its own (:meth:`Confirmer.confirm`): a
:class:`~budgetgraph.budgets.request.CallRequest` of the same node, thread
and tenant on the cheapest tier by price that has an endpoint, sent down the
rest of the plugin chain, so the ``limits`` plugin reserves and settles it on
the ledger and the chat model records it. Its spend-table rows carry the
decision ``cache``/``confirm`` (:func:`is_confirmation`) and come back with
the rows of the call they decided, so the run's spend, ``run --json`` and
``report`` show its tokens and cost, and the cache's saving is reported net
of it (:func:`cache_savings`).

Verdicts are remembered in-process (:class:`Verdicts`, an LRU keyed by the
stored entry and a hash of both texts), so one pair is asked about once per
process. When no model tier has an endpoint (everything ``local``, offline)
nothing is asked and the guard alone decides: the candidate is served. A
confirmation that cannot be had (the server fails, a budget refuses it, the
tier was degraded to ``local``, the answer fails its schema) leaves the
guard's verdict standing too, and says so on the served row.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from budgetgraph.budgets.cache.base import Counts, Entry
from budgetgraph.budgets.cache.config import ConfirmSettings
from budgetgraph.budgets.config import MODEL_TIERS, ModelsConfig, Tier
from budgetgraph.budgets.errors import BudgetExceededError
from budgetgraph.budgets.ledger.base import CACHE_CONFIRMATION, is_cache_confirmation
from budgetgraph.budgets.plugins.base import CallNext
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import CallRequest, ModelCall
from budgetgraph.budgets.routing.policy import no_endpoint
from budgetgraph.lazy import lazy_module

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

logger = logging.getLogger(__name__)

PLUGIN, ACTION = CACHE_CONFIRMATION
"""The decision that marks a confirmation's rows: ``cache``/``confirm`` on the spend row."""
CATEGORY = "confirm"
"""The refusal category of a "no" (counted under ``refused_other`` in ``cache stats``)."""

MAX_OUTPUT_TOKENS = 96
"""Completion cap of the question (tokens): a boolean and a one-line reason."""

VERDICTS_KEPT = 4096
"""Verdicts :class:`Verdicts` remembers before the least recently used go."""

SYSTEM_PROMPT = (
    "You check answers kept for reuse. A stored answer was written for one business "
    "decision; a new request asks about another one, worded alike. Say whether they are "
    "the same decision, so that the stored answer answers the new request as well: the "
    "same action and direction, options, amounts, dates, parties, limits and conditions. "
    "Wording, word order and politeness do not matter; any difference that could change "
    "the answer does. When unsure, answer false."
)
"""The question's system message."""

QUESTION = (
    "Stored request:\n<<<\n{stored}\n>>>\n\n"
    "New request:\n<<<\n{new}\n>>>\n\n"
    "Are these two requests the same decision, so that the stored answer answers the new one?"
)
"""The question, with the stored request's text and the new one's."""

NOT_ASKED = "no model could be asked"
"""The local answer's reason (never taken as a verdict)."""


class CacheConfirmation(BaseModel):
    """The model's answer: may the stored answer serve the new request?"""

    same_decision: bool = Field(
        description="True only when both requests are the same decision, so the stored answer answers both."
    )
    reason: str = Field(description="One line: the difference found, or why they are the same.")


@dataclass(frozen=True)
class Confirmation:
    """What came of confirming one candidate.

    Attributes:
        same: The verdict: ``True`` serve, ``False`` refuse; ``None`` when none was
            had (no endpoint, a failure, the ``local`` tier): the guard's verdict stands.
        reason: The model's one-line reason, or why there is no verdict.
        calls: The question's spend-table rows (none when remembered or not asked).
        kept: The rows' ledger records were kept when the ``limits`` plugin settled them.
        model: The model that answered, or ``""``.
        remembered: The verdict was remembered from an earlier question.
    """

    same: bool | None
    reason: str
    calls: tuple[ModelCall, ...] = ()
    kept: bool = False
    model: str = ""
    remembered: bool = False

    def served_note(self) -> str:
        """What a served row's decision adds: how the candidate was confirmed, or why it was not."""
        if self.same is None:
            return f"not confirmed ({self.reason}); the guard's verdict stands"
        by = "remembered verdict" if self.remembered else self.model
        return f"confirmed by {by}: {self.reason}"

    def refusal(self, similarity: float) -> str:
        """The reason of a "no", as a refusal's decision reads: ``confirm: ...``."""
        by = "remembered verdict" if self.remembered else self.model
        return f"{CATEGORY}: {self.reason} (similarity {similarity:.3f}; {by})"


class Verdicts:
    """An in-process LRU of verdicts, keyed by the stored entry and a hash of both texts.

    The stored text is part of the key as well as the entry's id, so an id a store
    reuses after a clear never answers for another entry.

    Args:
        size: Verdicts kept; the least recently used go past it.
    """

    def __init__(self, size: int = VERDICTS_KEPT) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[int, str], tuple[bool, str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(entry: Entry, text: str) -> tuple[int, str]:
        """The key of the pair (``entry``, new request ``text``)."""
        digest = hashlib.sha256(f"{entry.text}\x00{text}".encode()).hexdigest()[:32]
        return entry.id, digest

    def get(self, entry: Entry, text: str) -> tuple[bool, str] | None:
        """The remembered ``(same, reason)`` of the pair, or ``None``."""
        key = self.key(entry, text)
        with self._lock:
            verdict = self._kept.get(key)
            if verdict is not None:
                self._kept.move_to_end(key)
            return verdict

    def put(self, entry: Entry, text: str, same: bool, reason: str) -> None:
        """Remember the pair's verdict."""
        with self._lock:
            self._kept[self.key(entry, text)] = (same, reason)
            self._kept.move_to_end(self.key(entry, text))
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)


def cheapest_tier(models: ModelsConfig, prices: PriceBook, *, input_tokens: int) -> Tier | None:
    """The model tier whose model asks the question for the least, or ``None`` when no tier has an endpoint.

    Each tier with an endpoint (:func:`~budgetgraph.budgets.routing.policy.no_endpoint`)
    is priced for ``input_tokens`` in and :data:`MAX_OUTPUT_TOKENS` out at its model's
    price (:class:`~budgetgraph.budgets.pricing.PriceBook`); an unpriced model comes after
    every priced one, and ties go to the lower tier. ``local`` never asks.

    Args:
        models: The resolved ``models.yaml``.
        prices: The price book.
        input_tokens: The question's input tokens (tokens).
    """
    ranked: list[tuple[bool, Decimal, int, Tier]] = []
    for rank, tier in enumerate(MODEL_TIERS):
        endpoint = models.endpoints.get(tier)
        if endpoint is None or no_endpoint(models, tier) is not None:
            continue
        settings = endpoint.settings
        price = prices.price(
            settings.model,
            input_tokens=input_tokens,
            output_tokens=MAX_OUTPUT_TOKENS,
            provider=settings.provider,
        )
        ranked.append((not price.known, price.usd, rank, tier))
    return min(ranked)[3] if ranked else None


class Confirmer:
    """Asks the cheapest model tier whether a candidate answers a request, and remembers the verdicts.

    Args:
        models: The resolved ``models.yaml``.
        prices: To find the cheapest tier.
        verdicts: Where verdicts are remembered (default: a new :class:`Verdicts`).
    """

    def __init__(self, models: ModelsConfig, prices: PriceBook, *, verdicts: Verdicts | None = None) -> None:
        self._models = models
        self._prices = prices
        self.verdicts = verdicts if verdicts is not None else Verdicts()

    def question(
        self, request: CallRequest, *, entry: Entry, text: str, tier: Tier, reason: str
    ) -> CallRequest:
        """The question's request: ``request``'s node, thread and tenant, its own schema and tier.

        It is not journaled under ``request``'s key (its ``call_id`` is ``KEY:confirm``) and
        carries only its own decision, ``cache``/``confirm`` with ``reason``.
        """
        return CallRequest(
            node=request.node,
            messages=(
                SystemMessage(SYSTEM_PROMPT),
                HumanMessage(QUESTION.format(stored=entry.text, new=text)),
            ),
            schema=CacheConfirmation,
            tier=tier,
            local=lambda: CacheConfirmation(same_decision=True, reason=NOT_ASKED),
            max_output_tokens=MAX_OUTPUT_TOKENS,
            node_spent=request.node_spent,
            task_spent=request.task_spent,
            thread_id=request.thread_id,
            tenant=request.tenant,
            call_id=f"{request.call_id}:{ACTION}" if request.call_id is not None else None,
            started=request.started,
            held=request.held,
        ).decide(PLUGIN, ACTION, reason)

    def confirm(
        self,
        request: CallRequest,
        call_next: CallNext,
        *,
        entry: Entry,
        text: str,
        similarity: float,
        band: ConfirmSettings,
    ) -> Confirmation:
        """Ask whether ``entry`` answers ``request`` (whose semantic text is ``text``), unless remembered.

        Args:
            request: The call the candidate would answer.
            call_next: The rest of the plugin chain (the ``limits`` plugin, the chat model).
            entry: The candidate the guard passed.
            text: The new request's semantic text (what the cache compares).
            similarity: The candidate's cosine similarity.
            band: The node's band (for the decision's reason).

        Returns:
            The verdict and the question's rows. A failure of the question (an
            ``openai.APIError``, :class:`~budgetgraph.budgets.errors.BudgetExceededError`)
            is logged and gives no verdict; an interrupt for approval is not caught.
        """
        remembered = self.verdicts.get(entry, text)
        if remembered is not None:
            return Confirmation(same=remembered[0], reason=remembered[1], remembered=True)
        low, high = band.band
        reason = (
            f"similarity {similarity:.3f} in the band [{low:g}, {high:g}): "
            f"asked whether entry {entry.id} answers this decision"
        )
        probe = self.question(request, entry=entry, text=text, tier="economy", reason=reason)
        tier = cheapest_tier(self._models, self._prices, input_tokens=probe.estimate_input_tokens())
        if tier is None:
            return Confirmation(same=None, reason="no model tier has an endpoint")
        asked = probe.evolve(tier=tier)
        try:
            result = call_next(asked)
        except (openai.APIError, BudgetExceededError) as exc:
            logger.warning("Node `%s`: could not confirm cache entry %s: %s", request.node, entry.id, exc)
            return Confirmation(same=None, reason=f"the question failed: {type(exc).__name__}")
        calls = tuple(result.calls)
        model = calls[-1]["model"] if calls else ""
        output = result.output
        local = bool(calls) and calls[-1]["tier"] == "local"
        if not isinstance(output, CacheConfirmation) or not calls or local:
            why = "answered on the local tier" if local else "no usable answer"
            return Confirmation(same=None, reason=why, calls=calls, kept=result.kept, model=model)
        same = output.same_decision
        line = " ".join(output.reason.split())[:200] or ("same decision" if same else "another decision")
        self.verdicts.put(entry, text, same, line)
        return Confirmation(same=same, reason=line, calls=calls, kept=result.kept, model=model)


def refused_counts(entry: Entry) -> Counts:
    """The change to a namespace's counters when a confirmation refuses a semantic hit.

    The lookup counted a semantic hit and its saving when it returned; a "no" makes
    it a miss refused with category :data:`CATEGORY` (``refused_other``) and takes
    the saving back.
    """
    counts = Counts(semantic_hits=-1, misses=1, refusals=1, saved_micro_usd=-entry.cost_micro_usd)
    field_name = Counts.refusal_field(CATEGORY)
    setattr(counts, field_name, getattr(counts, field_name) + 1)
    return counts


is_confirmation = is_cache_confirmation
"""Whether a spend-table row or ledger record is a confirmation's (decision ``cache``/``confirm``)."""


@dataclass(frozen=True)
class CacheSavings:
    """What the cache saved in some rows, and what confirming its hits cost.

    Attributes:
        gross_micro_usd: What the hits' answers cost when first made (micro-USD).
        confirm_micro_usd: What the confirmations cost (micro-USD).
        confirmations: Confirmation rows.
    """

    gross_micro_usd: int = 0
    confirm_micro_usd: int = 0
    confirmations: int = 0

    @property
    def net_micro_usd(self) -> int:
        """The saving net of the confirmations (micro-USD); negative when they cost more."""
        return self.gross_micro_usd - self.confirm_micro_usd


def cache_savings(rows: Iterable[Mapping[str, Any]]) -> CacheSavings:
    """Sum the cache's gross saving and its confirmations' cost over spend-table rows or ledger records."""
    gross = confirm = count = 0
    for row in rows:
        gross += int(row.get("saved_micro_usd", 0) or 0)
        if is_confirmation(row):
            confirm += int(row.get("cost_micro_usd", 0) or 0)
            count += 1
    return CacheSavings(gross_micro_usd=gross, confirm_micro_usd=confirm, confirmations=count)


__all__ = [
    "ACTION",
    "CATEGORY",
    "MAX_OUTPUT_TOKENS",
    "PLUGIN",
    "CacheConfirmation",
    "CacheSavings",
    "Confirmation",
    "Confirmer",
    "Verdicts",
    "cache_savings",
    "cheapest_tier",
    "is_confirmation",
    "refused_counts",
]
