"""Ledger scopes cannot be forged through thread ids, tenants or node names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budgetgraph.budgets.caps import Scopes
from budgetgraph.budgets.ledger import scope_part

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def test_a_thread_id_cannot_name_another_threads_node_scope():
    forged = Scopes.named("planner", thread_id="victim:node:cto", tenant="acme", now=NOW)
    victim = Scopes.named("cto", thread_id="victim", tenant="acme", now=NOW)

    assert forged.task != victim.node and forged.node != victim.node
    assert set(forged.all()).isdisjoint({victim.task, victim.node})


def test_a_tenant_cannot_name_another_tenants_window():
    forged = Scopes.named("cto", thread_id="t", tenant="victim:day:2026-12-06:x", now=NOW)
    victim = Scopes.named("cto", thread_id="t", tenant="victim", now=NOW)

    assert set(forged.all()[2:]).isdisjoint(victim.all()[2:])


@pytest.mark.parametrize(
    "name", ["acme", "cto", "0b6f1d2e-8a7c-4f5e-9d3b-2a1c0e9f8b7a", "team_a.b-c~d@e+f", "(new run)"]
)
def test_ordinary_names_are_unchanged(name: str):
    assert scope_part(name) == name


@pytest.mark.parametrize("name", ["a:b", "a%3Ab", "a\tb", "a\nb", "a\x1bb", "ü"])
def test_reserved_characters_are_escaped_and_distinct(name: str):
    escaped = scope_part(name)

    assert ":" not in escaped and not any((c.isspace() and c != " ") or ord(c) < 32 for c in escaped)


def test_escaping_keeps_different_names_apart():
    names = ["a:b", "a%3Ab", "a%253Ab", "a b", "a+b", "a%20b"]

    assert len({scope_part(n) for n in names}) == len(names)
