"""The guard, on text alone: what it refuses above the threshold, and the category it gives."""

from __future__ import annotations

import os

import numpy as np
import pytest

from budgetgraph.budgets.cache import Guard, lexicon
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
        ("$2M", "2000000.0"),
        ("thousand", "1000.0"),
        ("10%", "10.0%"),
        ("$5", "5.0"),
        ("five", "5.0"),
        ("2.10.0", "2.10.0"),
        ("first", "1st"),
        ("1st", "1st"),
        ("second", "2nd"),
        ("2nd", "2nd"),
        ("12th", "12th"),
        ("21st", "21st"),
        ("word", None),
    ],
)
def test_numbers_are_compared_by_value(token: str, value: str | None):
    assert number_value(token) == value


def test_features_lemmatise_and_find_numbers_negation_and_names():
    f = features("Why doesn't Alice in Paris earn $4,000 a month by leasing vans?")

    assert f.numbers == ("4000.0",) and f.negations == 1
    assert f.entities == {"alice", "paris"}
    assert {"earn", "month", "lease", "van"} <= f.content and "why" not in f.content


def test_an_opening_no_is_not_a_negation():
    assert features("No, it is optional.").negations == 0
    assert features("It is not optional.").negations == 1


def test_candidates_below_the_threshold_are_not_served():
    verdict = GUARD.judge("reset my password", "reset my password", 0.70, 0.78)
    assert not verdict.accepted and verdict.category == "similarity"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should we sign a master services agreement with the new managed service provider?",
            "Should we sign an MSA with the new MSP?",
        ),
        ("Should every vendor sign a non-disclosure agreement?", "Should every vendor sign an NDA?"),
        (
            "Should we require two-factor authentication for the knowledge base?",
            "Should we require 2FA for the KB?",
        ),
        ("Should our third-party logistics provider run returns?", "Should our 3PL run returns?"),
        ("Should we drop GitLab Runner for GitHub Actions?", "Should we drop GitLab Runner for GHA?"),
    ],
)
def test_abbreviations_written_out_are_served_under_the_threshold(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.55, 0.78)
    assert verdict.accepted, verdict.reason
    assert verdict.reason.startswith("abbreviations written out: similarity 0.550 under 0.78")


@pytest.mark.parametrize(
    ("query", "cached", "similarity"),
    [
        (  # another action besides the expansion
            "Should we cancel the master services agreement with the new managed service provider?",
            "Should we sign an MSA with the new MSP?",
            0.55,
        ),
        ("Should we sign a master services agreement?", "Should we sign an MSA?", 0.35),  # under the floor
        ("Should we renew the MSA for 2 years?", "Renew the master services agreement for 3 years?", 0.6),
    ],
)
def test_under_the_threshold_only_a_pure_expansion_is_served(query: str, cached: str, similarity: float):
    verdict = GUARD.judge(query, cached, similarity, 0.78)
    assert not verdict.accepted and verdict.category == "similarity"
    assert not Guard(enabled=False).judge(query, cached, 0.6, 0.78).accepted


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Should we sign a $180k contract with Snowflake?",
            "Should we sign an $18k contract with Snowflake?",
            "quantity",
        ),
        ("Should we hire 6 engineers for 4 months?", "Should we hire 6 engineers for 4 weeks?", "quantity"),
        (
            "Is a latency of 200ms acceptable for checkout?",
            "Is a latency of 200 s acceptable for checkout?",
            "quantity",
        ),
        (
            "Should we not renew our cyber insurance policy?",
            "Should we renew our cyber insurance policy?",
            "negation",
        ),
        (
            "Should we move our servers from AWS to GCP?",
            "Should we move our servers from GCP to AWS?",
            "direction",
        ),
        (
            "Should we replace Jira with Linear for our 120 engineers?",
            "Should we replace Linear with Jira for our 120 engineers?",
            "direction",
        ),
        (
            "Should we migrate billing to microservices?",
            "Should we migrate billing from microservices?",
            "direction",
        ),
        (
            "Should we upgrade our 400 seats to Suite Professional?",
            "Should we downgrade our 400 seats to Suite Professional?",
            "direction",
        ),
        (
            "What are the main risks of outsourcing support to Colombia?",
            "What are the main benefits of outsourcing support to Colombia?",
            "polarity",
        ),
        (
            "What are the advantages of a four-day week for our team?",
            "What are the disadvantages of a four-day week for our team?",
            "polarity",
        ),
        (
            "Should the EU sales team move to a commission-only plan?",
            "Should the US sales team move to a commission-only plan?",
            "actor",
        ),
        (
            "What is the best way to learn Java for a backend job?",
            "What is the best way to learn Python for a backend job?",
            "actor",
        ),
        (
            "Should we close the Portland store temporarily?",
            "Should we close the Portland store?",
            "qualifier",
        ),
        (
            "Should we raise prices on the Team plan for new customers only?",
            "Should we raise prices on the Team plan?",
            "qualifier",
        ),
        (
            "Should we buy the forklifts for our Memphis site?",
            "Should we lease the forklifts for our Memphis site?",
            "action",
        ),
    ],
)
def test_a_difference_that_changes_the_decision_is_refused_with_its_category(
    query: str, cached: str, category: str
):
    # all-MiniLM-L6-v2 puts such pairs at 0.85 to 0.99, far above the threshold.
    verdict = GUARD.judge(query, cached, 0.99, 0.78)
    assert not verdict.accepted
    assert verdict.category == category and verdict.reason.startswith(f"{category}: ")


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do I learn Python quickly?", "How do I quickly learn Python?"),
        ("Should we lay off 10% of staff this year?", "This year, should we lay off 10% of staff?"),
        (
            "Should we sign a $180k contract with Snowflake?",
            "Should we sign a $180,000 contract with Snowflake?",
        ),
        (
            "Should we migrate the orders database to PostgreSQL?",
            "Could you tell me whether we should migrate the orders database to PostgreSQL?",
        ),
        ("Is it a good idea to cut our ads spend by 30%?", "Should we cut our ads spend by 30%?"),
        (
            "Should we launch the loyalty program in the UK?",
            "Should we launch the loyalty program in the United Kingdom?",
        ),
    ],
)
def test_reordered_polite_reformatted_and_expanded_requests_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.97, 0.78)
    assert verdict.accepted, verdict.reason


def test_two_candidates_almost_equally_near_make_the_lookup_ambiguous():
    assert GUARD.ambiguous(0.91, 0.905, 0.78)
    assert not GUARD.ambiguous(0.91, 0.85, 0.78)
    assert not GUARD.ambiguous(0.91, 0.905, 0.95 - 0.0)  # the second is below the threshold
    assert not Guard(enabled=False).ambiguous(0.91, 0.905, 0.78)


def test_without_the_guard_only_the_threshold_counts():
    verdict = Guard(enabled=False).judge("learn Java", "learn Python", 0.80, 0.78)
    assert verdict.accepted


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Should we rewrite the mobile app from native Swift and Kotlin to React Native?",
            "Should we rewrite the mobile app from React Native to native Swift and Kotlin?",
            "direction",
        ),
        (
            "Should we replace our RPO provider with in-house recruiters?",
            "Should we replace our in-house recruiters with an RPO provider?",
            "direction",
        ),
        (
            "Should the sales org be placed under customer success?",
            "Does it make sense to put the customer success team under the sales org?",
            "direction",
        ),
        (
            "Walk me through what could go right with a five-year deal with our cocoa supplier.",
            "Walk me through what could go wrong with a five-year deal with our cocoa supplier.",
            "polarity",
        ),
        (
            "Can our two support agents handle 400 tickets a day?",
            "Can our two support agents handle 400 tickets a week?",
            "quantity",
        ),
        (
            "Can we migrate 500 TB of customer files to S3 this weekend?",
            "Can we migrate 500 GB of customer files to S3 this weekend?",
            "quantity",
        ),
        (
            "Should we train two store managers on the new POS?",
            "Should we train a dozen store managers on the new POS?",
            "quantity",
        ),
        ("Should we keep log data for 6 years?", "Should we keep log data for 6 months?", "quantity"),
        (
            "Is it worth selling the Tulsa warehouse before the lease review?",
            "Should we buy the Tulsa warehouse outright before the lease review?",
            "action",
        ),
    ],
)
def test_swaps_of_several_words_rates_and_one_sided_valence_are_refused(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.97, 0.78)
    assert not verdict.accepted
    assert verdict.category == category, verdict.reason


def test_other_names_are_never_synonyms_however_close_they_embed():
    def everything_alike(texts):
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    verdict = GUARD.judge(
        "Should we move the iOS team to a weekly release cadence?",
        "Should we move the Android team to a weekly release cadence?",
        0.97,
        0.78,
        embed=everything_alike,
    )
    assert not verdict.accepted and verdict.category == "actor"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Hi team, quick question: should we cap overtime at the Reno warehouse? Thanks in advance.",
            "Should we cap overtime at the Reno warehouse?",
        ),
        (
            "I'd really appreciate your view: should we raise our Series B now or wait?",
            "Should we raise our Series B now or wait?",
        ),
        (
            "We're considering converting our contractors in Poland to employees. Good idea?",
            "Should we convert our contractors in Poland to employees?",
        ),
        (
            "Should our emergency room add a triage nurse on weekends?",
            "Should our ER add a triage nurse on weekends?",
        ),
        (
            "Should we adopt single sign-on for all our software-as-a-service tools?",
            "Should we adopt SSO for all our SaaS tools?",
        ),
        ("Should we move our 30 microservices to Kubernetes?", "Should we move our 30 microservices to k8s?"),
        (
            "Should we migrate the orders database before the third quarter?",
            "Should we migrate the orders database before Q3?",
        ),
        ("Is a ten percent discount too generous?", "Is a 10% discount too generous?"),
        ("Should we commit to AWS for 3 years?", "Should we commit to AWS for 36 months?"),
        ("Should we cap meetings at 90 minutes?", "Should we cap meetings at 1.5 hours?"),
        ("Should we raise the Pro plan to 59 USD?", "Should we raise the Pro plan to $59?"),
    ],
)
def test_filler_clauses_abbreviations_and_equal_amounts_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.97, 0.78)
    assert verdict.accepted, verdict.reason


def test_a_replaced_word_refuses_a_request_but_not_a_documentation_statement():
    statement = GUARD.judge(
        "Albumentations is a Python package for data augmentation.",
        "Albumentations is a Python library for data augmentation.",
        0.98,
        0.78,
    )
    request = GUARD.judge(
        "Should we adopt the package for data augmentation?",
        "Should we adopt the library for data augmentation?",
        0.98,
        0.78,
    )
    assert statement.accepted, statement.reason
    assert not request.accepted and request.category == "actor"


def _everything_alike(texts):
    """An embedder under which every word is a synonym of every other."""
    return np.ones((len(texts), 4), dtype=np.float32) / 2.0


def _every_word_apart(texts):
    """An embedder under which no two different words are synonyms."""
    rows = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        rows[i, sum(map(ord, text)) % 64] = 1.0
    return rows


@pytest.mark.parametrize(
    ("query", "cached", "category", "embed"),
    [
        (
            "What savings would we get by self-hosting our Kubernetes clusters?",
            "What costs would we incur by self-hosting our Kubernetes clusters?",
            "polarity",
            _everything_alike,
        ),
        (
            "List the drawbacks of switching our field techs to a four-day week.",
            "List the advantages of switching our field techs to a four-day week.",
            "polarity",
            _everything_alike,
        ),
        (
            "How much extra revenue would we make per year by running the plant on three shifts?",
            "How much extra would it cost per year to run the plant on three shifts?",
            "polarity",
            _everything_alike,
        ),
        (
            "Should we continue the pilot unless the vendor misses the June deadline?",
            "Should we continue the pilot if the vendor misses the June deadline?",
            "negation",
            _everything_alike,
        ),
        (
            "Should legal litigate the patent claim from Norwell instead of paying the proposed $250k?",
            "Should legal settle the patent claim from Norwell at the proposed $250k?",
            "action",
            _every_word_apart,
        ),
        (
            "Should design report into engineering rather than product?",
            "Should design report into product rather than engineering?",
            "direction",
            _everything_alike,
        ),
    ],
)
def test_other_sides_unless_noun_subjects_and_crossed_terms_are_refused(
    query: str, cached: str, category: str, embed
):
    verdict = GUARD.judge(query, cached, 0.99, 0.78, embed=embed)
    assert not verdict.accepted
    assert verdict.category == category and verdict.reason.startswith(f"{category}: ")


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Honestly, I'm just trying to figure this out: should we hire a recruiter for the search?",
            "Should we hire a recruiter for the search?",
        ),
        (
            "Hello! Hope your week is going well. Should our hospital network standardize on one pump model?",
            "Should our hospital network standardize on one pump model?",
        ),
        (
            "Should we book the offsite for one hundred fifty people?",
            "Should we book the offsite for 150 people?",
        ),
    ],
)
def test_asides_to_the_reader_and_spelled_compound_numbers_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.97, 0.78)
    assert verdict.accepted, verdict.reason


def test_context_in_the_first_person_plural_is_no_aside():
    verdict = GUARD.judge(
        "We just lost our biggest customer: should we hire an external recruiter for the search?",
        "Should we hire an external recruiter for the search?",
        0.97,
        0.78,
    )
    assert not verdict.accepted


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("one hundred fifty people", ("150.0",)),
        ("twenty five engineers", ("25.0",)),
        ("two hundred vans", ("200.0",)),
        ("one of the teams", ()),
    ],
)
def test_spelled_numbers_are_read_whole(text: str, numbers: tuple[str, ...]):
    assert features(text).numbers == numbers


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should we move our $180k-a-year analytics platform off self-hosted ClickHouse?",
            "Should we move our $180k-a-year analytics platform to self-hosted ClickHouse?",
        ),
        (
            "Should we take the billing service out of the monolith?",
            "Should we fold the billing service into the monolith?",
        ),
        ("Should we turn off the legacy VPN this quarter?", "Should we turn on the legacy VPN this quarter?"),
    ],
)
def test_a_movement_toward_a_system_against_one_away_from_it_is_a_reversed_direction(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.99, 0.78, embed=_everything_alike)

    assert not verdict.accepted and verdict.category in ("direction", "action")


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Which of our three carriers is the most reliable for overnight freight?",
            "Which of our three carriers is the least reliable for overnight freight?",
            "direction",
        ),
        (
            "Is our payroll vendor non-compliant with SOC 2 after the audit?",
            "Is our payroll vendor compliant with SOC 2 after the audit?",
            "negation",
        ),
        (
            "Should we put Android ahead of iOS on next year's mobile roadmap?",
            "Should we put iOS ahead of Android on next year's mobile roadmap?",
            "direction",
        ),
    ],
)
def test_superlatives_as_written_a_hyphenated_non_and_an_order_are_refused(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.99, 0.78, embed=_everything_alike)

    assert not verdict.accepted and verdict.category == category


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should Indianapolis orders be fulfilled by the Reno DC during the holiday peak?",
            "Should Reno orders be fulfilled by the Indianapolis DC during the holiday peak?",
        ),
        (
            "We want to move $150k of the events budget to paid search. Thoughts?",
            "We want to move $150k of the paid search budget to events. Thoughts?",
        ),
    ],
)
def test_terms_that_trade_roles_in_a_passive_or_a_first_person_statement_are_refused(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.99, 0.78, embed=_everything_alike)

    assert not verdict.accepted and verdict.category == "direction"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (  # a frame before "whether" asks for the decision without being part of it
            "I need a decision on whether to renew the Datadog contract in June.",
            "Should we renew the Datadog contract in June?",
        ),
        (
            "We would like to know if it makes sense to repaint the Fresno warehouse floor.",
            "Does repainting the Fresno warehouse floor make sense?",
        ),
        ("Should we renew the Datadog contract? No rush.", "Should we renew the Datadog contract?"),
        (  # a purpose clause moved: "to" before a verb relates no terms
            "Should we move payroll to Gusto to cut admin time?",
            "To cut admin time, should we move payroll to Gusto?",
        ),
        (  # clauses moved around, not two terms exchanged
            "With fuel up 20%, should we add a night shuttle to the depot, even though it costs a driver?",
            "Even though it costs a driver, should we add a night shuttle to the depot with fuel up 20%?",
        ),
    ],
)
def test_frames_reassurance_and_moved_clauses_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Should we migrate billing first and upgrade the CRM afterwards?",
            "Should we upgrade the CRM first and migrate billing afterwards?",
            "direction",
        ),
        (
            "Should we move our nightly builds from Azure-hosted agents to self-hosted agents on Hetzner?",
            "Should we move our nightly builds from self-hosted agents on Hetzner to Azure-hosted agents?",
            "direction",
        ),
        (
            "Should we ship Boston orders through the Newark hub this winter?",
            "Should we ship Newark orders through the Boston hub this winter?",
            "direction",
        ),
        (
            "What are the tailwinds for opening a second bakery in Leeds?",
            "What are the headwinds for opening a second bakery in Leeds?",
            "polarity",
        ),
        (
            "If the clinic moved to online booking only, what could go right?",
            "What could go wrong if our clinic switches to booking online only?",
            "polarity",
        ),
        (  # "is it time to" asks for a decision: the verb asked about is compared
            "Is it time to delete the old Jira projects from before 2020?",
            "Now that we moved, is it time to archive the old Jira projects from before 2020?",
            "action",
        ),
    ],
)
def test_an_order_reversed_a_route_swapped_and_the_other_outcome_are_refused(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


def _wordnet_or_skip() -> None:
    from budgetgraph.budgets.cache.lexicon import WORDNET_DIR

    if not (WORDNET_DIR / "index.verb").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"WordNet is not at {WORDNET_DIR}: CI installs Debian's wordnet-base")
        pytest.skip(f"WordNet is not at {WORDNET_DIR} (apt-get install wordnet-base)")


def test_wordnet_synonyms_share_a_synset_as_the_same_part_of_speech():
    _wordnet_or_skip()
    from budgetgraph.budgets.cache.lexicon import synonyms, synsets

    assert synonyms("hire", "employ", frozenset({"VERB"})) and synonyms("auto", "car", frozenset({"NOUN"}))
    assert not synonyms("buy", "sell", frozenset({"VERB"})) and not synonyms(
        "lease", "buy", frozenset({"VERB"})
    )
    assert not synonyms("auto", "car", frozenset({"VERB"}))  # the same part of speech, or none
    assert synsets("no-such-word", "NOUN") == () and synsets("hire", "PRON") == ()
    assert not synonyms("fire", "raise", frozenset({"VERB"}))  # a rare sense shared is not enough


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Is it time to employ a full-time bookkeeper?", "Is it time to hire a full-time bookkeeper?"),
        (
            "Should we terminate the lease on the Dayton depot early?",
            "Should we end the lease on the Dayton depot early?",
        ),
        ("Should sales get a company auto?", "Should sales get a company car?"),
    ],
)
def test_words_wordnet_puts_in_one_synset_are_served(query: str, cached: str):
    _wordnet_or_skip()
    verdict = GUARD.judge(query, cached, 0.96, 0.78, embed=_far_apart)
    assert verdict.accepted, verdict.reason


def test_without_wordnet_only_the_embedder_finds_synonyms(monkeypatch: pytest.MonkeyPatch, tmp_path):
    from budgetgraph.budgets.cache import lexicon

    monkeypatch.setenv("BUDGETGRAPH_WORDNET", str(tmp_path))
    monkeypatch.setattr(lexicon, "_WORDNET", {})
    lexicon.synsets.cache_clear()
    try:
        verdict = GUARD.judge(
            "Is it time to employ a full-time bookkeeper?",
            "Is it time to hire a full-time bookkeeper?",
            0.96,
            0.78,
            embed=_far_apart,
        )
    finally:
        lexicon.synsets.cache_clear()
    assert not verdict.accepted and verdict.category == "action"


def _far_apart(texts):
    """Every word its own direction: no two words are synonyms by embedding."""
    out = np.zeros((len(texts), 4096), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i, hash(text) % 4096] = 1.0
    return out


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (  # "St." ends no sentence: the two sites still cross "to"
            "This winter, should we move night-shift nurses from St. Luke's to the Eastside campus?",
            "This winter, should we move night-shift nurses from the Eastside campus to St. Luke's?",
            "direction",
        ),
        (  # subject and object trade places around the same verb
            "Should the pricing engine be allowed to override the account manager?",
            "Should the account manager be allowed to override the pricing engine?",
            "direction",
        ),
        (  # another part of the organisation, however reworded
            "Payroll errors keep piling up. Should the finance team own the payroll runs?",
            "Payroll errors keep piling up. Should the people-ops team be the one running payroll?",
            "actor",
        ),
    ],
)
def test_abbreviated_names_swaps_around_a_verb_and_other_units_are_refused(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


def test_a_preamble_closed_by_a_dash_is_filler():
    verdict = GUARD.judge(
        "Hi all, I'd value your thoughts on this - should we cap overtime at eight hours a week?",
        "Should we cap overtime at eight hours a week?",
        0.93,
        0.78,
    )
    assert verdict.accepted, verdict.reason
    assert features("Should we buy from Acme Inc. and resell?").sentence_of == (0,) * 8


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should the bakery buy a second oven ahead of the holidays?",
            "Should the bakery buy an extra oven before the holidays?",
        ),
        (
            "I'm trying to decide whether the club should raise membership fees.",
            "Should the club raise membership fees?",
        ),
        (
            "Should the club raise membership fees? Give me a recommendation.",
            "Should the club raise membership fees?",
        ),
        (
            "Hey all, so um, quick one if you have a minute: should the club raise membership fees?",
            "Should the club raise membership fees?",
        ),
        ("Can we afford a new boiler in H1?", "Can we afford a new boiler in the first half?"),
    ],
)
def test_one_more_ahead_of_framing_courtesy_and_half_years_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert verdict.accepted, verdict.reason


def test_a_condition_in_a_clause_before_the_question_still_counts():
    verdict = GUARD.judge(
        "For drivers still in their first 60 days, should weekend shifts be optional?",
        "Should weekend shifts be optional for our drivers?",
        0.9,
        0.78,
    )
    assert not verdict.accepted and verdict.category == "quantity", verdict.reason


def test_a_verifier_overrules_the_checks_on_words_but_not_a_changed_number():
    from budgetgraph.budgets.cache.verifier import LEXICAL, Verifier

    dim = 4
    always = Verifier(
        weights=np.zeros(2 * dim + 1 + len(LEXICAL)),
        bias=5.0,
        cutoff=0.5,
        embedder="e",
        threshold=0.78,
        lexical=LEXICAL,
    )
    guard = Guard(verifier=always)
    u = np.eye(dim)[0]

    actor = guard.judge(
        "Should the Leeds team own billing?", "Should the York team own billing?", 0.95, 0.78, (u, u)
    )
    number = guard.judge("Should we hire 6 engineers?", "Should we hire 60 engineers?", 0.95, 0.78, (u, u))

    assert actor.accepted and actor.reason.startswith("the verifier overrules `actor`")
    assert not number.accepted and number.category == "quantity"
    assert not GUARD.judge(
        "Should the Leeds team own billing?", "Should the York team own billing?", 0.95, 0.78
    ).accepted


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Should the clinic's new booking app go live next month, but for existing patients only?",
            "Do we launch the clinic's new booking app next month?",
            "qualifier",
        ),
        (
            "After a week of training, is it fine to let our own staff drive the forklifts at the depot?",
            "Should temps at the depot be allowed to drive the forklifts after a week of training?",
            "actor",
        ),
        (
            "If we ran payroll in-house instead of through a bureau, where would we save money?",
            "What extra costs would we take on by running payroll in-house rather than through a bureau?",
            "polarity",
        ),
    ],
)
def test_a_restriction_another_group_of_people_and_the_other_side_are_refused_however_reworded(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.92, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached", "similarity"),
    [  # abbreviations written out, with something else that changes the decision
        (
            "Should we move from AWS to GCP?",
            "Should we move from Google Cloud Platform to Amazon Web Services?",
            0.76,
        ),
        (
            "Should the CFO report to the VP of Sales?",
            "Should the vice president of Sales report to the CFO?",
            0.77,
        ),
        (
            "Should we renew the SLA with the ISP?",
            "Should we not renew the service level agreement with the ISP?",
            0.64,
        ),
        (
            "Should we sell the car to the CEO?",
            "Should we sell the carpet to the chief executive officer?",
            0.61,
        ),
        ("Should we renew the AWS contract?", "Should we renew the Acme water services contract?", 0.59),
        ("Should we replace our ERP?", "Should we replace our enterprise resource planning team?", 0.74),
        (
            "Should we sign an SLA with everyone except the ISP?",
            "Should we sign a service level agreement with everyone?",
            0.6,
        ),
    ],
)
def test_under_the_threshold_an_expansion_with_any_other_difference_is_refused(
    query: str, cached: str, similarity: float
):
    verdict = GUARD.judge(query, cached, similarity, 0.78)
    assert not verdict.accepted and verdict.category == "similarity", verdict.reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Should we take it if they offer 2M?", "Should we call it if they offer 2M?"),  # no frame: it asks
        (
            "I would take it, but should we wait for the Series B?",
            "I would give up, but should we wait for the Series B?",
        ),
        ("Should we open a second warehouse in Leeds?", "Should we open a third warehouse in Leeds?"),
        ("Should we fire the agency?", "Should we raise the agency?"),  # WordNet shares only a rare sense
        ("Should we ship the valves with no pressure testing?", "Should we ship the valves after testing?"),
        ("Should we shift spend from acquire to retain?", "Should we shift spend from retain to acquire?"),
    ],
)
def test_frames_courtesy_and_synonyms_never_hide_the_decision(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.9, 0.78)
    assert not verdict.accepted, verdict.reason


def test_a_verifier_never_serves_under_the_threshold_and_long_texts_are_not_compared():
    from budgetgraph.budgets.cache.verifier import LEXICAL, Verifier

    always = Verifier(
        weights=np.zeros(9 + len(LEXICAL)),
        bias=5.0,
        cutoff=0.5,
        embedder="e",
        threshold=0.78,
        lexical=LEXICAL,
    )
    u = np.eye(4)[0]
    under = Guard(verifier=always).judge(
        "Should we sign an SLA with everyone except the ISP?",
        "Should we sign a service level agreement with everyone and the internet service provider?",
        0.6,
        0.78,
        (u, u),
    )
    assert not under.accepted

    long = " ".join(f"word{i} to" for i in range(400))
    verdict = GUARD.judge(long, long + " more", 0.99, 0.78)
    assert not verdict.accepted and verdict.category == "reworded" and "too long" in verdict.reason
    assert GUARD.judge(
        "Should we sign the SLA?", "Should we sign the " + "of the " * 800 + "deal?", 0.5, 0.78
    )


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Before spring term, would moving the lab's servers back to the old OS release be sensible?",
            "Should we upgrade the lab's servers to the new OS release before spring term?",
            "direction",
        ),
        (
            "Apart from the night shift, should every warehouse worker get the new scanners?",
            "Should all our warehouse workers get the new scanners?",
            "qualifier",
        ),
        (
            "Give me the strongest arguments against merging our two call centres.",
            "Make the case for merging our two call centres into one.",
            "polarity",
        ),
    ],
)
def test_an_undoing_an_exception_and_the_case_against_are_refused_however_reworded(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.9, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


def test_the_alternative_turned_down_in_one_request_alone_is_refused():
    verdict = GUARD.judge(
        "Would you let the front desk, rather than housekeeping, handle late checkout requests at our inn?",
        "Should our inn's housekeeping team handle late checkout requests?",
        0.88,
        0.78,
    )
    assert not verdict.accepted and verdict.category == "qualifier", verdict.reason


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Move the archive boxes from store 3 to store 7.",
            "Move the archive boxes from store 7 to store 3.",
            "direction",
        ),
        (
            "Should we shift the kiosks from gate C to gate F?",
            "Should we shift the kiosks from gate F to gate C?",
            "direction",
        ),
        (
            "Relocate the forklifts from the east yard to the west yard.",
            "Relocate the forklifts from the west yard to the east yard.",
            "direction",
        ),
        (
            "Approve extending the canteen lease for staff at Plan B sites.",
            "Approve extending the canteen lease for staff at Plan A sites.",
            "actor",
        ),
        (
            "Cut the delivery fee on orders over £40 for customers in Wales.",
            "Cut the delivery fee on orders over £40.",
            "qualifier",
        ),
        (
            "Approve rebuilding the loading dock before winter.",
            "Approve resurfacing the loading dock before winter.",
            "action",
        ),
    ],
)
def test_instructions_numbered_and_lettered_places_are_judged_as_requests(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Looking at the vineyard's new press, what would we give up by waiting a season?",
            "What do we gain by holding off a season on the vineyard's new press?",
            "polarity",
        ),
        (
            "Could the bakery chain make money by opening on Sunday mornings?",
            "Where could the bakery chain lose money by opening on Sunday mornings?",
            "polarity",
        ),
        (
            "Is it worth adding late-night classes at the gym, just for members on the annual plan?",
            "Should the gym add late-night classes?",
            "qualifier",
        ),
    ],
)
def test_two_word_verbs_and_just_for_are_read_as_what_they_mean(query: str, cached: str, category: str):
    verdict = GUARD.judge(query, cached, 0.9, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should the print shop buy a second guillotine?",
            "The print shop needs a decision on whether to buy a second guillotine.",
        ),
        (
            "Do we renew the harbour crane contract?",
            "We need a decision on renewing the harbour crane contract.",
        ),
        (
            "Should the library open on Sundays in term time?",
            "Proposal: the library opens on Sundays in term time. Yes or no?",
        ),
        (
            "Should the cinema drop the matinee discount?",
            "Just need a steer here: should the cinema drop the matinee discount? Cheers.",
        ),
    ],
)
def test_frames_after_a_subject_on_a_gerund_and_yes_or_no_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.92, 0.78)
    assert verdict.accepted, verdict.reason


def test_a_decision_on_something_named_is_no_frame():
    verdict = GUARD.judge(
        "Should we appeal the council's decision on the parking permits?",
        "Should we appeal the council's decision on the loading permits?",
        0.93,
        0.78,
    )
    assert not verdict.accepted, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Should the museum postpone the roof works until spring?",
            "Should the museum delay the roof works until spring?",
        ),
        ("Should we raise the school meal price by 20p?", "Should we increase the school meal price by 20p?"),
        (
            "With thefts up 30% at Depot 4, should we fence Depot 4 this year?",
            "Should we fence Depot 4 this year, given thefts there are up 30%?",
        ),
    ],
)
def test_a_verb_wordnet_makes_a_manner_of_the_other_and_a_number_named_twice_are_served(
    query: str, cached: str
):
    _wordnet_or_skip()
    verdict = GUARD.judge(query, cached, 0.95, 0.78, embed=_far_apart)
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize(
    ("a", "b"),
    [("buy", "sell"), ("raise", "lower"), ("hire", "fire"), ("upgrade", "downgrade"), ("lend", "borrow")],
)
def test_opposite_verbs_are_never_wordnet_synonyms(a: str, b: str):
    _wordnet_or_skip()
    assert not lexicon.synonyms(a, b, frozenset({"VERB"}))


@pytest.mark.parametrize(
    ("query", "cached", "category"),
    [
        (
            "Proposal: put the night porters under the housekeeping manager.",
            "Proposal: put the housekeeping manager under the night porters.",
            "direction",
        ),
        (
            "Proposal: lower the pool temperature to 27°C in the teaching pool.",
            "Proposal: lower the pool temperature to 27°C in the teaching pool during school holidays.",
            "qualifier",
        ),
        (
            "Should the studio accept the publisher's offer to port the game to consoles?",
            "The publisher wants us to port the game to consoles; do we turn the offer down?",
            "action",
        ),
        (
            "Should we turn the ground-floor offices into a hot-desk area?",
            "Should we turn the ground-floor hot-desk area into offices?",
            "direction",
        ),
        (
            "Where is our tender for the bridge repairs strongest?",
            "Where is our tender for the bridge repairs weakest?",
            "polarity",
        ),
    ],
)
def test_labelled_proposals_particle_verbs_compounds_and_strong_or_weak_are_judged(
    query: str, cached: str, category: str
):
    verdict = GUARD.judge(query, cached, 0.93, 0.78)
    assert not verdict.accepted and verdict.category == category, verdict.reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        (
            "Proposal: close the café on Mondays in January.",
            "Should we close the café on Mondays in January?",
        ),
        ("Should the gallery extend its hours?", "We need a yes or no on extending the gallery's hours."),
        (
            "Should the depot add a weekend shift from 1 Oct?",
            "Decision needed: a weekend shift at the depot from October 1st, add it or not.",
        ),
        (
            "Should the clinic buy two more ultrasound machines?",
            "Pls confirm: should the clinic buy two additional ultrasound machines?",
        ),
        (
            "Do we renew the fleet insurance with the same broker?",
            "No rush really - do we renew the fleet insurance with the same broker?",
        ),
        (
            "Should we recruit a second sous chef?",
            "Just to double-check: should we recruit a second sous chef?",
        ),
    ],
)
def test_labels_answers_named_dates_and_more_as_additional_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.93, 0.78)
    assert verdict.accepted, verdict.reason


def test_do_we_asks_a_decision_and_how_do_i_does_not():
    from budgetgraph.budgets.cache.diff import asks_decision

    assert asks_decision(features("Do we renew the fleet insurance with the same broker?"))
    assert not asks_decision(features("How do I renew a passport?"))


def test_a_reworded_decision_needs_more_similarity_than_reworded_documentation():
    guard = Guard()
    asked = guard.judge(
        "For the Christmas season, is it worth us running a temporary pop-up store in Leeds?",
        "Should we open a pop-up shop in Leeds for the Christmas season?",
        0.84,
        0.78,
    )
    told = guard.judge(
        "For the Christmas season the company runs a temporary pop-up store in Leeds.",
        "The company opens a pop-up shop in Leeds for the Christmas season.",
        0.84,
        0.78,
    )
    assert asked.required > told.required > 0.78, (asked.reason, told.reason)


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Should we spend €2.5M on a new kiln?", "Should we spend 2.5 million euros on a new kiln?"),
        (
            "Should the ferry add a late sailing on Fridays?",
            "Sorry to bother you, but could you take a look and tell me whether the ferry should add a late "
            "sailing on Fridays?",
        ),
    ],
)
def test_plural_currency_words_and_a_take_a_look_frame_are_served(query: str, cached: str):
    verdict = GUARD.judge(query, cached, 0.95, 0.78)
    assert verdict.accepted, verdict.reason


def test_another_currency_is_another_amount():
    verdict = GUARD.judge(
        "Should we spend €2.5M on a new kiln?",
        "Should we spend 2.5 million dollars on a new kiln?",
        0.9,
        0.78,
    )
    assert not verdict.accepted and verdict.category == "quantity", verdict.reason
