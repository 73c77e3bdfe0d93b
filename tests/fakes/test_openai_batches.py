"""Tests for the fake OpenAI server's files and batch endpoints, driven through the real ``openai`` client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from .openai_server import BATCH_WINDOW_S, FakeOpenAIServer, batch_input_problems

MODEL = "gpt-4o-mini"
DONE = ("completed", "failed", "expired", "cancelled")


class Verdict(BaseModel):
    """A structured answer."""

    verdict: Literal["approve", "reject"]
    reason: str
    score: int


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """Run a fresh fake server for one test."""
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> openai.OpenAI:
    """An ``openai`` client pointed at the fake server, without retries."""
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    """A chat completion request body asking ``text``."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def request_line(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """One line of a batch input file."""
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": dict(body)}


def jsonl(items: list[dict[str, Any]]) -> bytes:
    """Items as JSONL bytes."""
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def start(client: openai.OpenAI, bodies: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> Batch:
    """Upload one line per ``custom_id -> body`` and create a batch over them."""
    upload = client.files.create(
        file=("requests.jsonl", jsonl([request_line(cid, body) for cid, body in bodies.items()])),
        purpose="batch",
    )
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


def questions(count: int, prefix: str = "q") -> dict[str, dict[str, Any]]:
    """``count`` plain questions keyed ``{prefix}0``, ``{prefix}1``, ..."""
    return {f"{prefix}{i}": chat_body(f"question number {i}") for i in range(count)}


def poll(client: openai.OpenAI, batch_id: str, *, most: int = 10) -> Batch:
    """Retrieve ``batch_id`` until it ends (at most ``most`` times)."""
    for _ in range(most):
        batch = client.batches.retrieve(batch_id)
        if batch.status in DONE:
            return batch
    raise AssertionError(f"batch {batch_id} did not end within {most} retrieves")


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of a file read back through the client (``[]`` for no file)."""
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_is_validating_then_in_progress_then_completed_with_chat_completions_and_usage(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Upload, create and poll: the output file holds one chat.completion with usage per line."""
    created = start(client, questions(4), metadata={"run": "nightly"})
    assert created.status == "validating" and created.metadata == {"run": "nightly"}
    assert created.expires_at == created.created_at + BATCH_WINDOW_S

    first = client.batches.retrieve(created.id)
    assert first.status == "in_progress" and first.in_progress_at is not None
    assert first.request_counts is not None
    assert (first.request_counts.total, first.request_counts.completed) == (4, 2)

    done = client.batches.retrieve(created.id)
    assert done.status == "completed" and done.completed_at is not None and done.finalizing_at is not None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 0)
    assert done.error_file_id is None and done.model == MODEL

    lines = file_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in lines] == ["q0", "q1", "q2", "q3"]
    completions = [ChatCompletion.model_validate(line["response"]["body"]) for line in lines]
    assert all(line["id"].startswith("batch_req_") and line["error"] is None for line in lines)
    assert all(line["response"]["status_code"] == 200 and line["response"]["request_id"] for line in lines)
    assert (
        completions[2].choices[0].message.content == "Fake response from the assistant to: question number 2"
    )
    assert all(c.usage is not None and c.usage.total_tokens > 0 for c in completions)

    billed_input = sum(c.usage.prompt_tokens for c in completions if c.usage is not None)
    billed_output = sum(c.usage.completion_tokens for c in completions if c.usage is not None)
    assert server.billed.batch_responses == server.billed.responses == 4
    assert (server.billed.batch_input_tokens, server.billed.batch_output_tokens) == (
        billed_input,
        billed_output,
    )
    assert done.usage is not None and done.usage.total_tokens == server.billed.batch_tokens
    assert server.requests == [] and len(server.batches[done.id].requests) == 4


def test_batch_answers_are_billed_beside_live_ones_and_marked_as_batch(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """A live answer and a batch's answers add up in ``billed``; only the batch's are batch."""
    live = client.chat.completions.create(**chat_body("question number 0"))
    assert live.usage is not None
    batch = poll(client, start(client, questions(2)).id)

    billed = server.billed
    assert (billed.responses, billed.batch_responses) == (3, 2)
    assert billed.tokens - billed.batch_tokens == live.usage.total_tokens
    per_line = [r.billed for r in server.batches[batch.id].requests]
    assert sum(b["total_tokens"] for b in per_line if b is not None) == billed.batch_tokens


def test_a_structured_output_line_is_answered_as_the_live_endpoint_answers_it(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """json_schema output, set_fields and usage are the live endpoint's; a tool-call script applies."""
    schema = {"name": "Verdict", "schema": Verdict.model_json_schema(), "strict": True}
    structured = chat_body("Judge this.", response_format={"type": "json_schema", "json_schema": schema})
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    calling = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are the researcher of Acme."},
            {"role": "user", "content": "Look it up."},
        ],
        "tools": tools,
    }
    server.set_fields("Verdict", verdict="reject")
    server.script_tool_calls("researcher", [{"name": "lookup", "arguments": {"q": "y"}, "id": "call_2"}])

    batch = poll(client, start(client, {"judge": structured, "call": calling}).id)
    answers = {
        line["custom_id"]: ChatCompletion.model_validate(line["response"]["body"])
        for line in file_lines(client, batch.output_file_id)
    }
    live = client.chat.completions.create(**structured)

    batched = answers["judge"]
    assert batched.choices[0].message.content == live.choices[0].message.content
    assert Verdict.model_validate_json(batched.choices[0].message.content or "").verdict == "reject"
    assert batched.usage == live.usage
    assert server.batches[batch.id].requests[0].schema == "Verdict"
    tool_calls = answers["call"].choices[0].message.tool_calls or []
    assert answers["call"].choices[0].finish_reason == "tool_calls"
    assert [(c.id, json.loads(c.function.arguments)) for c in tool_calls] == [("call_2", {"q": "y"})]  # type: ignore[union-attr]
    assert server.batches[batch.id].requests[1].agent == "researcher"


def test_lines_refused_or_failed_go_to_the_error_file_with_the_live_status(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """A body the endpoint refuses is a 400, a scripted failure a 500; only answers are billed."""
    server.fail("flaky", status=500)
    server.script_batch("completed", fail_lines=[4])
    bodies = {
        "ok": chat_body("fine"),
        "no-messages": {"model": MODEL},
        "flaky": {
            "model": MODEL,
            "messages": [{"role": "system", "content": "flaky"}, {"role": "user", "content": "x"}],
        },
        "scripted": chat_body("also fine"),
    }
    batch = poll(client, start(client, bodies).id)

    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 3)
    errors = {line["custom_id"]: line for line in file_lines(client, batch.error_file_id)}
    assert {cid: line["response"]["status_code"] for cid, line in errors.items()} == {
        "no-messages": 400,
        "flaky": 500,
        "scripted": 500,
    }
    assert (
        errors["no-messages"]["response"]["body"]["error"]["message"]
        == "'messages' must be a non-empty array."
    )
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["ok"]
    assert server.billed.batch_responses == 1


def test_a_batch_whose_every_line_fails_completes_without_an_output_file(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """As the real API does: ``completed``, no ``output_file_id``, every line in the error file."""
    server.script_batch("completed", fail_lines=[1, 2])
    batch = poll(client, start(client, questions(2)).id)
    assert batch.status == "completed" and batch.output_file_id is None
    assert len(file_lines(client, batch.error_file_id)) == 2 and server.billed.responses == 0


def test_a_failed_batch_lists_its_validation_errors_and_runs_nothing(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """``failed``: ``errors`` name the lines; no files, no counts, nothing billed."""
    server.script_batch("failed", fail_lines=[2, 3])
    created = start(client, questions(3))
    assert client.batches.retrieve(created.id).status == "validating"

    batch = client.batches.retrieve(created.id)
    assert batch.status == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "invalid_request"), (3, "invalid_request")]
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.output_file_id is None and batch.error_file_id is None
    assert server.billed.responses == 0


def test_an_expired_batch_keeps_the_answered_lines_and_expires_the_rest(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """``expired``: the first half answered in the output file, the rest ``batch_expired``."""
    server.script_batch("expired")
    batch = poll(client, start(client, questions(4)).id)

    assert batch.status == "expired" and batch.expired_at is not None and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["q0", "q1"]
    expired = file_lines(client, batch.error_file_id)
    assert [line["custom_id"] for line in expired] == ["q2", "q3"]
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired" for line in expired)
    assert server.billed.batch_responses == 2


def test_cancelling_a_running_batch_keeps_the_lines_already_answered(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Cancel after the first retrieve: ``cancelling``, then ``cancelled`` with half the lines."""
    created = start(client, questions(4))
    assert client.batches.retrieve(created.id).status == "in_progress"

    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = client.batches.retrieve(created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None

    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["q0", "q1"]
    cancelled = file_lines(client, batch.error_file_id)
    assert [line["error"]["code"] for line in cancelled] == ["batch_cancelled", "batch_cancelled"]
    assert client.batches.retrieve(created.id).status == "cancelled"  # later retrieves change nothing
    with pytest.raises(openai.BadRequestError, match="can no longer be cancelled"):
        client.batches.cancel(created.id)


def test_cancelling_a_validating_batch_answers_nothing(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """A batch cancelled before any retrieve ends with every line ``batch_cancelled``."""
    created = start(client, questions(2))
    client.batches.cancel(created.id)
    batch = client.batches.retrieve(created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
    assert len(file_lines(client, batch.error_file_id)) == 2 and server.billed.responses == 0


def test_a_script_applies_only_to_batches_with_its_custom_id_prefix(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """``match`` picks batches by ``custom_id`` prefix; ``after_polls`` sets when they end."""
    server.script_batch("cancelled", match="nightly-", after_polls=1, fail_lines=[1])
    plain = start(client, questions(2))
    nightly = start(client, questions(2, prefix="nightly-"))

    assert client.batches.retrieve(nightly.id).status == "cancelling"
    batch = client.batches.retrieve(nightly.id)
    assert batch.status == "cancelled"
    assert [line["custom_id"] for line in file_lines(client, batch.output_file_id)] == ["nightly-1"]
    assert [line["custom_id"] for line in file_lines(client, batch.error_file_id)] == ["nightly-0"]
    assert poll(client, plain.id).status == "completed"


def test_batch_mode_sets_when_unscripted_batches_complete(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """``after_polls=0`` completes within the create call, 1 on the first retrieve."""
    server.batch_mode(after_polls=0)
    assert start(client, questions(1)).status == "completed"
    server.batch_mode(after_polls=1)
    created = start(client, questions(1))
    assert created.status == "validating" and client.batches.retrieve(created.id).status == "completed"
    with pytest.raises(ValueError, match="after_polls"):
        server.batch_mode(after_polls=-1)


def test_script_batch_refuses_what_it_cannot_do(server: FakeOpenAIServer) -> None:
    """Unknown statuses, bad counts and line numbers fail when scripted, not later."""
    with pytest.raises(ValueError, match="unknown batch status"):
        server.script_batch("finalizing")
    with pytest.raises(ValueError, match="1-based"):
        server.script_batch("expired", fail_lines=[0])
    with pytest.raises(ValueError, match="at least one"):
        server.script_batch("failed", fail_lines=[])
    with pytest.raises(ValueError, match="times"):
        server.script_batch("completed", times=0)


def test_batches_are_listed_newest_first_a_page_at_a_time(client: openai.OpenAI) -> None:
    """``limit`` and ``after`` page the list; the SDK's auto-paging walks every page."""
    ids = [start(client, questions(1)).id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]


def test_a_bad_batch_input_file_is_refused_with_a_400_naming_each_line(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Duplicate ``custom_id``, wrong method or url, a body that is no object, and broken JSON."""
    good = request_line("a", chat_body("x"))
    rows = [
        json.dumps(good),
        json.dumps({**good, "custom_id": "b", "method": "GET"}),
        json.dumps(good),
        "{not json",
        json.dumps({**good, "custom_id": "c", "url": "/v1/embeddings", "body": "text"}),
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("bad.jsonl", "\n".join(rows).encode()), purpose="batch")

    message = info.value.message
    assert "`bad.jsonl`" in message and "line 1:" not in message
    assert "line 2: `method` must be `POST`, not `GET`" in message
    assert "line 3: `custom_id` `a` is already used on line 1" in message
    assert "line 4 is not valid JSON" in message
    assert "line 5: `url` must be `/v1/chat/completions`" in message and "line 5: `body`" in message
    assert server.files == {}
    assert batch_input_problems(b"") == ["the file has no requests"]
    assert batch_input_problems(json.dumps(good).encode() + b"\n\n") == ["line 2 is empty"]


def test_files_can_be_retrieved_listed_read_and_deleted(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """Content comes back byte for byte (CRLF included); a deleted file is a 404."""
    data = json.dumps(request_line("a", chat_body("x"))).encode() + b"\r\n"
    upload = client.files.create(file=("in.jsonl", data), purpose="batch")
    notes = client.files.create(file=("notes.txt", b"\x00\xffbinary"), purpose="user_data")

    assert client.files.retrieve(upload.id) == upload and upload.bytes == len(data)
    assert client.files.content(upload.id).content == data
    assert client.files.content(notes.id).content == b"\x00\xffbinary"
    assert [f.id for f in client.files.list(purpose="batch")] == [upload.id]
    assert [f.id for f in client.files.list(order="asc")] == [upload.id, notes.id]

    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.files.retrieve(upload.id)
    assert list(server.files) == [notes.id]


def test_a_batch_is_refused_an_unknown_file_a_wrong_purpose_or_endpoint(client: openai.OpenAI) -> None:
    """What is wrong with a create call is a 4xx, not a batch."""
    notes = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="purpose `batch`"):
        client.batches.create(
            input_file_id=notes.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=notes.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError, match="No such Batch object"):
        client.batches.retrieve("batch_nope")


def test_concurrent_retrieves_answer_each_line_once(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    """Many threads polling one batch: every line is answered and billed exactly once."""
    server.batch_mode(after_polls=5)
    created = start(client, questions(10))
    barrier = threading.Barrier(8)

    def retrieve() -> None:
        barrier.wait()
        client.batches.retrieve(created.id)

    threads = [threading.Thread(target=retrieve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    batch = client.batches.retrieve(created.id)
    assert batch.status == "completed" and server.billed.batch_responses == 10
    assert sorted(line["custom_id"] for line in file_lines(client, batch.output_file_id)) == sorted(
        questions(10)
    )


def test_reset_clears_files_batches_and_batch_scripts(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    """After ``reset`` nothing is left and batches complete by default again."""
    server.batch_mode(after_polls=0)
    server.script_batch("expired", times=2)
    start(client, questions(2))
    server.reset()
    assert server.files == {} and server.batches == {} and server.billed.responses == 0

    created = start(client, questions(2))
    assert created.status == "validating" and poll(client, created.id).status == "completed"
