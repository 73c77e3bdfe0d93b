"""Loading models.yaml and budgets.yaml, and the errors a bad file gives."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from budgetgraph.budgets import ConfigError, load_budgets, load_models
from budgetgraph.graph.builder import NODE_NAMES

DESIGN_DOCUMENT = """\
budgets:
  orchestrator: {max_tokens: 50000, max_latency_ms: 10000, max_tool_calls: 20, max_cost_usd: 5.00}
  cto_agent:    {max_tokens: 20000, max_latency_ms: 5000,  max_tool_calls: 10, max_cost_usd: 2.00}
  coo_agent:    {max_tokens: 15000, max_latency_ms: 5000,  max_tool_calls: 5,  max_cost_usd: 1.50}
  reconcile_gpt: {max_tokens: 30000, max_latency_ms: 8000, max_tool_calls: 5,  max_cost_usd: 3.00}
  total_task_budget: {max_tokens: 200000, max_cost_usd: 20.00}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return load_budgets(path, node_names=NODE_NAMES)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(tmp_path / "budgets.yaml") in str(info.value)
    return info.value.problems


def test_the_design_document_format_loads_as_it_is(tmp_path: Path):
    budgets = load(tmp_path, DESIGN_DOCUMENT)

    assert budgets.node("planner").max_tokens == 50000
    assert budgets.node("cto").max_cost_usd == Decimal("2.00")
    assert budgets.node("coo").max_tool_calls == 5
    assert budgets.node("reconcile").max_latency_ms == 8000
    assert budgets.task.max_tokens == 200000 and budgets.task.max_cost_usd == Decimal("20.00")


def test_the_packaged_defaults_are_the_design_documents_budgets():
    budgets = load_budgets(node_names=NODE_NAMES)
    assert budgets.node("cto").max_tokens == 20000 and budgets.task.max_cost_usd == Decimal(20)


def test_graph_node_names_are_accepted_too(tmp_path: Path):
    assert load(tmp_path, "budgets:\n  cto: {max_tokens: 10}\n").node("cto").max_tokens == 10


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ("budgets:\n  cfo_agent: {max_tokens: 10}\n", 2, "budgets.cfo_agent", "unknown node"),
        (
            "budgets:\n  cto_agent:\n    max_cost_usd: -1\n",
            3,
            "budgets.cto_agent.max_cost_usd",
            "greater than or equal to 0",
        ),
        (
            "budgets:\n  coo_agent:\n    max_tokens: lots\n",
            3,
            "budgets.coo_agent.max_tokens",
            "valid integer",
        ),
        ("budgets:\n  coo_agent:\n    max_tokenz: 5\n", 3, "budgets.coo_agent.max_tokenz", "unknown key"),
        ("budget:\n  coo_agent: {}\n", 1, "budget", "unknown key"),
        (
            "budgets:\n  total_task_budget: {max_latency_ms: 5}\n",
            2,
            "budgets.total_task_budget.max_latency_ms",
            "unknown key",
        ),
    ],
)
def test_a_bad_file_names_the_file_the_line_and_the_key(
    tmp_path: Path, text: str, line: int, key: str, words: str
):
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'budgets.yaml'}:{line}: `{key}`:")
    assert words in problem


def test_every_problem_is_listed_at_once(tmp_path: Path):
    problems = problems_of(
        tmp_path, "budgets:\n  cto_agent: {max_tokens: 0}\n  coo_agent: {max_cost_usd: x}\n  cfo: {}\n"
    )
    assert [p.split(": `")[1].split("`")[0] for p in problems] == [
        "budgets.cto_agent.max_tokens",
        "budgets.coo_agent.max_cost_usd",
        "budgets.cfo",
    ]


def test_malformed_yaml_names_the_line(tmp_path: Path):
    (problem,) = problems_of(tmp_path, "budgets:\n  cto_agent: {max_tokens: 10\n  coo_agent: {}\n")
    assert "not valid YAML" in problem and f"{tmp_path / 'budgets.yaml'}:3" in problem


def test_a_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_budgets(tmp_path / "nope.yaml", node_names=NODE_NAMES)


def test_models_resolve_endpoints_from_the_environment(tmp_path: Path):
    models = load_models(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert models.endpoints["standard"].base_url == "http://127.0.0.1:9/v1"
    assert models.endpoints["standard"].settings.model == "gpt-4.1-mini"
    assert models.any_configured

    assert not load_models(env={}).any_configured


def test_models_yaml_can_name_its_own_url_and_key_variables(tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "tiers:\n  premium: {model: big, base_url: 'http://127.0.0.1:1/v1', api_key_env: BIG_KEY}\n"
        "prices:\n  big: {input_per_mtok: 1, output_per_mtok: 2}\n"
    )
    models = load_models(path, env={"BIG_KEY": "k"})
    assert models.endpoints["premium"].api_key == "k"
    assert not models.endpoints["economy"].configured
    assert models.file.prices["big"].output_per_mtok == Decimal(2)


def test_a_bad_models_file_names_its_problems(tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text("tiers:\n  ultra: {model: x}\n  economy: {model: ''}\ndefault_tier: gold\n")
    with pytest.raises(ConfigError) as info:
        load_models(path, env={})
    text = str(info.value)
    assert "models.yaml:2: `tiers.ultra`: unknown key" in text
    assert "models.yaml:3: `tiers.economy.model`" in text
    assert "models.yaml:4: `default_tier`" in text


def test_the_extended_format_adds_actions_windows_and_tenants(tmp_path: Path):
    budgets = load(
        tmp_path,
        DESIGN_DOCUMENT
        + "nodes:\n  cto: {on_exceed: degrade, alerts: [0.5]}\n"
        + "task: {on_exceed: approve}\n"
        + "windows:\n  daily: {max_cost_usd: 100.0, alerts: [0.7, 0.9, 1.0], pacing: {factor: 2}}\n"
        + "tenants:\n  acme: {daily: {max_cost_usd: 5}}\n",
    )
    cto = budgets.node("cto")
    assert (cto.max_cost_usd, cto.on_exceed, cto.alerts) == (Decimal("2.00"), "degrade", (0.5,))
    assert budgets.task.max_cost_usd == Decimal("20.00") and budgets.task.on_exceed == "approve"
    assert budgets.windows_for("anyone").daily.pacing.factor == 2
    assert budgets.windows_for("acme").daily.max_cost_usd == Decimal(5)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("nodes:\n  cto: {on_exceed: panic}\n", "nodes.cto.on_exceed"),
        ("windows:\n  weekly: {max_cost_usd: 1}\n", "windows.weekly"),
        ("windows:\n  daily: {alerts: [1.5]}\n", "windows.daily.alerts.0"),
        ("tenants:\n  acme: {daily: {max_tokens: -1}}\n", "tenants.acme.daily.max_tokens"),
    ],
)
def test_bad_extended_entries_are_named(tmp_path: Path, text: str, key: str):
    (problem,) = problems_of(tmp_path, text)
    assert f"`{key}`" in problem


def test_a_plugin_sections_node_overrides_resolve_node_names_and_name_unknown_ones(tmp_path: Path):
    import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the `cache` section)
    from budgetgraph.budgets.cache import CacheSettings

    good = load(tmp_path, "budgets: {}\ncache:\n  nodes:\n    cto_agent: {enabled: false}\n")
    settings = good.section("cache", CacheSettings)
    bad = load(tmp_path, "budgets: {}\ncache:\n  nodes:\n    cto_agent: {enabled: false}\n    reconcil: {}\n")

    assert not settings.enabled_for("cto") and settings.enabled_for("coo")
    with pytest.raises(ConfigError) as info:
        bad.section("cache", CacheSettings)
    (problem,) = info.value.problems
    assert problem.startswith(
        f"{tmp_path / 'budgets.yaml'}:5: `cache.nodes.reconcil`: unknown node `reconcil`"
    )
