"""The local tier's rules and the calculate tool."""

from __future__ import annotations

import pytest

from budgetgraph.agents import rules
from budgetgraph.agents.tools import calculate, evaluate

PCI = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)


def test_signals_are_read_from_the_task():
    s = rules.Signals.read(PCI, [])
    assert s.team_size == 6 and round(s.deadline_weeks) == 17
    assert "PCI" in s.compliance and "microservices" in s.change
    assert s.audit_pressure and s.small_team


def test_a_migration_before_an_audit_with_a_small_team_is_high_risk():
    cto, coo = rules.cto_analysis(PCI, []), rules.coo_analysis(PCI, [])
    assert max(r.severity for r in cto.risks) >= 4 and max(r.severity for r in coo.risks) >= 4
    assert rules.reconciliation(cto, coo).risk_score >= 4


def test_a_plain_task_is_low_risk_and_says_no_model_wrote_it():
    task = "Should we rename the internal wiki?"
    cto, coo = rules.cto_analysis(task, []), rules.coo_analysis(task, [])
    rec = rules.reconciliation(cto, coo)
    assert rec.risk_score <= 2
    assert all(text.startswith(rules.NOTICE) for text in (cto.summary, coo.summary, rec.summary))


def test_constraints_count_as_signals():
    assert rules.Signals.read("Should we launch in Germany?", ["GDPR review in 8 weeks"]).audit_pressure


def test_the_same_input_gives_the_same_output():
    assert rules.cto_analysis(PCI, ["x"]) == rules.cto_analysis(PCI, ["x"])


def test_calculate_does_arithmetic_and_nothing_else():
    assert calculate.invoke({"expression": "6 * 40 * 4"}) == "960"
    assert evaluate("(120000 / 12) * 1.5") == 15000
    for bad in ("__import__('os')", "2 ** 1000", "1 / 0", "x + 1"):
        with pytest.raises(ValueError):
            evaluate(bad)
