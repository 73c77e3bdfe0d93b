"""Tests for the fake OpenAI server, driven through the real ``ChatOpenAI`` client."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from typing import Literal

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field, TypeAdapter

from .openai_server import (
    FakeOpenAIServer,
    agent_from_system_prompt,
    embed_text,
    estimate_prompt_tokens,
    generate_from_schema,
)

# ChatOpenAI silently downgrades method="json_schema" to "function_calling" for
# gpt-3*/gpt-4/gpt-4-* model names (the default is gpt-3.5-turbo).
MODEL = "gpt-4o-mini"
CTO_PROMPT = "You are the CTO of Acme. Decide on the budget."


class LineItem(BaseModel):
    """One budget line."""

    name: str = Field(min_length=3, max_length=12)
    cost: float = Field(ge=0, le=100)
    quantity: int = Field(gt=0, lt=10)


class BudgetDecision(BaseModel):
    """A budget decision."""

    summary: str
    verdict: Literal["approve", "reject"]
    items: list[LineItem] = Field(min_length=1, max_length=3)
    confidence: int = Field(ge=0, le=100)
    note: str | None = None
    tags: dict[str, int]
    urgent: bool


@tool
def calculate(expression: str) -> str:
    """Evaluate a tiny arithmetic expression."""
    left, right = expression.split("+")
    return str(int(left) + int(right))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """Run a fresh fake server for one test."""
    with FakeOpenAIServer() as fake:
        yield fake


def make_llm(server: FakeOpenAIServer, **kwargs: object) -> ChatOpenAI:
    """Build a ChatOpenAI client pointed at the fake server."""
    return ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="test", max_retries=0, **kwargs)


def test_plain_invoke(server: FakeOpenAIServer) -> None:
    """Plain invoke returns deterministic text and reports usage."""
    llm = make_llm(server)
    message = llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("How much for servers?")])
    again = llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("How much for servers?")])

    assert message.content == again.content
    assert message.content == "Fake response from the cto agent to: How much for servers?"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == MODEL
    assert message.response_metadata["system_fingerprint"] == "fp_fake_openai"
    assert message.id != again.id
    recorded = server.chat_requests("cto")
    assert len(recorded) == 2
    assert recorded[0].schema is None and recorded[0].stream is False
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == estimate_prompt_tokens(recorded[0].body)


def test_model_override() -> None:
    """The ``model`` option overrides the reported model name."""
    with FakeOpenAIServer(model="fake-model-1") as fake:
        message = make_llm(fake).invoke("hi")
    assert message.response_metadata["model_name"] == "fake-model-1"


def test_structured_output_json_schema_include_raw(server: FakeOpenAIServer) -> None:
    """json_schema structured output validates and reports the server's usage."""
    server.set_usage(cached_tokens=7, reasoning_tokens=3)
    server.set_fields("cto", summary="Buy two servers.")
    structured = make_llm(server).with_structured_output(
        BudgetDecision, method="json_schema", include_raw=True
    )

    result = structured.invoke([SystemMessage(CTO_PROMPT), HumanMessage("Decide.")])

    assert result["parsing_error"] is None
    parsed = result["parsed"]
    assert isinstance(parsed, BudgetDecision)
    assert parsed.summary == "Buy two servers."
    assert parsed.verdict == "approve"
    assert parsed.confidence == 50
    assert len(parsed.items) == 2
    assert all(item.quantity == 5 for item in parsed.items)

    (recorded,) = server.chat_requests()
    assert recorded.schema == "BudgetDecision"
    assert recorded.agent == "cto"
    assert recorded.body["response_format"]["type"] == "json_schema"
    assert recorded.usage is not None
    usage = result["raw"].usage_metadata
    assert usage["input_tokens"] == recorded.usage["prompt_tokens"]
    assert usage["output_tokens"] == recorded.usage["completion_tokens"]
    assert usage["total_tokens"] == recorded.usage["total_tokens"]
    assert usage["input_token_details"]["cache_read"] == 7
    assert usage["output_token_details"]["reasoning"] == 3
    content = result["raw"].content
    assert recorded.usage["completion_tokens"] == len(content) // 4


def test_structured_output_function_calling(server: FakeOpenAIServer) -> None:
    """function_calling structured output is answered with a forced tool call."""
    server.set_fields("BudgetDecision", verdict="reject")
    structured = make_llm(server).with_structured_output(BudgetDecision, method="function_calling")

    parsed = structured.invoke("Decide.")

    assert isinstance(parsed, BudgetDecision)
    assert parsed.verdict == "reject"
    (recorded,) = server.chat_requests()
    assert recorded.schema == "BudgetDecision"
    assert recorded.agent is None
    assert recorded.body["tool_choice"] == {
        "type": "function",
        "function": {"name": "BudgetDecision"},
    }


def test_streaming_reports_the_same_usage(server: FakeOpenAIServer) -> None:
    """Streaming with stream_usage reports the server's usage."""
    server.set_usage(cached_tokens=2)
    llm = make_llm(server, streaming=True, stream_usage=True)
    messages = [SystemMessage("You are the planner."), HumanMessage("Plan the quarter.")]

    chunks = list(llm.stream(messages))

    assert len([c for c in chunks if c.content]) > 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    assert total.content == "Fake response from the planner agent to: Plan the quarter."
    (recorded,) = server.chat_requests("planner")
    assert recorded.stream is True
    assert recorded.body["stream_options"] == {"include_usage": True}
    assert recorded.usage is not None
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == recorded.usage["prompt_tokens"]
    assert total.usage_metadata["output_tokens"] == recorded.usage["completion_tokens"]
    assert total.usage_metadata["input_token_details"]["cache_read"] == 2
    # Non-streamed invoke of the same conversation reports the same usage.
    plain = make_llm(server).invoke(messages)
    assert plain.usage_metadata == total.usage_metadata


def test_streaming_without_usage_records_none(server: FakeOpenAIServer) -> None:
    """Without include_usage no usage chunk is sent or recorded."""
    chunks = list(make_llm(server, streaming=True, stream_usage=False).stream("hello"))
    assert "".join(str(c.content) for c in chunks).startswith("Fake response")
    (recorded,) = server.chat_requests()
    assert recorded.usage is None
    assert "stream_options" not in recorded.body


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_streaming_structured_output_json_schema(server: FakeOpenAIServer) -> None:
    """Streamed json_schema structured output parses."""
    llm = make_llm(server, streaming=True, stream_usage=True)
    structured = llm.with_structured_output(BudgetDecision, method="json_schema")
    results = list(structured.stream("Decide."))
    assert isinstance(results[-1], BudgetDecision)


def test_scripted_tool_call_round_trip(server: FakeOpenAIServer) -> None:
    """Scripted tool call, tool result, then a final text answer."""
    server.script_tool_calls("cto", [{"name": "calculate", "arguments": {"expression": "2+3"}}])
    llm = make_llm(server).bind_tools([calculate])
    messages = [SystemMessage(CTO_PROMPT), HumanMessage("What is 2+3?")]

    first = llm.invoke(messages)
    assert first.response_metadata["finish_reason"] == "tool_calls"
    (call,) = first.tool_calls
    assert call["name"] == "calculate"
    assert call["args"] == {"expression": "2+3"}

    messages += [first, ToolMessage(calculate.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(messages)

    assert final.tool_calls == []
    assert final.content == "Final answer from the cto agent based on the tool results: 5"
    first_req, second_req = server.chat_requests("cto")
    assert second_req.body["messages"][-1] == {
        "role": "tool",
        "content": "5",
        "tool_call_id": call["id"],
    }
    assert second_req.body["messages"][-2]["tool_calls"][0]["id"] == call["id"]
    # The script was used up: a fresh question gets a text answer.
    assert llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("Again?")]).tool_calls == []


def test_scripted_tool_calls_stream(server: FakeOpenAIServer) -> None:
    """Scripted parallel tool calls stream as argument deltas."""
    server.script_tool_calls(
        "planner",
        [
            {"name": "calculate", "arguments": {"expression": "1+1"}, "id": "call_a"},
            {"name": "calculate", "arguments": {"expression": "2+2"}, "id": "call_b"},
        ],
    )
    llm = make_llm(server, streaming=True, stream_usage=True).bind_tools([calculate])
    chunks = list(llm.stream([SystemMessage("You are the planner"), HumanMessage("sum")]))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert [(c["id"], c["args"]) for c in total.tool_calls] == [
        ("call_a", {"expression": "1+1"}),
        ("call_b", {"expression": "2+2"}),
    ]
    (recorded,) = server.chat_requests("planner")
    assert total.usage_metadata["output_tokens"] == recorded.usage["completion_tokens"]


def test_fail_raises_internal_server_error(server: FakeOpenAIServer) -> None:
    """``fail`` answers HTTP 500 once, then requests succeed again."""
    server.fail("cto")
    llm = make_llm(server)
    messages = [SystemMessage(CTO_PROMPT), HumanMessage("Decide.")]

    with pytest.raises(openai.InternalServerError) as excinfo:
        llm.invoke(messages)
    assert excinfo.value.status_code == 500
    assert llm.invoke(messages).content  # only `times=1` failure

    failed = [r for r in server.requests if r.status != 200]
    assert len(failed) == 1 and failed[0].usage is None and failed[0].agent == "cto"
    assert len(server.chat_requests("cto")) == 1


def test_fail_rate_limit_and_match_by_prompt_substring(server: FakeOpenAIServer) -> None:
    """``fail`` matches system-prompt substrings and supports 429."""
    server.fail("Decide on the budget", status=429, times=2)
    llm = make_llm(server)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])
    assert llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")]).content


def test_retries_recover_quickly_from_failures(server: FakeOpenAIServer) -> None:
    """Client retries honour the short retry-after-ms header."""
    server.fail("cto", times=2)
    llm = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="test", max_retries=2)
    started = time.monotonic()
    assert llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")]).content
    assert time.monotonic() - started < 2
    assert [r.status for r in server.requests] == [500, 500, 200]


def test_concurrent_requests_overlap() -> None:
    """Concurrent requests are served in parallel."""
    with FakeOpenAIServer(latency_s=0.3) as fake:
        llm = make_llm(fake)
        started = time.monotonic()
        results = llm.batch(["first", "second"], config={"max_concurrency": 2})
        elapsed = time.monotonic() - started
        a, b = fake.chat_requests()
    assert len(results) == 2
    assert a.started < b.finished and b.started < a.finished
    assert a.finished - a.started >= 0.3 and b.finished - b.started >= 0.3
    assert elapsed < 0.55


def test_delay_applies_only_to_matching_requests(server: FakeOpenAIServer) -> None:
    """``delay`` only slows matching requests."""
    server.delay("planner", 0.2)
    llm = make_llm(server)
    llm.invoke([SystemMessage("You are the planner, obviously."), HumanMessage("x")])
    llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])
    planner, cto = server.chat_requests()
    assert planner.agent == "planner" and planner.duration >= 0.2
    assert cto.duration < 0.2


def test_reset_clears_everything(server: FakeOpenAIServer) -> None:
    """``reset`` drops recorded requests and scripted behaviour."""
    server.fail("cto", times=5)
    server.set_usage(cached_tokens=4)
    with pytest.raises(openai.InternalServerError):
        make_llm(server).invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])
    server.reset()
    assert server.requests == []
    message = make_llm(server).invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])
    assert message.usage_metadata["input_token_details"]["cache_read"] == 0


def test_embeddings_are_deterministic_and_similar_for_shared_words(
    server: FakeOpenAIServer,
) -> None:
    """Embeddings are normalised, deterministic and word-overlap sensitive."""
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=server.base_url,
        api_key="test",
        max_retries=0,
        check_embedding_ctx_length=False,
    )
    texts = [
        "cut the cloud budget for servers",
        "cut the cloud budget for storage",
        "hire a marketing intern",
    ]
    vectors = embeddings.embed_documents(texts)
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.6
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    query = embeddings.embed_query(texts[0])
    assert query == pytest.approx(embed_text(texts[0]), abs=1e-6)

    recorded = [r for r in server.requests if r.path.endswith("/embeddings")]
    assert recorded and recorded[0].usage is not None
    assert recorded[0].usage["prompt_tokens"] > 0
    assert server.chat_requests() == []


def test_embeddings_float_format_and_dimensions(server: FakeOpenAIServer) -> None:
    """Float encoding, ``dimensions`` and the models list work."""
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    response = client.embeddings.create(
        model="text-embedding-3-small",
        input=["alpha beta", "gamma"],
        encoding_format="float",
        dimensions=64,
    )
    assert [len(d.embedding) for d in response.data] == [64, 64]
    assert response.data[0].embedding == pytest.approx(embed_text("alpha beta", 64))
    assert response.usage.total_tokens == response.usage.prompt_tokens > 0
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_unknown_path_is_404(server: FakeOpenAIServer) -> None:
    """Unknown paths answer 404 and are not recorded."""
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.post("/nope", cast_to=object, body={})
    assert server.requests == []


@pytest.mark.parametrize(
    ("prompt", "agent"),
    [
        ("You are the CTO of Acme.", "cto"),
        ("You are the planner", "planner"),
        ("You are the planner, responsible for ...", "planner"),
        ("  You are the Budget-Auditor. Check.", "budget-auditor"),
        ("You are a helpful assistant.", None),
        ("Hello. You are the CFO.", None),
        ("", None),
    ],
)
def test_agent_from_system_prompt(prompt: str, agent: str | None) -> None:
    """Agent names come from a leading 'You are the X'."""
    assert agent_from_system_prompt(prompt) == agent


class TreeNode(BaseModel):
    """A recursive model exercising many schema keywords."""

    label: str = Field(max_length=5)
    children: list[TreeNode] = []
    weight: float = Field(gt=0, lt=1)
    rank: int = Field(ge=1, le=4, multiple_of=2)
    code: str = Field(min_length=40)
    kind: Literal["leaf"] = "leaf"
    maybe: int | None
    pair: tuple[int, str]
    unique: set[int] = Field(min_length=1)


def test_generate_from_schema_validates_against_pydantic() -> None:
    """Generated values validate against pydantic-produced schemas."""
    schema = TreeNode.model_json_schema()
    value = generate_from_schema(schema)
    node = TreeNode.model_validate(value)
    assert len(node.code) >= 40 and len(node.label) <= 5
    assert node.weight == 0.5 and node.rank in (2, 4)
    assert node.maybe == 3

    adapter = TypeAdapter(dict[str, list[BudgetDecision]])
    generated = generate_from_schema(adapter.json_schema(), name="plans")
    adapter.validate_python(generated)
    assert json.dumps(generated)  # plain JSON types only


def test_generate_from_schema_misc_keywords() -> None:
    """Assorted JSON-schema keywords are honoured."""
    assert generate_from_schema({"type": ["null", "integer"], "minimum": 10, "maximum": 13}) == 12
    assert generate_from_schema({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}) in (1, 2)
    assert generate_from_schema({"const": "fixed"}) == "fixed"
    assert generate_from_schema({"enum": [None, "b"]}) == "b"
    assert generate_from_schema({"oneOf": [{"type": "null"}, {"type": "boolean"}]}) is True
    assert generate_from_schema({"type": "array", "items": {"type": "string"}, "maxItems": 1}) == [
        "This is the value #1."
    ]
    assert generate_from_schema(
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    ) == {"a": "This is the a."}


# --------------------------------------------------------------------------- #
# Fault injection
# --------------------------------------------------------------------------- #


def raw_chat(
    server: FakeOpenAIServer, *, stream: bool = False, timeout: float = 5.0
) -> tuple[int, str, bytes]:
    """POST one chat request with the standard library; return status, content type and raw body."""
    import http.client

    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": CTO_PROMPT}, {"role": "user", "content": "Decide now."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Verdict", "schema": TypeAdapter(Verdict).json_schema(), "strict": True},
        },
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        try:
            data = response.read()
        except http.client.IncompleteRead as exc:
            data = exc.partial
        return response.status, response.getheader("Content-Type") or "", data
    finally:
        connection.close()


class Verdict(BaseModel):
    verdict: Literal["approve", "reject"]
    reason: str


def sse_events(data: bytes) -> list[str]:
    return [line[len("data: ") :] for line in data.decode().splitlines() if line.startswith("data: ")]


def test_a_rate_limit_fault_is_a_429_with_retry_after_and_bills_nothing(server: FakeOpenAIServer) -> None:
    server.inject_faults({"rate_limit": 1.0}, retry_after_s=2.5)
    llm = make_llm(server)

    with pytest.raises(openai.RateLimitError) as info:
        llm.invoke("x")

    assert info.value.response.headers["retry-after"] == "2.5"
    assert server.billed.responses == 0 and server.faults_injected == {"rate_limit": 1}
    assert server.requests[-1].fault == "rate_limit" and server.requests[-1].billed is None


def test_a_server_error_fault_is_a_503(server: FakeOpenAIServer) -> None:
    server.inject_faults({"server_error": 1.0})

    with pytest.raises(openai.InternalServerError) as info:
        make_llm(server).invoke("x")

    assert info.value.status_code == 503 and server.billed.tokens == 0


def test_a_hang_outlasts_the_client_timeout_and_is_billed_when_it_finishes(server: FakeOpenAIServer) -> None:
    server.inject_faults({"hang": 1.0}, hang_s=0.5)

    with pytest.raises(openai.APITimeoutError):
        make_llm(server, timeout=0.1).invoke("x")
    assert server.billed.responses == 0  # still thinking
    assert server.wait_idle(5)

    assert server.billed.responses == 1 and server.billed.tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_dropped_connection_cuts_the_answer_off_and_is_billed(
    server: FakeOpenAIServer, stream: bool
) -> None:
    server.inject_faults({"drop": 1.0})

    status, _, data = raw_chat(server, stream=stream)

    assert status == 200 and b"[DONE]" not in data
    if not stream:
        with pytest.raises(ValueError):
            json.loads(data)
    assert server.billed.responses == 1


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_json_is_a_200_that_does_not_parse(server: FakeOpenAIServer, stream: bool) -> None:
    server.inject_faults({"malformed_json": 1.0})

    status, _, data = raw_chat(server, stream=stream)

    assert status == 200
    texts = sse_events(data)[:-1] if stream else [data.decode()]
    broken = 0
    for text in texts:
        try:
            json.loads(text)
        except ValueError:
            broken += 1
    assert broken >= 1 and server.billed.responses == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_violation_is_a_well_formed_completion_that_fails_the_schema(
    server: FakeOpenAIServer, stream: bool
) -> None:
    server.inject_faults({"schema_violation": 1.0})

    message = make_llm(server, streaming=stream, stream_usage=True).invoke(
        [SystemMessage(CTO_PROMPT), HumanMessage("x")]
    )

    with pytest.raises(ValueError):
        Verdict.model_validate_json(message.text)
    assert message.usage_metadata["output_tokens"] > 0 and server.billed.responses == 1


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_leaves_usage_out_but_bills_the_true_usage(
    server: FakeOpenAIServer, stream: bool
) -> None:
    server.inject_faults({"missing_usage": 1.0})

    message = make_llm(server, streaming=stream, stream_usage=True).invoke("x")

    assert not message.usage_metadata
    (recorded,) = server.chat_requests()
    assert recorded.usage is None and recorded.billed["prompt_tokens"] == server.billed.input_tokens > 0


@pytest.mark.parametrize(("kind", "sign"), [("negative_usage", -1), ("absurd_usage", 1)])
def test_negative_and_absurd_usage_are_reported_but_the_true_usage_is_billed(
    server: FakeOpenAIServer, kind: str, sign: int
) -> None:
    server.inject_faults({kind: 1.0})

    message = make_llm(server).invoke("x")

    reported = message.usage_metadata["input_tokens"]
    assert (reported < 0) if sign < 0 else (reported >= 1_000_000 * server.billed.input_tokens)
    assert server.billed.input_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_non_json_body_is_an_html_page_with_a_200(server: FakeOpenAIServer, stream: bool) -> None:
    server.inject_faults({"non_json": 1.0})

    status, content_type, data = raw_chat(server, stream=stream)

    assert status == 200 and content_type.startswith("text/html") and data.startswith(b"<html>")
    assert server.billed.responses == 1


def test_faults_are_drawn_per_kind_from_a_seeded_rng(server: FakeOpenAIServer) -> None:
    llm = make_llm(server)

    def draw(seed: int) -> list[str | None]:
        server.reset()
        server.inject_faults({"rate_limit": 0.3, "server_error": 0.3}, seed=seed)
        for _ in range(30):
            with contextlib.suppress(openai.APIError):
                llm.invoke("x")
        return [r.fault for r in server.requests]

    first, again, other = draw(7), draw(7), draw(8)

    assert first == again and first != other
    assert {"rate_limit", "server_error", None} == set(first)


def test_faults_can_be_limited_to_a_count_a_match_and_models(server: FakeOpenAIServer) -> None:
    server.inject_faults({"server_error": 1.0}, match="cto", models=["gpt-4o-mini"], limit=1)
    llm = make_llm(server)

    with pytest.raises(openai.InternalServerError):
        llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])
    llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])  # the limit is spent
    server.inject_faults({"server_error": 1.0}, match="cto", models=["gpt-4o-mini"])
    llm.invoke([SystemMessage("You are the COO."), HumanMessage("x")])  # no match
    ChatOpenAI(model="gpt-4.1", base_url=server.base_url, api_key="t", max_retries=0).invoke(
        [SystemMessage(CTO_PROMPT), HumanMessage("x")]
    )  # another model
    server.stop_faults()
    llm.invoke([SystemMessage(CTO_PROMPT), HumanMessage("x")])

    assert server.faults_injected == {"server_error": 1}


def test_billed_counts_every_answer_produced_and_only_those(server: FakeOpenAIServer) -> None:
    llm = make_llm(server)
    llm.invoke("one")
    server.inject_faults({"server_error": 1.0}, limit=1)
    with pytest.raises(openai.InternalServerError):
        llm.invoke("two")
    server.inject_faults({"non_json": 1.0}, limit=1)
    raw_chat(server)

    billed = [r.billed for r in server.requests if r.billed is not None]
    assert server.billed.responses == 2 == len(billed)
    assert server.billed.tokens == sum(b["prompt_tokens"] + b["completion_tokens"] for b in billed)
    assert server.billed.batch_responses == server.billed.batch_tokens == 0  # live answers only
