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
        "tiers:\n  premium: {model: big, base_url: 'http://127.0.0.1:1/v1', api_key_env: BIG_API_KEY}\n"
        "prices:\n  big: {input_per_mtok: 1, output_per_mtok: 2}\n"
    )
    models = load_models(path, env={"BIG_API_KEY": "k"})
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


# --------------------------------------------------------------------------- hostile files


SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"


class RecordingEnv(dict):
    """Environment variables that remember which were read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key, default=None):
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def models_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("budgets:\n  cto_agent: {max_tokens: yes}\n", "budgets.cto_agent.max_tokens"),
        ("budgets:\n  cto_agent: {max_tool_calls: true}\n", "budgets.cto_agent.max_tool_calls"),
        ("budgets:\n  cto_agent: {max_cost_usd: yes}\n", "budgets.cto_agent.max_cost_usd"),
        ("nodes:\n  cto: {alerts: [yes]}\n", "nodes.cto.alerts.0"),
        ("windows:\n  daily: {pacing: {factor: on}}\n", "windows.daily.pacing.factor"),
        ("budgets:\n  cto_agent: {max_tokens: 5.0}\n", "budgets.cto_agent.max_tokens"),
        ("budgets:\n  cto_agent: {max_tokens: '5'}\n", "budgets.cto_agent.max_tokens"),
    ],
)
def test_yaml_booleans_floats_and_text_are_not_integers(tmp_path: Path, text: str, key: str):
    (problem,) = problems_of(tmp_path, text)
    assert f"`{key}`" in problem


def test_a_boolean_tier_setting_is_not_a_number_either(tmp_path: Path):
    path = models_file(tmp_path, "tiers:\n  economy: {model: m, max_output_tokens: yes, temperature: no}\n")
    with pytest.raises(ConfigError) as info:
        load_models(path, env={})
    assert [p.split("`")[1] for p in info.value.problems] == [
        "tiers.economy.temperature",
        "tiers.economy.max_output_tokens",
    ]


def test_integers_are_still_numbers_where_a_fraction_is_expected(tmp_path: Path):
    budgets = load(tmp_path, "nodes:\n  cto: {alerts: [1]}\nwindows:\n  daily: {pacing: {factor: 2}}\n")
    assert budgets.node("cto").alerts == (1.0,)
    assert budgets.windows_for("anyone").daily.pacing.factor == 2.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("task: 5\n", "1: `task`: expected a mapping of limits"),
        ("tenants: [a, b]\n", "1: `tenants`: expected a mapping of tenant names to windows"),
        ("tenants: {acme: 5}\n", "1: `tenants.acme`: expected a mapping of windows (hourly, daily, monthly)"),
        ("windows: 3\n", "1: `windows`: expected a mapping of windows (hourly, daily, monthly)"),
        ("budgets: [x]\n", "1: `budgets`: expected a mapping of node names to budgets"),
        ("budgets: 0\n", "1: `budgets`: expected a mapping of node names to budgets"),
        ("nodes: []\n", "1: `nodes`: expected a mapping of node names to budgets"),
        ("plugins: 5\n", "1: `plugins`: expected a list of plugin names"),
    ],
)
def test_every_section_of_the_wrong_type_is_one_clear_problem(tmp_path: Path, text: str, problem: str):
    assert problems_of(tmp_path, text) == [f"{tmp_path / 'budgets.yaml'}:{problem}"]


def test_a_plugin_section_of_the_wrong_type_is_a_problem_not_the_defaults(tmp_path: Path):
    from budgetgraph.budgets.routing.settings import RouterSettings

    budgets = load(tmp_path, "router: []\n")
    with pytest.raises(ConfigError) as info:
        budgets.section("router", RouterSettings)
    assert info.value.problems == [f"{tmp_path / 'budgets.yaml'}:1: `router`: expected a mapping"]


def test_the_total_task_budget_is_checked_even_beside_a_task_section(tmp_path: Path):
    (problem,) = problems_of(
        tmp_path, "budgets:\n  total_task_budget: {max_latency_ms: 5}\ntask: {max_tokens: 10}\n"
    )
    where = f"{tmp_path / 'budgets.yaml'}:2"
    assert problem == f"{where}: `budgets.total_task_budget.max_latency_ms`: unknown key"


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path):
    (problem,) = problems_of(
        tmp_path, "budgets:\n  cto_agent: {max_tokens: 10}\n  coo_agent: {}\n  cto_agent: {max_tokens: 99}\n"
    )
    assert problem == f"{tmp_path / 'budgets.yaml'}:4: `budgets`: `cto_agent` given at line 2 and at line 4"


@pytest.mark.parametrize("loader", ["budgets", "models"])
def test_a_shadow_file_given_as_configuration_never_appears_in_the_error(tmp_path: Path, loader: str):
    path = tmp_path / "shadow"
    path.write_text(SHADOW)

    with pytest.raises(ConfigError) as info:
        if loader == "budgets":
            load_budgets(path, node_names=NODE_NAMES)
        else:
            load_models(path, env={})

    message = str(info.value).replace(str(path), "<path>")  # the temporary folder is named after root
    assert info.value.problems == [f"{path}:{n}: an unknown key at line {n}" for n in (1, 2, 3)]
    for word in ("root", "daemon", "nobody", "19000", "99999", ":*:"):
        assert word not in message


def test_values_from_the_file_are_never_echoed(tmp_path: Path):
    problems = problems_of(
        tmp_path,
        "budgets:\n  cto: {max_tokens: 'hunter2', on_exceed: 'hunter2'}\n"
        "plugins: ['hunter2 hunter2', limits]\n"
        "'hunter2 hunter2': 1\n",
    )
    assert len(problems) == 4
    assert not any("hunter2" in p for p in problems)


def test_an_unknown_node_with_a_strange_name_is_described_by_its_line(tmp_path: Path):
    (problem,) = problems_of(tmp_path, "budgets:\n  'cto; rm -rf /': {max_tokens: 5}\n")
    where = f"{tmp_path / 'budgets.yaml'}:2"
    assert problem.startswith(f"{where}: the key at line 2 under `budgets`: unknown node; known: ")
    assert "rm -rf" not in problem


def test_an_api_key_variable_not_ending_in_api_key_is_refused_and_never_read(tmp_path: Path):
    path = models_file(tmp_path, "tiers:\n  premium:\n    model: big\n    api_key_env: DATABASE_PASSWORD\n")
    env = RecordingEnv({"DATABASE_PASSWORD": "hunter2"})

    with pytest.raises(ConfigError) as info:
        load_models(path, env=env)

    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4: `tiers.premium.api_key_env`:")
    assert "hunter2" not in problem and "DATABASE_PASSWORD" not in problem
    assert env.read == []


def test_an_api_key_variable_ending_in_api_key_is_accepted(tmp_path: Path):
    path = models_file(tmp_path, "tiers:\n  premium: {model: big, api_key_env: MY_API_KEY}\n")
    models = load_models(path, env={"MY_API_KEY": "k"})
    assert models.endpoints["premium"].api_key == "k"


def test_the_operator_may_allow_other_key_variables_by_exact_name(tmp_path: Path):
    path = models_file(tmp_path, "tiers:\n  premium: {model: big, api_key_env: VLLM_TOKEN}\n")

    models = load_models(path, env={"VLLM_TOKEN": "k"}, allowed_key_env=["VLLM_TOKEN"])

    assert models.endpoints["premium"].api_key == "k"
    with pytest.raises(ConfigError, match="api_key_env"):
        load_models(path, env={"VLLM_TOKEN": "k"}, allowed_key_env=["VLLM_TOKEN_2"])


def test_the_cache_embedders_api_key_variable_follows_the_same_rule(tmp_path: Path):
    import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the `cache` section)
    from budgetgraph.budgets.cache import CacheSettings

    path = tmp_path / "budgets.yaml"
    path.write_text("budgets: {}\ncache:\n  embedder: {model: m, api_key_env: DATABASE_PASSWORD}\n")

    with pytest.raises(ConfigError) as info:
        load_budgets(path, node_names=NODE_NAMES).section("cache", CacheSettings)
    allowed = load_budgets(path, node_names=NODE_NAMES, allowed_key_env=["DATABASE_PASSWORD"])

    assert any(
        p.startswith(f"{path}:3: `cache.embedder.EndpointEmbedderSettings.api_key_env`:")
        for p in info.value.problems
    )
    assert allowed.section("cache", CacheSettings).embedder.api_key_env == "DATABASE_PASSWORD"
