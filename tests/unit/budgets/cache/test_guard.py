"""The guard, on text alone: what it refuses above the threshold, and why."""

from __future__ import annotations

import pytest

from budgetgraph.budgets.cache import Guard
from budgetgraph.budgets.cache.text import features, normalize, number_value

GUARD = Guard()


def test_text_is_normalised_without_losing_case():
    assert normalize("  How do I\u00a0reset\n my  Password? ") == "How do I reset my Password?"


@pytest.mark.parametrize(
    ("token", "value"),
    [
        ("4", "4.0"),
        ("1,000", "1000.0"),
        ("1k", "1000.0"),
        ("thousand", "1000.0"),
        ("10%", "10.0%"),
        ("$5", "5.0"),
        ("five", "5.0"),
        ("2.10.0", "2.10.0"),
        ("first", "1st"),
        ("word", None),
    ],
)
def test_numbers_are_compared_by_value(token: str, value: str | None):
    assert number_value(token) == value


def test_features_find_numbers_negation_entities_and_key_terms():
    f = features("Why doesn't Alice in Paris earn $4,000 a month?")

    assert f.numbers == ("4000.0",) and f.negations == 1
    assert f.entities == {"alice", "paris"}
    assert {"earn", "month"} <= f.content and "why" not in f.content


def test_an_opening_no_is_not_a_negation():
    assert features("No, it is optional.").negations == 0
    assert features("It is not optional.").negations == 1


def test_candidates_below_the_threshold_are_never_served():
    verdict = GUARD.judge("reset my password", "reset my password", 0.70, 0.78)
    assert not verdict.accepted and verdict.reason == "similarity 0.700 < 0.78"


def test_different_numbers_are_refused_whatever_the_similarity():
    verdict = GUARD.judge(
        "Is it safe to take castor oil at 35 weeks pregnant?",
        "Is it safe to take castor oil at 37 weeks pregnant?",
        0.99,
        0.78,
    )
    assert not verdict.accepted
    assert verdict.reason.startswith("numbers differ: 35 vs 37")


def test_a_reversal_by_negation_is_refused():
    verdict = GUARD.judge(
        "Why do people like living in Berlin?", "Why don't people like living in Berlin?", 0.97, 0.78
    )
    assert not verdict.accepted and verdict.reason.startswith("negation differs")


def test_a_reversal_by_opposite_words_is_refused():
    verdict = GUARD.judge("How can I gain weight quickly?", "How can I lose weight quickly?", 0.95, 0.78)
    assert not verdict.accepted and verdict.reason.startswith("opposite terms: `gain` vs `lose`")


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        (
            "Should we move our servers from AWS to GCP?",
            "Should we move our servers from GCP to AWS?",
            "roles swapped: `aws` and `gcp`",
        ),
        (
            "Is Python faster than Java for our backend?",
            "Is Java faster than Python for our backend?",
            "roles swapped: `python` and `java`",
        ),
        (
            "Should we expand to Germany before France?",
            "Should we expand to France before Germany?",
            "roles swapped: `germany` and `france`",
        ),
        (
            "Should we migrate billing to microservices?",
            "Should we migrate billing from microservices?",
            "opposite terms: `to` vs `from`",
        ),
        (
            "How much does it cost to hire a senior engineer in London?",
            "How much does it cost to hire a junior engineer in London?",
            "opposite terms: `senior` vs `junior`",
        ),
        (
            "What is the annual cost of our AWS bill?",
            "What is the monthly cost of our AWS bill?",
            "opposite terms: `annual` vs `monthly`",
        ),
        (
            "What are the risks of raising prices for enterprise customers?",
            "What are the risks of raising prices for small business customers?",
            "opposite terms: `enterprise` vs `small`",
        ),
        (
            "Is a latency of 200ms acceptable for checkout?",
            "Is a latency of 200 s acceptable for checkout?",
            "units differ: 200.0 ms vs 200.0 s",
        ),
        (
            "Should we hire 6 engineers for 4 months?",
            "Should we hire 6 engineers for 4 weeks?",
            "units differ: 4.0 month vs 4.0 week",
        ),
    ],
)
def test_swapped_roles_directions_alternatives_and_units_are_refused(query: str, cached: str, reason: str):
    # all-MiniLM-L6-v2 puts each pair at 0.89 to 0.996, far above the threshold.
    verdict = GUARD.judge(query, cached, 0.99, 0.78)
    assert not verdict.accepted and verdict.reason.startswith(reason)


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do I learn Python quickly?", "How do I quickly learn Python?"),
        ("What is the annual cost of our AWS bill?", "What is the yearly cost of our AWS bill?"),
        ("Can we spend $500 on ads this month?", "Can we spend 500 dollars on ads this month?"),
        ("Send the report to the board before Friday", "Before Friday, send the report to the board"),
    ],
)
def test_reordered_words_synonymous_periods_and_unit_spellings_are_served(query: str, cached: str):
    assert GUARD.judge(query, cached, 0.99, 0.78).accepted


def test_different_named_entities_are_refused():
    verdict = GUARD.judge(
        "What is the best way to learn Java for a backend job?",
        "What is the best way to learn Python for a backend job?",
        0.96,
        0.78,
    )
    assert not verdict.accepted and verdict.reason.startswith("named entities differ: `Java` vs `Python`")


def test_an_entity_named_on_one_side_only_raises_the_bar():
    query = "How do I stop my young puppy from chewing my shoes, cables and the kitchen furniture at night?"
    cached = (
        "How do I stop my Labrador puppy from chewing my shoes, cables and the kitchen furniture at night?"
    )

    low, high = GUARD.judge(query, cached, 0.80, 0.78), GUARD.judge(query, cached, 0.83, 0.78)

    assert not low.accepted and "`Labrador` named in one request only" in low.reason
    assert high.accepted and high.required == pytest.approx(0.82)


def test_short_requests_that_differ_in_a_key_term_need_a_near_synonym():
    # Same words but one: they must mean nearly the same for the cosine to clear the bar.
    refused = GUARD.judge(
        "What is a cheap laptop for gaming?", "What is a light laptop for gaming?", 0.86, 0.78
    )
    served = GUARD.judge("How do I reset my password?", "How can I reset my password?", 0.97, 0.78)
    paraphrase = GUARD.judge(
        "How do I make money online?", "What are ways to earn cash on the internet?", 0.83, 0.78
    )

    assert not refused.accepted and "short request: key terms need 0.87" in refused.reason
    assert served.accepted
    assert paraphrase.accepted  # lexically distant paraphrases keep the plain threshold


def test_a_negation_in_differently_worded_requests_only_raises_the_bar():
    query = (
        "The loading script for a dataset is optional when the data files are stored as CSV or JSON lines."
    )
    cached = "Writing a dataset script is not mandatory if your data comes in the CSV or JSON formats."

    verdict = GUARD.judge(query, cached, 0.90, 0.78)

    assert verdict.accepted and "+0.03 negation in one request only" in verdict.reason
    assert verdict.required == pytest.approx(0.81)


def test_two_candidates_almost_equally_near_make_the_lookup_ambiguous():
    assert GUARD.ambiguous(0.91, 0.905, 0.78)
    assert not GUARD.ambiguous(0.91, 0.85, 0.78)
    assert not GUARD.ambiguous(0.91, 0.905, 0.95 - 0.0)  # the second is below the threshold
    assert not Guard(enabled=False).ambiguous(0.91, 0.905, 0.78)


def test_without_the_guard_only_the_threshold_counts():
    verdict = Guard(enabled=False).judge("learn Java", "learn Python", 0.80, 0.78)
    assert verdict.accepted
