"""Plugins: the registry, entry points, and chains named in YAML."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

import budgetgraph.budgets.plugins.base as base
from budgetgraph.agents.schemas import PlanBrief
from budgetgraph.budgets import ConfigError, Gateway, load_budgets, load_models
from budgetgraph.graph.builder import NODE_NAMES

PLUGIN_MODULE = """
from budgetgraph.budgets.request import CallResult

class Tagger:
    name = "tagger"

    def wrap(self, request, call_next):
        return call_next(request.decide("tagger", "tag", "seen by a third-party plugin"))

def factory(context):
    return Tagger()
"""


@pytest.fixture
def third_party_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a plugin distribution the way pip would: a module and its entry point."""
    site = tmp_path / "site"
    (site / "budgetgraph_tagger-0.1.dist-info").mkdir(parents=True)
    (site / "budgetgraph_tagger.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    (site / "budgetgraph_tagger-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: budgetgraph-tagger\nVersion: 0.1\n"
    )
    (site / "budgetgraph_tagger-0.1.dist-info" / "entry_points.txt").write_text(
        "[budgetgraph.plugins]\ntagger = budgetgraph_tagger:factory\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(base, "_entry_points_loaded", False)
    yield
    base._REGISTRY.pop("tagger", None)
    sys.modules.pop("budgetgraph_tagger", None)


def test_a_third_party_plugin_is_loaded_by_name_from_yaml(
    third_party_package, tmp_path, models_file, openai_server
):
    path = tmp_path / "budgets.yaml"
    path.write_text("plugins: [router, tagger, limits]\n")
    gateway = Gateway(load_models(models_file), load_budgets(path, node_names=NODE_NAMES))
    session = gateway.session("planner")

    session.ask([SystemMessage("You are the planner"), HumanMessage("Decide")], PlanBrief, local=lambda: None)

    assert [p.name for p in gateway.chain("planner")] == ["router", "tagger", "limits"]
    assert session.calls[0]["decisions"] == [
        {"plugin": "tagger", "action": "tag", "reason": "seen by a third-party plugin"}
    ]


def test_a_node_can_have_its_own_chain(tmp_path, models_file):
    path = tmp_path / "budgets.yaml"
    path.write_text("nodes:\n  cto: {plugins: [limits]}\n")
    gateway = Gateway(load_models(models_file), load_budgets(path, node_names=NODE_NAMES))
    assert [p.name for p in gateway.chain("cto")] == ["limits"]
    assert [p.name for p in gateway.chain("coo")] == ["router", "cache", "limits"]


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("budgets: {}\nplugins:\n  - router\n  - nope\n", ":4: `plugins.1`: unknown plugin `nope`"),
        (
            "plugins: [router, limits]\nnodes:\n  cto: {plugins: [limits, cache, limits]}\n",
            ":3: `nodes.cto.plugins.2`: plugin `limits` is already in this chain",
        ),
    ],
)
def test_a_bad_chain_in_yaml_names_file_line_and_key(tmp_path, yaml_text: str, problem: str):
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_budgets(path, node_names=NODE_NAMES)
    assert f"{path}{problem}" in str(info.value)


def test_registering_a_bad_factory_fails_at_once():
    with pytest.raises(ValueError, match="not callable"):
        base.register("broken", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        base.register("limits", lambda context: None)


def test_a_factory_that_makes_no_plugin_is_named(tmp_path, models_file, monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "hollow", lambda context: object())
    path = tmp_path / "budgets.yaml"
    path.write_text("plugins: [hollow]\n")
    with pytest.raises(ConfigError, match="plugin `hollow`: its factory returned"):
        Gateway(load_models(models_file), load_budgets(path, node_names=NODE_NAMES))
