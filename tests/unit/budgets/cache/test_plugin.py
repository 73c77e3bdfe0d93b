"""The ``cache`` plugin: what it serves, what it stores, and the namespaces it never crosses."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the plugin)
from budgetgraph.agents.tools import calculate
from budgetgraph.budgets import CallRequest, CallResult, ConfigError, ModelCall, load_budgets, load_models
from budgetgraph.budgets.cache import CacheSettings, Guard, SemanticCache
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cache.stores.redis import RedisStore
from budgetgraph.budgets.cache.stores.sqlite import SqliteStore
from budgetgraph.budgets.config import ModelsConfig
from budgetgraph.budgets.plugins.base import build_chain
from budgetgraph.budgets.plugins.cache import CachePlugin, Prompt, namespace_of
from budgetgraph.graph.builder import NODE_NAMES
from budgetgraph.settings import load_settings
from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer
from tests.unit.budgets.cache.conftest import HashingEmbedder


class Verdict(BaseModel):
    verdict: str
    score: int


class Other(BaseModel):
    verdict: str


SYSTEM = SystemMessage("You are the CTO reviewing a business decision.")
TASK = "Should we move billing to microservices with 6 engineers and a PCI audit in 4 months?"


class Model:
    """Stands in for the rest of the chain: answers every request and counts them."""

    def __init__(self, cost: int = 1234) -> None:
        self.requests: list[CallRequest] = []
        self.cost = cost
        self.reply: Callable[[CallRequest], CallResult] | None = None

    def __call__(self, request: CallRequest) -> CallResult:
        self.requests.append(request)
        if self.reply is not None:
            return self.reply(request)
        output = request.schema.model_validate({"verdict": f"answer {len(self.requests)}", "score": 3})
        return CallResult(output=output, calls=[row(request, cost=self.cost)])


def row(request: CallRequest, *, cost: int, tool_calls: int = 0) -> ModelCall:
    return ModelCall(
        node=request.node,
        tier=request.tier,
        model="gpt-4.1-mini-2025-04-14",
        input_tokens=100,
        output_tokens=50,
        cache_read_tokens=0,
        reasoning_tokens=0,
        cost_micro_usd=cost,
        priced=True,
        latency_ms=900,
        cache_hit=False,
        tool_calls=tool_calls,
        decisions=list(request.decisions),
    )


@pytest.fixture
def models(tmp_path: Path) -> ModelsConfig:
    return load_models(write_models(tmp_path / "models.yaml", "http://127.0.0.1:9/v1"))


def plugin_for(models: ModelsConfig, settings: CacheSettings | None = None, cache=None) -> CachePlugin:
    cache = cache or SemanticCache(MemoryStore(), HashingEmbedder(), guard=Guard(), flush_s=0)
    return CachePlugin(settings or CacheSettings(threshold=0.5), models, cache=cache)


def request(
    text: str = TASK,
    *,
    system: BaseMessage = SYSTEM,
    node: str = "cto",
    tier: str = "standard",
    tenant: str = "acme",
    schema: type[BaseModel] = Verdict,
    messages: list[BaseMessage] | None = None,
    tools=(),
) -> CallRequest:
    return CallRequest(
        node=node,
        messages=tuple(messages or [system, HumanMessage(text)]),
        schema=schema,
        tier=tier,  # type: ignore[arg-type]
        local=lambda: Verdict(verdict="local", score=1),
        tenant=tenant,
        tools=tuple(tools),
    )


def test_a_repeated_request_is_served_from_the_cache_with_what_it_saves(models: ModelsConfig):
    plugin, model = plugin_for(models), Model(cost=1234)
    first = plugin.wrap(request(), model)

    again = plugin.wrap(request(), model)

    assert len(model.requests) == 1
    assert again.output == first.output
    (call,) = again.calls
    assert call["cache_hit"] and call["cost_micro_usd"] == 0 and call["input_tokens"] == 0
    assert call["saved_micro_usd"] == 1234 and call["model"] == "gpt-4.1-mini-2025-04-14"
    assert call["tier"] == "standard"
    (decision,) = call["decisions"]
    assert decision["plugin"] == "cache" and decision["action"] == "hit-exact"
    assert decision["reason"] == "exact match; saves 0.001234 USD (gpt-4.1-mini-2025-04-14)"


def test_a_paraphrase_is_a_semantic_hit(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    plugin.wrap(request(TASK), model)

    served = plugin.wrap(request(TASK.replace("Should we move", "Should we really move")), model)

    assert len(model.requests) == 1
    assert served.calls[0]["decisions"][-1]["action"] == "hit-semantic"


def test_the_subject_not_the_prompt_is_what_a_semantic_lookup_compares(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    brief = "Objective: decide on the billing split. Questions: who owns the PCI scope?"
    plugin.wrap(request(messages=[SYSTEM, HumanMessage(f"{TASK}\n\n{brief}")]).evolve(subject=TASK), model)

    # Another brief around the same decision: the subjects match, so the answer is served.
    other_brief = f"{TASK}\n\nObjective: staffing. Questions: can 6 engineers carry it?"
    served = plugin.wrap(request(messages=[SYSTEM, HumanMessage(other_brief)]).evolve(subject=TASK), model)
    # A prompt close to the first about another decision: the subjects differ, the guard refuses.
    opposite = TASK.replace("to microservices", "back to a monolith")
    near = request(messages=[SYSTEM, HumanMessage(f"{TASK}\n\n{brief} Who signs off?")])
    refused = plugin.wrap(near.evolve(subject=opposite), model)

    assert served.calls[0]["decisions"][-1]["action"] == "hit-semantic"
    assert not refused.calls[0]["cache_hit"]
    assert len(model.requests) == 2
    assert model.requests[1].subject == opposite


def test_a_guard_refusal_is_recorded_on_the_call_that_follows(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    plugin.wrap(request(TASK), model)

    result = plugin.wrap(request(TASK.replace("6 engineers", "9 engineers")), model)

    assert len(model.requests) == 2 and not result.calls[0]["cache_hit"]
    (decision,) = result.calls[0]["decisions"]
    assert decision["action"] == "refused" and decision["reason"].startswith("quantity: 9 vs 6")


@pytest.mark.parametrize(
    ("boundary", "changed"),
    [
        ("tenant", {"tenant": "globex"}),
        ("node", {"node": "coo"}),
        ("tier and model", {"tier": "premium"}),
        ("output schema", {"schema": Other}),
        ("prompt version", {"system": SystemMessage("You are the COO reviewing a business decision.")}),
        ("tools offered", {"tools": [calculate]}),
    ],
)
def test_an_entry_is_never_served_across_a_namespace_boundary(
    models: ModelsConfig, boundary: str, changed: dict
):
    plugin, model = plugin_for(models), Model()
    plugin.wrap(request(), model)

    result = plugin.wrap(request(**changed), model)

    assert len(model.requests) == 2, f"served across the {boundary} boundary"
    assert not result.calls[0]["cache_hit"]
    assert plugin.wrap(request(**changed), model).calls[0]["cache_hit"]  # its own entry is served


@pytest.mark.parametrize(
    ("boundary", "base_url", "settings"),
    [
        ("temperature", "http://127.0.0.1:9/v1", {"temperature": 0.9}),
        ("completion cap", "http://127.0.0.1:9/v1", {"max_output_tokens": 512}),
        ("server", "http://127.0.0.1:8/v1", {}),
        ("provider", "http://127.0.0.1:9/v1", {"provider": "vllm"}),
    ],
)
def test_sampling_settings_and_the_models_server_are_part_of_the_namespace(
    models: ModelsConfig, tmp_path: Path, boundary: str, base_url: str, settings: dict
):
    cache = SemanticCache(MemoryStore(), HashingEmbedder(), flush_s=0)
    model = Model()
    plugin_for(models, cache=cache).wrap(request(), model)
    other = load_models(write_models(tmp_path / "other.yaml", base_url, **settings))

    plugin_for(other, cache=cache).wrap(request(), model)

    assert len(model.requests) == 2, f"served across the {boundary} boundary"
    assert plugin_for(models, cache=cache).wrap(request(), model).calls[0]["cache_hit"]


def test_a_tool_call_turn_is_served_again_with_fresh_call_ids(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    model.reply = lambda r: CallResult(
        tool_calls=[{"name": "calculate", "args": {"expression": "6*40*4"}, "id": "c1", "type": "tool_call"}],
        message=AIMessage(
            "", tool_calls=[{"name": "calculate", "args": {"expression": "6*40*4"}, "id": "c1"}]
        ),
        calls=[row(r, cost=10, tool_calls=1)],
    )
    first = plugin.wrap(request(tools=[calculate]), model)
    second = plugin.wrap(request(tools=[calculate]), model)

    assert len(model.requests) == 1
    assert first.calls[0]["cache"] == "miss" and second.calls[0]["cache"] == "exact"
    assert [(c["name"], c["args"]) for c in second.tool_calls] == [("calculate", {"expression": "6*40*4"})]
    assert second.message is not None and second.message.tool_calls == second.tool_calls
    assert second.tool_calls[0]["id"] != "c1" and second.calls[0]["saved_micro_usd"] == 10


def test_answers_that_failed_the_schema_and_the_local_tier_are_never_stored(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    model.reply = lambda r: CallResult(
        message=AIMessage("{"), parse_error="bad JSON", calls=[row(r, cost=10)]
    )
    plugin.wrap(request(), model)
    plugin.wrap(request(), model)
    model.reply = None
    plugin.wrap(request(tier="local"), model)
    plugin.wrap(request(tier="local"), model)

    assert len(model.requests) == 4
    assert plugin.cache.store.stats() == [] or all(s.entries == 0 for s in plugin.cache.store.stats())


def test_a_conversation_with_tool_results_is_matched_exactly_only():
    turn = [
        SYSTEM,
        HumanMessage(TASK),
        AIMessage("", tool_calls=[{"name": "calculate", "args": {"expression": "6*4"}, "id": "call_1"}]),
        ToolMessage("24", tool_call_id="call_1"),
    ]
    same_turn_other_ids = [
        *turn[:2],
        AIMessage("", tool_calls=[{"name": "calculate", "args": {"expression": "6*4"}, "id": "call_2"}]),
        ToolMessage("24", tool_call_id="call_2"),
    ]

    prompt = Prompt(turn, [calculate])

    assert prompt.text is None
    assert prompt.key == Prompt(same_turn_other_ids, [calculate]).key
    assert (
        Prompt([SYSTEM, HumanMessage(f"  {TASK}\n")], []).key == Prompt([SYSTEM, HumanMessage(TASK)], []).key
    )
    assert Prompt([SYSTEM, HumanMessage(TASK)], []).text == TASK


def test_node_settings_turn_the_cache_or_its_semantic_lookups_off(models: ModelsConfig):
    settings = CacheSettings.model_validate(
        {"threshold": 0.5, "nodes": {"planner": {"enabled": False}, "coo": {"semantic": False}}}
    )
    plugin, model = plugin_for(models, settings), Model()

    plugin.wrap(request(node="planner"), model)
    plugin.wrap(request(node="planner"), model)
    plugin.wrap(request(node="coo"), model)
    paraphrase = plugin.wrap(
        request(TASK.replace("Should we move", "Should we really move"), node="coo"), model
    )
    exact = plugin.wrap(request(node="coo"), model)

    assert len(model.requests) == 4
    assert not paraphrase.calls[0]["cache_hit"] and exact.calls[0]["cache_hit"]


def test_a_broken_store_never_fails_the_call(models: ModelsConfig, caplog: pytest.LogCaptureFixture):
    class Broken(MemoryStore):
        def find(self, namespace, key):
            raise ConnectionError("store down")

    plugin, model = plugin_for(models, cache=SemanticCache(Broken(), HashingEmbedder())), Model()

    with caplog.at_level(logging.WARNING, logger="budgetgraph.budgets.plugins.cache"):
        result = plugin.wrap(request(), model)

    assert result.output is not None and len(model.requests) == 1
    assert "Cache lookup failed for node `cto`" in caplog.text


def budgets_file(tmp_path: Path, text: str):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return load_budgets(path, node_names=NODE_NAMES)


def test_the_cache_section_is_validated_and_every_problem_named_with_its_line(tmp_path: Path):
    budgets = budgets_file(
        tmp_path, "budgets: {}\ncache:\n  threshold: 2\n  store: ftp://nowhere\n  colour: blue\n"
    )

    with pytest.raises(ConfigError) as info:
        budgets.section("cache", CacheSettings)

    problems = "\n".join(info.value.problems)
    assert "budgets.yaml:3: `cache.threshold`: Input should be less than or equal to 1" in problems
    assert "budgets.yaml:4: `cache.store`: Value error, use `disk`, `memory:` or a redis:// URL" in problems
    assert "budgets.yaml:5: `cache.colour`: unknown key" in problems


def test_the_plugin_opens_its_store_lazily_where_the_settings_say(
    tmp_path: Path, models: ModelsConfig, monkeypatch: pytest.MonkeyPatch
):

    budgets = budgets_file(tmp_path, "budgets: {}\ncache:\n  path: my-cache\n  ttl_s: 60\n")
    context = plugin_context(models, budgets)

    (disk,) = build_chain(["cache"], context, source="test")
    assert not (tmp_path / "my-cache").exists()  # nothing opened yet
    assert isinstance(disk.cache.store, SqliteStore) and (tmp_path / "my-cache" / "entries.sqlite").exists()
    assert disk.cache.store.eviction.ttl_s == 60
    disk.close()

    monkeypatch.setenv("BUDGETGRAPH_CACHE_URL", "redis://127.0.0.1:6399/0")
    (shared,) = build_chain(["cache"], plugin_context(models, budgets), source="test")
    monkeypatch.delenv("BUDGETGRAPH_CACHE_URL")  # read with the settings, not later
    assert isinstance(shared.cache.store, RedisStore)


def test_an_openai_compatible_endpoint_can_embed(
    tmp_path: Path, models: ModelsConfig, openai_server: FakeOpenAIServer
):
    settings = CacheSettings.model_validate(
        {
            "threshold": 0.5,
            "store": "memory:",
            "embedder": {"base_url": openai_server.base_url, "model": "text-embedding-3-small"},
        }
    )
    plugin, model = CachePlugin(settings, models), Model()

    plugin.wrap(request(TASK), model)
    served = plugin.wrap(request(TASK.replace("Should we move", "Should we really move")), model)

    assert served.calls[0]["cache_hit"] and len(model.requests) == 1
    assert plugin.cache.embedder.name == "endpoint:text-embedding-3-small"
    assert any(r.path.endswith("/embeddings") for r in openai_server.requests)


def test_the_environment_can_switch_the_cache_off(
    tmp_path: Path, models: ModelsConfig, monkeypatch: pytest.MonkeyPatch
):
    budgets = budgets_file(tmp_path, "budgets: {}\n")
    monkeypatch.setenv("BUDGETGRAPH_CACHE", "off")
    (plugin,) = build_chain(["cache"], plugin_context(models, budgets), source="test")
    model = Model()

    plugin.wrap(request(), model)
    plugin.wrap(request(), model)

    assert len(model.requests) == 2 and not (tmp_path / ".budgetgraph").exists()
    monkeypatch.setenv("BUDGETGRAPH_CACHE", "sometimes")
    with pytest.raises(ConfigError, match="`BUDGETGRAPH_CACHE` / `--cache/--no-cache`: use on or off"):
        plugin_context(models, budgets)


def test_importing_the_graph_and_the_cache_plugin_loads_neither_faiss_nor_torch():
    code = (
        "import sys, budgetgraph.graph.builder, budgetgraph.graph.cli, budgetgraph.budgets.plugins.cache; "
        "print([m for m in ('faiss', 'torch', 'sentence_transformers') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_stored_answer_that_no_longer_fits_its_schema_is_a_miss_in_the_counters(models: ModelsConfig):
    plugin, model = plugin_for(models), Model()
    asked = request()
    plugin.wrap(asked, model)
    prompt = Prompt(asked.messages, asked.tools)
    plugin.cache.put(
        namespace_of(asked, prompt, models, plugin.cache.embedder.name),
        key=prompt.key,
        text=prompt.text,
        response={"verdict": "no score"},  # written before the schema gained `score`
        model="m",
        cost_micro_usd=99,
    )

    result = plugin.wrap(asked, model)

    assert len(model.requests) == 2 and result.calls[0]["cache"] == "miss"
    (stats,) = plugin.cache.store.stats()
    assert stats.counts.exact_hits == stats.counts.semantic_hits == 0
    assert stats.counts.misses == 2 and stats.counts.saved_micro_usd == 0


def test_a_verifier_that_cannot_be_used_fails_when_the_plugin_is_registered(
    tmp_path: Path, models: ModelsConfig
):
    budgets = budgets_file(tmp_path, "budgets: {}\ncache:\n  verifier: /nowhere/verifier.json\n")

    with pytest.raises(
        ConfigError,
        match=r"budgets.yaml:3: `cache.verifier`: /nowhere/verifier.json: cannot read the verifier",
    ):
        build_chain(["cache"], plugin_context(models, budgets), source="test")


def plugin_context(models: ModelsConfig, budgets):
    """What a gateway gives its plugins: the models and budgets, no prices, an in-memory ledger."""
    from budgetgraph.budgets.ledger import open_ledger
    from budgetgraph.budgets.plugins.base import PluginContext
    from budgetgraph.budgets.pricing import PriceBook

    return PluginContext(
        models=models,
        budgets=budgets,
        prices=PriceBook({}),
        ledger=open_ledger("memory:"),
        settings=load_settings(),
    )


# -- confirmation by model (issue #19) -------------------------------------------------

PARAPHRASE = TASK.replace("Should we move", "Should we really move")  # cosine 0.966 with TASK


def confirming(models: ModelsConfig, band: list[float]) -> CachePlugin:
    settings = CacheSettings.model_validate({"threshold": 0.5, "confirm": {"band": band}})
    return plugin_for(models, settings)


def questions(server: FakeOpenAIServer) -> list:
    return [r for r in server.chat_requests() if r.schema == "CacheConfirmation"]


def answers(server: FakeOpenAIServer) -> list:
    return [r for r in server.chat_requests() if r.schema == "Verdict"]


@pytest.fixture
def served(tmp_path: Path, openai_server: FakeOpenAIServer) -> tuple[ModelsConfig, Callable]:
    """Models on the fake server, and the chat model as the rest of the chain."""
    from budgetgraph.budgets.chat import ChatModels
    from budgetgraph.budgets.pricing import PriceBook

    models = load_models(write_models(tmp_path / "served.yaml", openai_server.base_url))
    return models, ChatModels(models, PriceBook(models.file.prices)).invoke


def test_a_hit_in_the_confirmation_band_is_asked_about_and_served_on_yes(
    served: tuple[ModelsConfig, Callable], openai_server: FakeOpenAIServer
):
    models, chat = served
    openai_server.set_fields("CacheConfirmation", same_decision=True, reason="Same decision, reworded.")
    plugin = confirming(models, [0.5, 0.99])
    first = plugin.wrap(request(TASK), chat)

    result = plugin.wrap(request(PARAPHRASE), chat)

    assert len(answers(openai_server)) == 1 and result.output == first.output
    (question,) = questions(openai_server)
    assert question.body["model"] == "gpt-4.1-nano"  # economy: the cheapest tier by price
    assert TASK in question.messages[-1]["content"] and PARAPHRASE in question.messages[-1]["content"]
    asked, hit = result.calls
    assert asked["node"] == "cto" and asked["tier"] == "economy" and not asked["cache_hit"]
    assert asked["input_tokens"] > 0 and asked["output_tokens"] > 0 and asked["cost_micro_usd"] > 0
    assert "cache" not in asked and "saved_micro_usd" not in asked
    (decision,) = asked["decisions"]
    assert (decision["plugin"], decision["action"]) == ("cache", "confirm")
    assert decision["reason"].startswith("similarity 0.966 in the band [0.5, 0.99)")
    assert hit["cache_hit"] and hit["cache"] == "semantic" and hit["saved_micro_usd"] > 0
    assert "confirmed by gpt-4.1-nano" in hit["decisions"][-1]["reason"]
    assert "Same decision, reworded." in hit["decisions"][-1]["reason"]


def test_a_no_refuses_the_candidate_like_the_guard_with_its_reason_on_the_row(
    served: tuple[ModelsConfig, Callable], openai_server: FakeOpenAIServer
):
    models, chat = served
    openai_server.set_fields("CacheConfirmation", same_decision=False, reason="The new one asks for speed.")
    plugin = confirming(models, [0.5, 0.99])
    plugin.wrap(request(TASK), chat)

    result = plugin.wrap(request(PARAPHRASE), chat)

    assert len(questions(openai_server)) == 1 and len(answers(openai_server)) == 2
    asked, called = result.calls
    assert asked["decisions"][0]["action"] == "confirm" and asked["cost_micro_usd"] > 0
    assert not called["cache_hit"] and called["cache"] == "refused" and called["cost_micro_usd"] > 0
    refusal = called["decisions"][-1]
    assert refusal["plugin"] == "cache" and refusal["action"] == "refused"
    assert refusal["reason"].startswith("confirm: The new one asks for speed. (similarity 0.966")
    (stats,) = plugin.cache.store.stats()
    assert stats.counts.semantic_hits == 0 and stats.counts.saved_micro_usd == 0
    assert stats.counts.misses == 2 and stats.counts.refusals == 1
    assert stats.counts.refusals_by_category() == {"other": 1}


def test_a_hit_above_the_band_is_served_without_asking(
    served: tuple[ModelsConfig, Callable], openai_server: FakeOpenAIServer
):
    models, chat = served
    plugin = confirming(models, [0.5, 0.95])
    plugin.wrap(request(TASK), chat)

    result = plugin.wrap(request(PARAPHRASE), chat)

    assert questions(openai_server) == [] and len(answers(openai_server)) == 1
    (hit,) = result.calls
    assert hit["cache"] == "semantic" and "confirm" not in hit["decisions"][-1]["reason"]


def test_a_verdict_is_asked_once_per_stored_entry_and_request(
    served: tuple[ModelsConfig, Callable], openai_server: FakeOpenAIServer
):
    models, chat = served
    openai_server.set_fields("CacheConfirmation", same_decision=True, reason="Same.")
    plugin = confirming(models, [0.5, 0.99])
    plugin.wrap(request(TASK), chat)
    plugin.wrap(request(PARAPHRASE), chat)

    again = plugin.wrap(request(PARAPHRASE), chat)

    assert len(questions(openai_server)) == 1 and len(answers(openai_server)) == 1
    (hit,) = again.calls  # no question, so no row for one
    assert hit["cache_hit"] and "confirmed by remembered verdict: Same." in hit["decisions"][-1]["reason"]


def test_without_a_model_endpoint_nothing_is_asked_and_the_guard_decides(tmp_path: Path):
    path = tmp_path / "offline.yaml"
    path.write_text(
        "default_tier: standard\ntiers:\n"
        + "".join(
            f"  {t}: {{model: {m}}}\n" for t, m in (("economy", "a"), ("standard", "b"), ("premium", "c"))
        )
    )
    models = load_models(path, env={})
    plugin, model = confirming(models, [0.5, 0.99]), Model()
    plugin.wrap(request(TASK), model)

    result = plugin.wrap(request(PARAPHRASE), model)

    assert len(model.requests) == 1  # the first call only: no question was sent down the chain
    (hit,) = result.calls
    assert (
        hit["cache_hit"] and "not confirmed (no model tier has an endpoint)" in hit["decisions"][-1]["reason"]
    )


def test_the_question_goes_to_the_cheapest_tier_by_price_not_the_lowest(tmp_path: Path):
    from budgetgraph.budgets.cache.confirm import cheapest_tier
    from budgetgraph.budgets.pricing import PriceBook

    path = tmp_path / "inverted.yaml"
    path.write_text(
        "default_tier: standard\ntiers:\n"
        "  economy: {model: gpt-4.1, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  standard: {model: gpt-4.1-mini, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  premium: {model: gpt-4.1-nano, base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    models = load_models(path, env={})

    assert cheapest_tier(models, PriceBook(models.file.prices), input_tokens=400) == "premium"


def test_the_confirmation_settings_are_validated_with_their_lines(tmp_path: Path):
    budgets = budgets_file(
        tmp_path,
        "budgets: {}\ncache:\n  confirm: {band: [0.9, 0.8]}\n  nodes:\n    cto: {confirm: true}\n",
    )

    with pytest.raises(ConfigError) as info:
        budgets.section("cache", CacheSettings)

    problems = "\n".join(info.value.problems)
    assert "budgets.yaml:3: `cache.confirm.band`: Value error, give `[low, high]`" in problems
    assert "budgets.yaml:5: `cache.nodes.cto.confirm`" in problems
