"""The cost-aware planner: options, estimates, the beam search and the budgets it keeps to."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from budgetgraph.agents.beam import StepOption, beam_search
from budgetgraph.agents.planner import estimate, plan_steps
from budgetgraph.agents.rules import brief
from budgetgraph.budgets import BudgetExceededError, Gateway, load_budgets, load_models
from budgetgraph.budgets.caps import Room
from budgetgraph.budgets.ledger import Charge, LedgerRecord, open_ledger
from budgetgraph.budgets.routing import score_decision
from budgetgraph.budgets.routing.settings import TierPriors
from budgetgraph.graph.builder import NODE_NAMES
from tests.fakes.openai_server import FakeOpenAIServer

TASK = "Should we move our billing service to microservices? We have 6 engineers and a PCI audit in 4 months."
WORDY = "Should we move our billing service to microservices before the audit?"  # no figures: no tool step


def models_yaml(tmp_path: Path, base_url: str, default_tier: str = "standard") -> Path:
    tiers = {
        tier: {"model": model, "base_url": base_url}
        for tier, model in (("economy", "gpt-4.1-nano"), ("standard", "gpt-4.1-mini"), ("premium", "gpt-4.1"))
    }
    path = tmp_path / f"models-{default_tier}.yaml"
    path.write_text(yaml.safe_dump({"default_tier": default_tier, "tiers": tiers}))
    return path


def gateway(tmp_path: Path, models: Path | None, budgets_yaml: str = "budgets: {}\n", ledger=None) -> Gateway:
    path = tmp_path / "budgets.yaml"
    path.write_text(budgets_yaml)
    return Gateway(load_models(models), load_budgets(path, node_names=NODE_NAMES), ledger=ledger)


def record(node: str, tier: str, model: str, input_tokens: int, output_tokens: int) -> LedgerRecord:
    return LedgerRecord(
        ts="2026-11-20T00:00:00+00:00", tenant="default", thread_id="old", node=node, tier=tier,
        model=model, input_tokens=input_tokens, output_tokens=output_tokens, cost_micro_usd=1,
        saved_micro_usd=0, cache_hit=False, alerts=[],
    )  # fmt: skip


def specialists(plan) -> list:
    """The plan's cto and coo steps (a plan also holds the planner's own and reconcile's)."""
    return [s for s in plan.steps if s.node in ("cto", "coo")]


def steps_of(plan) -> list[tuple[str, str, str]]:
    return [(s.node, s.path, s.tier) for s in specialists(plan)]


def test_a_plan_is_estimated_from_the_priors_without_calling_any_model(
    tmp_path, models_file, openai_server: FakeOpenAIServer
):
    made = estimate(gateway(tmp_path, models_file), task=TASK, constraints=[])

    assert openai_server.requests == []
    assert steps_of(made) == [("cto", "tool", "standard"), ("coo", "tool", "standard")]
    cto = specialists(made)[0]
    # tool path: the 900-token prompt twice plus 60 tokens of tool round trip, and 600 output tokens,
    # at gpt-4.1-mini's $0.40 / $1.60 per million tokens
    assert (cto.estimated_tokens, cto.estimated_tool_calls, cto.estimate_source) == (2460, 1, "prior")
    assert cto.estimated_cost_usd == pytest.approx((1860 * 0.40 + 600 * 1.60) / 1e6)
    # the standard prior at the decision's score, plus the tool's gain
    score = score_decision(TASK, []).score
    assert cto.expected_quality == pytest.approx(TierPriors().standard.quality(score) + 0.05, abs=1e-4)
    assert made.estimated_total_usd == pytest.approx(sum(step.estimated_cost_usd for step in made.steps))
    assert [step.node for step in made.steps] == ["planner", "cto", "coo", "reconcile"]
    assert made.feasible and made.reason is None


def test_estimates_blend_the_ledgers_history_of_the_same_node_tier_and_model(tmp_path, models_file):
    ledger = open_ledger("memory:")
    for _ in range(8):
        ledger.record((), Charge(), record("cto", "standard", "gpt-4.1-mini", 400, 200))
    ledger.record((), Charge(), record("cto", "standard", "some-other-model", 90_000, 90_000))
    ledger.record((), Charge(), record("cto", "premium", "gpt-4.1", 90_000, 90_000))

    made = estimate(gateway(tmp_path, models_file, ledger=ledger), task=WORDY, constraints=[])

    cto, coo = specialists(made)
    # (8 x 400 + 2 x 900) / 10 input and (8 x 200 + 2 x 600) / 10 output tokens: the prior counts as 2 calls
    assert (cto.path, cto.estimated_tokens) == ("llm", 500 + 280)
    assert cto.estimate_source == "history of 8 call(s) blended with the prior"
    assert (coo.estimated_tokens, coo.estimate_source) == (1500, "prior")


def test_the_beam_shares_a_task_budget_better_than_a_greedy_choice(tmp_path, openai_server):
    models = models_yaml(tmp_path, openai_server.base_url, default_tier="premium")
    # premium + premium = $0.0148, premium + standard = $0.00872, premium + economy = $0.00771,
    # standard + standard = $0.00264: the cap fits the last two, and two standard steps are worth more
    budgets = "task: {max_cost_usd: 0.0078}\n"
    only_specialists = "nodes: {planner: {max_tier: local}, reconcile: {max_tier: local}}"  # they cost 0

    def searched(width: int):
        text = budgets + f"router: {{plan: {{beam_width: {width}}}, {only_specialists}}}\n"
        return estimate(gateway(tmp_path, models, text), task=WORDY, constraints=[])

    greedy, beam = searched(1), searched(4)

    assert steps_of(greedy) == [("cto", "llm", "premium"), ("coo", "llm", "economy")]
    assert steps_of(beam) == [("cto", "llm", "standard"), ("coo", "llm", "standard")]
    assert "premium (llm) would pass `total_task_budget.max_cost_usd`" in specialists(beam)[0].reason


@pytest.mark.parametrize("unit", ["max_tokens", "max_cost_usd"])
def test_a_plan_never_exceeds_a_budget_that_applies(tmp_path, openai_server, unit):
    models = models_yaml(tmp_path, openai_server.base_url, default_tier="premium")
    amounts = {"max_tokens": (800, 1600, 3000, 6000), "max_cost_usd": (0.0004, 0.0015, 0.005, 0.02)}[unit]
    ledger = open_ledger("memory:")
    spent_today = Charge(tokens=500, micro_usd=300)
    ledger.record(["tenant:default:day:2026-11-20"], spent_today, record("x", "standard", "m", 0, 0))
    checked = 0
    for node_cap, task_cap, daily_cap in itertools.product(amounts, amounts, amounts):
        text = (
            f"nodes: {{cto: {{{unit}: {node_cap}, on_exceed: local}}}}\n"
            f"task: {{{unit}: {task_cap}, on_exceed: degrade}}\n"
            f"windows: {{daily: {{{unit}: {daily_cap}, on_exceed: local}}}}\n"
            "router: {budget: {degrade_below: 0, local_below: 0}}\n"
        )
        for task in (TASK, WORDY):
            made = estimate(
                gateway(tmp_path, models, text, ledger=ledger),
                task=task,
                constraints=[],
                now=datetime(2026, 11, 20, 12, tzinfo=UTC),
            )
            for cap in made.caps:
                bound = cap.scope.rsplit(":node:", 1)[1] if ":node:" in cap.scope else None
                used = sum(
                    s.estimated_tokens if cap.unit == "tokens" else s.estimated_cost_usd
                    for s in made.steps
                    if s.path != "local" and bound in (None, s.node)
                )
                assert used <= cap.left + 1e-9, (text, task, cap, steps_of(made))
                checked += 1
            assert made.feasible == all(s.path != "local" for s in made.steps)
    assert checked > 100


def test_a_cap_that_no_model_step_fits_plans_the_local_path_and_says_why(tmp_path, models_file):
    made = estimate(
        gateway(tmp_path, models_file, "nodes:\n  coo: {max_tokens: 300, on_exceed: local}\n"),
        task=WORDY,
        constraints=[],
    )

    assert steps_of(made) == [("cto", "llm", "standard"), ("coo", "local", "local")]
    assert not made.feasible
    assert made.reason == (
        "`coo`: no model step fits: `max_tokens` on run:(new run):node:coo has 300 tokens left, "
        "economy needs about 1450 tokens; local path"
    )


def test_a_stop_cap_that_no_model_step_fits_stops_before_any_specialist_spends(tmp_path, models_file):
    gw = gateway(tmp_path, models_file, "nodes:\n  cto: {max_cost_usd: 0.0001}\n")

    made, stop = plan_steps(gw, brief(WORDY, []), task=WORDY, constraints=[], thread_id="t")

    assert isinstance(stop, BudgetExceededError)
    assert (stop.node, stop.limit, stop.cap) == ("cto", "max_cost_usd", Decimal("0.0001"))
    assert stop.spent + stop.requested > stop.cap
    assert not made.feasible and "on_exceed `stop`: `run` stops in the planner" in made.reason


def test_an_approve_cap_keeps_the_step_so_that_its_call_asks_for_approval(tmp_path, models_file):
    made = estimate(
        gateway(tmp_path, models_file, "nodes:\n  cto: {max_cost_usd: 0.0001, on_exceed: approve}\n"),
        task=WORDY,
        constraints=[],
    )

    cto = specialists(made)[0]
    assert (cto.path, cto.tier, cto.within_budget) == ("llm", "standard", False)
    assert "the call will ask for approval" in cto.reason and not made.feasible


def test_on_infeasible_local_plans_the_local_path_whatever_the_caps_action(tmp_path, models_file):
    text = "nodes:\n  cto: {max_cost_usd: 0.0001}\nrouter: {plan: {on_infeasible: local}}\n"

    made, stop = plan_steps(
        gateway(tmp_path, models_file, text), brief(WORDY, []), task=WORDY, constraints=[]
    )

    assert stop is None and steps_of(made)[0] == ("cto", "local", "local") and not made.feasible


def test_a_nearly_spent_task_budget_plans_the_local_path(tmp_path, models_file):
    ledger = open_ledger("memory:")
    ledger.record(["run:t"], Charge(micro_usd=8_500), record("planner", "standard", "gpt-4.1-mini", 0, 0))

    made = estimate(
        gateway(tmp_path, models_file, "task: {max_cost_usd: 0.01}\n", ledger=ledger),
        task=TASK,
        constraints=[],
        thread_id="t",
    )

    assert steps_of(made) == [("cto", "local", "local"), ("coo", "local", "local")]
    assert specialists(made)[0].reason == (
        "`total_task_budget.max_cost_usd` on run:t: 15% left (< 20%): standard -> local"
    )
    assert made.estimated_total_usd == 0 and made.feasible


def test_without_an_endpoint_every_step_is_local_and_says_why(tmp_path):
    made = estimate(gateway(tmp_path, None), task=TASK, constraints=[])

    assert steps_of(made) == [("cto", "local", "local"), ("coo", "local", "local")]
    assert specialists(made)[0].reason.startswith("tier `standard` has no endpoint")


def test_beam_search_counts_a_node_cap_only_against_that_nodes_steps():
    def option(node: str, tier: str, tokens: int, quality: float) -> StepOption:
        return StepOption(node, "llm", tier, tokens, 0, 0, 0, quality)

    local = [StepOption(n, "local", "local", 0, 0, 0, 0, 0.3) for n in ("a", "b")]
    cap = Room("max_tokens", "run:t:node:a", "tokens", 100, 0, "stop", "a")

    best = beam_search(
        [[option("a", "premium", 150, 0.9), local[0]], [option("b", "premium", 150, 0.9), local[1]]], [cap]
    )

    assert [(s.node, s.tier) for s in best] == [("a", "local"), ("b", "premium")]
    with pytest.raises(ValueError, match="`width` must be 1 or more"):
        beam_search([], [], width=0)
