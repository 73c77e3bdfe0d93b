"""How `cache eval` counts hits: on the pair's own text, on another stored text, exact or not."""

from __future__ import annotations

from budgetgraph.budgets.cachetune.evaluate import Pair, evaluate
from tests.unit.budgets.cache.conftest import HashingEmbedder

PAIRS = [
    # answered by its own partner, exactly: correct
    Pair(stored="how do i renew a passport", query="How do I renew a passport?", label=1),
    # the query is another pair's stored text: an exact hit on another stored text, false
    Pair(stored="what is the capital of peru", query="how do i renew a passport", label=1),
    # nothing stored is close: a miss
    Pair(stored="which laptop should i buy for gaming", query="zebra quantum marmalade", label=0),
]


def test_a_hit_on_another_stored_text_is_false_and_counted_apart():
    result = evaluate(PAIRS, HashingEmbedder(), threshold=0.99)

    assert (result.hits, result.correct_hits, result.false_hits, result.misses) == (2, 1, 1, 1)
    assert (result.other_hits, result.other_exact_hits) == (1, 1)
    assert result.precision == 0.5
    assert result.recall == 0.5
    assert result.own_precision_bound == 0.5


def test_pairwise_never_serves_another_stored_text():
    result = evaluate(PAIRS, HashingEmbedder(), threshold=0.99, pairwise=True)

    assert (result.hits, result.correct_hits, result.other_hits) == (1, 1, 0)
    assert result.own_precision_bound == 1.0
