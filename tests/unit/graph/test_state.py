"""Reducers of the graph state."""

from __future__ import annotations

from budgetgraph.graph.state import constraint_id, merge_constraints, merge_dicts


def test_constraints_get_stable_ids_from_their_text():
    merged = merge_constraints([], ["Keep card data in one region", {"text": "No new hires"}])
    assert [c["id"] for c in merged] == [
        constraint_id("Keep card data in one region"),
        constraint_id("No new hires"),
    ]
    assert constraint_id("keep  card data in one REGION") == merged[0]["id"]


def test_adding_a_constraint_twice_keeps_one_and_remove_drops_it():
    merged = merge_constraints(None, ["A", "A"])
    assert len(merged) == 1
    assert merge_constraints(merged, [{"id": merged[0]["id"], "remove": True}]) == []


def test_parallel_branches_each_add_their_analysis():
    assert merge_dicts({"cto": 1}, {"coo": 2}) == {"cto": 1, "coo": 2}
