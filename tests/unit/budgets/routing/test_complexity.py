"""The complexity score and the labelled set it is calibrated on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from budgetgraph.budgets.routing import complexity
from budgetgraph.budgets.routing.calibrate import calibrate, figures
from budgetgraph.budgets.routing.data import load_labelled


@pytest.fixture(scope="module")
def labelled():
    return load_labelled()


def test_the_labelled_set_has_over_200_requests_of_both_kinds_in_every_domain(labelled):
    calibration = [r for r in labelled if r.split == "calibration"]
    assert len(calibration) >= 200
    assert Counter(r.label for r in calibration) == {"simple": 138, "complex": 122}
    assert Counter(r.tier for r in calibration)["premium"] >= 15
    for label in ("simple", "complex"):
        assert {r.domain for r in labelled if r.label == label} == {"tech", "business", "ops", "general"}
    assert len({r.text for r in labelled}) == len(labelled), "no request is there twice"
    assert len({r.id for r in labelled}) == len(labelled)


def test_the_shipped_constants_are_what_calibration_fits_on_the_labelled_set(labelled):
    result = calibrate([r for r in labelled if r.split == "calibration"])

    for name in complexity.FEATURES:
        assert result.model.weights[name] == pytest.approx(complexity.WEIGHTS[name], abs=1e-3), name
    assert result.model.cuts == pytest.approx(complexity.CUTS, abs=1e-3)
    assert (result.standard_at, result.premium_at) == (complexity.STANDARD_AT, complexity.PREMIUM_AT)


def test_the_score_routes_requests_it_never_saw_as_labelled(labelled):
    holdout = [r for r in labelled if r.split == "holdout"]
    scores = [complexity.score(r.text).score for r in holdout]

    found = figures(scores, holdout, complexity.STANDARD_AT, complexity.PREMIUM_AT)

    assert len(holdout) == 60
    assert found.accuracy >= 0.9 and found.complex_recall >= 0.9


def test_a_pasted_paragraph_to_translate_scores_below_a_short_design_question():
    long_but_simple = complexity.score(
        'Please translate into French: "Our lightweight backpack has a padded laptop sleeve, two side '
        'pockets, a water-resistant finish, a lifetime warranty and free returns within thirty days."'
    )
    short_but_complex = complexity.score("Should we build or buy our billing system, given our 4 engineers?")

    assert long_but_simple.score < complexity.STANDARD_AT <= short_but_complex.score
    assert long_but_simple.features["payload_words"] > long_but_simple.features["instruction_words"]


def test_a_trade_off_with_many_factors_reaches_premium_and_a_lookup_stays_at_economy():
    hard = complexity.score(
        "Assess whether we should move our EU customers' data to a second cloud region before the SOC 2 "
        "audit in 3 months, weighing the migration risk, GDPR residency, a 20% cost increase and the "
        "on-call load on our 5 engineers, and recommend a phased plan with the trade-offs of each phase."
    )
    lookup = complexity.score("What does DNS stand for?")

    assert hard.tier(complexity.STANDARD_AT, complexity.PREMIUM_AT) == "premium"
    assert lookup.tier(complexity.STANDARD_AT, complexity.PREMIUM_AT) == "economy"
    assert lookup.drivers(1) == [f"lookup {complexity.WEIGHTS['lookup']:+.1f}"]


def test_a_malformed_labelled_line_is_named_with_its_file_and_line(tmp_path: Path):
    path = tmp_path / "set.jsonl"
    path.write_text(
        '{"id": "a", "text": "What is DNS?", "label": "simple", "tier": "economy"}\n'
        '{"id": "b", "text": "Plan our move", "label": "complex", "tier": "economy"}\n'
    )

    with pytest.raises(ValueError, match=f"{path}:2: a simple request is economy"):
        load_labelled(path)
