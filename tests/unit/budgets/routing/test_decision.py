"""The decision scorer: keyword features and the sentence embedding, and its keyword-only fallback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from budgetgraph.budgets import load_budgets
from budgetgraph.budgets.cache import embedders
from budgetgraph.budgets.cache.embedders import LocalEmbedder
from budgetgraph.budgets.routing import decision
from budgetgraph.budgets.routing.complexity import scored
from budgetgraph.budgets.routing.settings import RouterSettings
from budgetgraph.graph.builder import NODE_NAMES

LOOKUP = "What is our office address?"
RISKY = (
    "Should we move our $180k-a-year analytics platform to self-hosted ClickHouse "
    "run by our 3-person data team?"
)
BREACH = "Our AWS root access key was found in a public GitHub repo this morning. What do we do first?"


@pytest.fixture
def bands():
    """The packaged budgets.yaml's ``router.decision`` bands (what the graph runs)."""
    return load_budgets(None, node_names=NODE_NAMES).section("router", RouterSettings).decision


class CountingEmbedder:
    """The real local embedder, counting its calls."""

    def __init__(self) -> None:
        self.inner = LocalEmbedder()
        self.name = self.inner.name
        self.calls: list[list[str]] = []

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


def test_the_packaged_weights_file_is_a_fitted_model_over_the_scorers_features():
    model = decision.load_model()

    assert model.embedder == "local:all-MiniLM-L6-v2" and model.dims == 384
    assert set(model.weights) <= set(decision.FEATURES) and set(model.keyword_weights) <= set(
        decision.FEATURES
    )
    assert model.cuts[0] < model.cuts[1] and model.keyword_cuts[0] < model.keyword_cuts[1]
    assert model.direction.shape == (384,) and np.linalg.norm(model.direction) > 0


def test_a_lookup_runs_its_specialists_on_economy_and_a_risky_move_runs_reconcile_on_premium(bands):
    lookup = decision.score_decision(LOOKUP)
    risky = decision.score_decision(RISKY)

    assert {bands.of(n).tier(lookup.score) for n in ("cto", "coo")} <= {"economy", "local"}
    assert bands.of("reconcile").tier(risky.score) == "premium"
    assert {bands.of(n).tier(risky.score) for n in ("cto", "coo")} <= {"standard", "premium"}
    assert lookup.score < 0.2 < 0.5 < risky.score


def test_the_embedding_is_a_driver_and_its_part_is_the_fitted_projection():
    model = decision.load_model()
    found = decision.score_decision(BREACH, ["leaked credentials"], "check the audit trail")

    (vector,) = LocalEmbedder().embed([f"{BREACH} leaked credentials; check the audit trail"])
    assert found.features[decision.EMBEDDING] == pytest.approx(model.projection(vector), abs=1e-4)
    assert found.contributions[decision.EMBEDDING] == found.features[decision.EMBEDDING]
    keywords_only = decision.score_decision(
        BREACH, ["leaked credentials"], "check the audit trail", weights=model.weights
    )
    assert keywords_only.contributions[decision.EMBEDDING] == 0.0
    assert keywords_only.score != pytest.approx(found.score)


def test_a_decision_is_embedded_once_however_many_nodes_score_it(monkeypatch: pytest.MonkeyPatch):
    counting = CountingEmbedder()
    monkeypatch.setattr(decision, "EMBEDDING_STATE", decision.DecisionEmbedding(make=lambda: counting))

    scores = {
        decision.score_decision(RISKY, ["4 engineers"]).score for _ in ("planner", "cto", "coo", "reconcile")
    }
    decision.score_decision(RISKY)  # another decision: the task alone

    assert len(scores) == 1
    assert counting.calls == [[f"{RISKY} 4 engineers"], [RISKY]]


def test_without_an_exportable_embedding_model_the_scorer_warns_once_and_scores_on_keywords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # The ONNX export's folder cannot be created (a file stands at its parent), so the
    # default LocalEmbedder's first-use export fails in its child process.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(decision, "EMBEDDING_STATE", decision.DecisionEmbedding())
    monkeypatch.setattr(embedders, "_RECENT", OrderedDict())  # the texts other tests embedded
    model = decision.load_model()

    with caplog.at_level(logging.WARNING, logger=decision.__name__):
        first = decision.score_decision(RISKY, ["4 engineers"])
        second = decision.score_decision(LOOKUP)

    warnings = [r for r in caplog.records if r.name == decision.__name__]
    assert len(warnings) == 1 and "keyword features alone" in warnings[0].getMessage()
    assert "ExportError" in (decision.EMBEDDING_STATE.unavailable or "")
    for found, task, constraints in ((first, RISKY, ["4 engineers"]), (second, LOOKUP, [])):
        assert decision.EMBEDDING not in found.features
        expected = scored(decision.features(task, constraints), model.keyword_weights, model.keyword_cuts)
        assert found.score == pytest.approx(expected.score)
    assert first.score > second.score


def test_a_weights_file_of_another_shape_is_refused_with_its_name(tmp_path: Path):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"embedder": "x", "weights": {"colour": 1.0}}))

    with pytest.raises(ValueError, match="weights.json"):
        decision.load_model(path)


def test_the_subject_is_the_whole_decision_on_one_line_and_the_task_when_there_is_nothing_else():
    assert decision.decision_subject(" Cut the  pen test? ") == "Cut the pen test?"
    assert decision.decision_subject("Cut the pen test?\n", ["", "contracts require one"], "ask legal") == (
        "Cut the pen test? contracts require one; ask legal"
    )


def test_a_weights_file_from_before_the_single_decision_embedding_is_refused(tmp_path: Path):
    packaged = json.loads(
        (Path(decision.__file__).parent / decision.WEIGHTS_FILE).read_text(encoding="utf-8")
    )
    direction = packaged.pop("direction")
    packaged["task_direction"] = packaged["decision_direction"] = direction
    path = tmp_path / "old_weights.json"
    path.write_text(json.dumps(packaged))

    with pytest.raises(ValueError, match="old_weights.json.*direction"):
        decision.load_model(path)


@pytest.mark.parametrize(
    ("task", "stakes"),
    [
        ("Can we skip the boiler inspection at the apartment blocks this winter?", {"safeguard_gap"}),
        ("Should the plant keep running while the gas leak alarm is being repaired?", {"safety"}),
        ("Add voice chat between strangers to our game for kids?", {"minors"}),
        ("Send our patient records to an analytics startup with no BAA?", {"personal_data", "safeguard_gap"}),
        ("A regulator wants every loan file by Friday; do we hand them all over?", {"legal_exposure"}),
        ("Let 40 warehouse staff go before the holidays?", {"headcount"}),
        ("Roll the new expense policy out company-wide next month?", {"scope"}),
        ("Can the lab skip the weekly Legionella sampling at the cooling towers?", {"safeguard_gap"}),
        ("Stop the weekend fire patrol at the depot to cut overtime?", {"safeguard_gap"}),
        ("Burn the old disciplinary case notes to clear the basement?", {"irreversible"}),
        ("Let 12- to 15-year-olds join the climbing club without a parent?", {"minors"}),
        ("Our signing key turned up in a public pastebin. Rotate it tonight?", {"emergency"}),
        ("Commit the council to leasing electric vans for the next ten years?", {"commitment"}),
        ("Record client phone calls with a free transcription app?", {"personal_data"}),
        ("Open the new ward on Monday? The fire certificate hasn't been issued yet.", {"safeguard_gap"}),
        ("Keep the pool open this weekend with just one lifeguard on duty?", {"safety"}),
        ("The water sample from block C tested positive; keep the taps in use?", {"safety"}),
        ("Send the tenants' names and phone numbers to the new broadband firm?", {"personal_data"}),
        ("Let the new hire drive the forklift until his licence is renewed?", {"safeguard_gap"}),
        ("Our crane's lifting certificate ran out last month; keep using it?", {"safeguard_gap"}),
        ("Open-source the billing library although we can't find its licence?", {"legal_exposure"}),
        ("Run the hiking tours without a guide to save money?", {"safeguard_gap"}),
        ("Can we stop printing allergen warnings on the takeaway boxes?", {"safeguard_gap"}),
        ("Buy the insulin from a firm that is not on our licensed wholesaler list?", {"safeguard_gap"}),
        ("Our insurance doesn't cover night work; start the night shift anyway?", {"safeguard_gap"}),
        ("Sign a 10-year renewal of the warehouse lease?", {"commitment"}),
        ("Let the tenants move in without the landlord's gas safety certificate?", {"safeguard_gap"}),
        ("The deli's chiller hit 9°C over the weekend; sell the ham anyway?", {"safety"}),
        ("Let the new swim coach run sessions before her background check clears?", {"safeguard_gap"}),
        ("Approve the treasury transfer without the second signatory this once?", {"safeguard_gap"}),
        ("Ship the cereal bars without ingredient labels while the printer is fixed?", {"safeguard_gap"}),
        ("The clinic's blood-fridge thermometer is uncalibrated; keep using it?", {"safeguard_gap"}),
        ("Can reception write the caller's card details on the booking sheet?", {"regulated"}),
        ("Put number-plate recognition cameras on the retail park entrances?", {"personal_data"}),
        ("Grant the quarry extension that runs into the nature reserve?", {"regulated"}),
        ("Hydraulic oil is seeping into the canal from the lock gear; keep the lock working?", {"emergency"}),
        ("A tribe filed a repatriation claim for the carved poles in our hall. Agree?", {"legal_exposure"}),
    ],
)
def test_stakes_features_read_what_is_at_stake_in_a_task_without_constraints(task: str, stakes: set[str]):
    measured = decision.features(task)

    assert {name for name in stakes if measured[name] > 0} == stakes


def test_a_safety_word_in_a_routine_call_is_not_a_stake():
    measured = decision.features("Move the Friday safety huddle from 7:00 to 7:15 so the van arrives first?")

    assert measured["safety"] == measured["safeguard_gap"] == 0.0


@pytest.mark.parametrize(
    "task",
    [
        "The evacuation drill clashes with the audit visit. Hold the drill on Thursday instead?",
        "Can reception close half an hour early on the 24th?",
        "Swap the front-desk chairs for ones with armrests?",
        "The monthly report is due Friday and the team is away; send it Thursday over coffee?",
        "The office rent falls due on a Sunday this month; pay it on the Friday before?",
        "Shift the Tuesday fraud-team sync to 11:00 so it stops overlapping the design review?",
        "Can the fire-warden briefing move from Monday to Wednesday? Same room, same people.",
        "Save the signed supplier contract as PDF or Word on the shared drive?",
        "Bump the copyright line in the intranet footer to 2027?",
    ],
)
def test_rehearsals_and_small_schedule_shifts_are_routine_and_not_a_stake(task: str):
    measured = decision.features(task)

    assert measured["routine"] > 0
    assert measured["safety"] == measured["emergency"] == measured["safeguard_gap"] == 0.0


def test_an_amount_of_money_is_not_a_count_of_people_and_a_settled_payment_is_derisked():
    measured = decision.features("The €2.4m members' dividend is already on autopay for the 1st. All set?")

    assert measured["scale"] == 0.0
    assert measured["derisked"] > 0


@pytest.mark.parametrize(
    "task",
    [
        "The $2.1M insurance payout landed in the reserve account today. Move it now or on Friday?",
        "The supplier countersigned the £5M framework. Which folder does it go in?",
    ],
)
def test_money_already_received_or_a_contract_already_countersigned_is_derisked(task: str):
    assert decision.features(task)["derisked"] > 0


def test_a_copyright_year_is_not_a_copyright_dispute_and_a_surveillance_audit_is_not_surveillance():
    footer = decision.features("Update the copyright to 2027 in the website footer?")
    audit = decision.features("The certifier moved our ISO surveillance audit to May. Move ours too?")

    assert footer["legal_exposure"] == 0.0 and footer["routine"] > 0
    assert audit["personal_data"] == 0.0


def test_scoring_imports_neither_torch_nor_scikit_learn():
    code = (
        "import sys\n"
        "from budgetgraph.budgets.routing.decision import score_decision, EMBEDDING\n"
        f"found = score_decision({RISKY!r}, ['4 engineers'])\n"
        "assert EMBEDDING in found.features, found.features\n"
        "heavy = ('torch', 'sklearn', 'scipy', 'sentence_transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
