"""A fake OpenAI-compatible HTTP server for tests.

The server is a real ``http.server.ThreadingHTTPServer`` bound to ``127.0.0.1``
on a free port and served from a background thread. It speaks enough of the
OpenAI REST API for ``langchain_openai.ChatOpenAI`` and ``OpenAIEmbeddings``
(which send their requests through ``httpx2`` and therefore cannot be mocked
with ``respx``):

* ``POST /v1/chat/completions``: plain text answers, structured output via
  ``response_format={"type": "json_schema", ...}`` (a JSON document generated
  from the schema), forced function calls (``tool_choice`` naming a function,
  i.e. ``with_structured_output(..., method="function_calling")``), scripted
  tool calls, and SSE streaming including the final usage chunk requested with
  ``stream_options={"include_usage": true}``.
* ``POST /v1/embeddings``: deterministic, L2-normalised feature-hashing vectors
  (texts sharing words get similar vectors), as float lists or base64.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* ``POST /v1/files`` (multipart upload; a ``purpose="batch"`` file is checked line by
  line, see :func:`batch_input_problems`, and refused with a 400 naming each bad line),
  ``GET /v1/files`` (``purpose``, ``order``, ``limit``, ``after``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}``.
* ``POST /v1/batches`` (``endpoint="/v1/chat/completions"``, ``completion_window="24h"``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` and ``GET /v1/batches``
  (newest first, ``limit``/``after``), so that the ``openai`` client's ``files`` and
  ``batches`` resources parse their answers into its own types.

Typical use::

    with FakeOpenAIServer() as server:
        llm = ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url,
                         api_key="test", max_retries=0)
        server.set_fields("Plan", title="Fixed title")
        llm.with_structured_output(Plan, method="json_schema").invoke("hi")
        assert server.chat_requests()[0].schema == "Plan"

Note that ``ChatOpenAI`` silently downgrades ``method="json_schema"`` to
``"function_calling"`` for ``gpt-3*``, ``gpt-4`` and ``gpt-4-*`` model names
(including the default ``gpt-3.5-turbo``), so use e.g. ``gpt-4o-mini`` in tests
that want the ``response_format`` path.

Fault injection (:meth:`FakeOpenAIServer.inject_faults`): at a rate per kind,
drawn from a seeded RNG, a chat request is answered with one of
:data:`FAULT_KINDS` - HTTP 429 with ``Retry-After``, HTTP 503, a hang longer
than the client's timeout, a connection closed mid-response, malformed JSON,
valid JSON that fails the requested schema, no ``usage``, negative or absurd
``usage``, or a body that is not JSON - streamed or not, as the client asked.
:attr:`FakeOpenAIServer.billed` counts the tokens the server would have billed
for every answer it produced, including those the client could not read, so a
test can compare what a ledger recorded with what was billed.

Token accounting is deterministic (see :func:`estimate_prompt_tokens`):
``prompt_tokens`` is the number of characters of all message contents plus the
JSON of the ``tools`` list, divided by four (at least 1); ``completion_tokens``
is the length of the generated content (or of the concatenated tool-call
argument strings) divided by four (at least 1).

Batches advance by retrieves, never by the clock. ``POST /v1/batches`` answers
``validating``; with the default ``after_polls=2`` the first ``GET /v1/batches/{id}``
answers ``in_progress`` with the first half of the lines answered, the second
``completed`` (retrieve ``k`` of ``n`` has answered ``lines * k // n``). Each line's
``body`` goes through the live chat code path (so :meth:`~FakeOpenAIServer.set_fields`,
:meth:`~FakeOpenAIServer.script_tool_calls`, :meth:`~FakeOpenAIServer.fail`,
:meth:`~FakeOpenAIServer.set_usage`, structured output and ``max_completion_tokens`` apply;
injected faults, delays and streaming do not). A 200 goes to the output file as
``{"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200,
"request_id": ..., "body": <chat.completion>}, "error": null}``; a 4xx/5xx goes to the
error file in the same shape, and an expired or cancelled line as ``{"response": null,
"error": {"code": "batch_expired" | "batch_cancelled", ...}}``. Batch answers are
billed in :attr:`FakeOpenAIServer.billed` like live ones, and also counted in its
``batch_*`` fields; they are recorded in :attr:`FakeBatch.requests`, not in
:attr:`FakeOpenAIServer.requests`. ``POST /v1/batches/{id}/cancel`` makes a running batch
``cancelling``; the next retrieve makes it ``cancelled``, keeping the lines already answered.
Hooks: :meth:`~FakeOpenAIServer.batch_mode` sets ``after_polls`` for unscripted batches;
:meth:`~FakeOpenAIServer.script_batch` makes the next batches (or those with a
``custom_id`` prefix) end ``completed`` with failed lines, ``failed`` (validation
``errors``), ``expired`` (partial) or ``cancelled``; :attr:`~FakeOpenAIServer.files` and
:attr:`~FakeOpenAIServer.batches` hold them for inspection.
"""

from __future__ import annotations

import base64
import copy
import email.policy
import hashlib
import itertools
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "BATCH_ENDPOINT",
    "BATCH_OUTCOMES",
    "BATCH_WINDOW_S",
    "DEFAULT_EMBEDDING_DIM",
    "FAULT_KINDS",
    "Billed",
    "FakeBatch",
    "FakeFile",
    "FakeOpenAIServer",
    "RecordedRequest",
    "agent_from_system_prompt",
    "batch_input_problems",
    "embed_text",
    "estimate_prompt_tokens",
    "generate_from_schema",
]

DEFAULT_EMBEDDING_DIM = 384
"""Default dimension of the vectors served by ``/v1/embeddings``."""

SYSTEM_FINGERPRINT = "fp_fake_openai"
"""The ``system_fingerprint`` reported in every chat completion."""

FAULT_KINDS: tuple[str, ...] = (
    "rate_limit",
    "server_error",
    "hang",
    "drop",
    "malformed_json",
    "schema_violation",
    "missing_usage",
    "negative_usage",
    "absurd_usage",
    "tiny_usage",
    "partial_usage",
    "non_json",
)
"""What :meth:`FakeOpenAIServer.inject_faults` can do to a chat request:

- ``rate_limit``: HTTP 429 with ``Retry-After`` (nothing billed);
- ``server_error``: HTTP 503 (nothing billed);
- ``hang``: sleep ``hang_s`` (longer than the client's timeout), then answer (billed);
- ``drop``: close the connection half-way through the answer (billed);
- ``malformed_json``: a 200 whose JSON is cut short, or a stream with a broken event (billed);
- ``schema_violation``: a well-formed completion whose answer fails the requested schema (billed);
- ``missing_usage``: a completion (or stream) without ``usage`` (billed at the true usage);
- ``negative_usage``: ``usage`` with token counts 10,000 below zero (billed at the true usage);
- ``absurd_usage``: ``usage`` a million times the true counts (billed at the true usage);
- ``tiny_usage``: ``usage`` of one prompt and one completion token (billed at the true usage);
- ``partial_usage``: ``usage`` with ``completion_tokens`` only (billed at the true usage);
- ``non_json``: a 200 whose body is an HTML page (billed: the model ran, the answer was lost).
"""

_BILLED_FAULTS = frozenset(FAULT_KINDS) - {"rate_limit", "server_error"}

_AGENT_RE = re.compile(r"^\s*You are the\s+([A-Za-z0-9_\-]+)")
_WORD_RE = re.compile(r"\w+")
_MAX_SCHEMA_DEPTH = 12
_STRING_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T12:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "PT1H",
}
_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    408: ("timeout_error", None),
    409: ("conflict_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass
class RecordedRequest:
    """One request received by :class:`FakeOpenAIServer`.

    Attributes:
        path: The request path as received (e.g. ``"/v1/chat/completions"``).
        body: The decoded JSON request body.
        agent: Agent name derived from the first system message
            (see :func:`agent_from_system_prompt`), or ``None``.
        schema: Name of the structured-output schema: the ``json_schema`` name of
            ``response_format`` or the function forced by ``tool_choice``.
        stream: Whether the client asked for a streamed (SSE) response.
        started: ``time.monotonic()`` when the request arrived.
        finished: ``time.monotonic()`` when the answer was complete (taken just
            before its final bytes are written, so that the record is already
            visible when the client call returns).
        status: HTTP status code of the answer.
        usage: The usage object sent to the client; ``None`` on errors, for
            streams without ``stream_options.include_usage``, and never for
            non-chat/embedding paths (which are not recorded).
        fault: The injected fault (one of :data:`FAULT_KINDS`), or ``None``.
        billed: The usage the server billed for the answer (``None`` when it billed
            nothing: an error status), whatever it reported.
    """

    path: str
    body: dict[str, Any]
    agent: str | None
    schema: str | None
    stream: bool
    started: float
    finished: float
    status: int
    usage: dict[str, Any] | None
    fault: str | None = None
    billed: dict[str, Any] | None = None

    @property
    def duration(self) -> float:
        """Seconds between arrival and the end of the response."""
        return self.finished - self.started

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of a chat request (empty for other requests)."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []


# --------------------------------------------------------------------------- #
# Pure helpers (usable without a running server)
# --------------------------------------------------------------------------- #


def content_text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` into plain text.

    Args:
        content: A string, ``None`` or a list of content parts
            (``{"type": "text", "text": ...}`` dicts or strings).

    Returns:
        The concatenated text; non-text parts are ignored.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif isinstance(part.get("refusal"), str):
                    parts.append(part["refusal"])
        return "".join(parts)
    return str(content)


def first_system_text(messages: Sequence[Any]) -> str:
    """Return the text of the first ``system`` (or ``developer``) message.

    Args:
        messages: The ``messages`` list of a chat request.

    Returns:
        The text of the first system message, or ``""`` if there is none.
    """
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") in ("system", "developer"):
            return content_text(message.get("content"))
    return ""


def agent_from_system_prompt(system_text: str) -> str | None:
    """Derive an agent name from a system prompt.

    Args:
        system_text: Text of the first system message.

    Returns:
        The lowercased word following a leading ``"You are the"`` (e.g.
        ``"You are the CTO of ..."`` gives ``"cto"``), otherwise ``None``.
    """
    found = _AGENT_RE.match(system_text or "")
    return found.group(1).lower() if found else None


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Deterministic prompt-token estimate used for chat completions.

    Args:
        body: A chat completion request body.

    Returns:
        ``(sum of len(message content text) + len(json.dumps(tools))) // 4``,
        at least 1. Assistant tool-call arguments and ``response_format``
        schemas are not counted.
    """
    messages = body.get("messages")
    chars = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                chars += len(content_text(message.get("content")))
    tools = body.get("tools")
    if tools:
        chars += len(json.dumps(tools))
    return max(1, chars // 4)


def embed_text(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """Deterministic, L2-normalised embedding of ``text``.

    Each lowercased word token is hashed (BLAKE2b) and the digest selects four
    signed buckets of the vector (feature hashing), so texts sharing words get
    a high cosine similarity and identical texts identical vectors.

    Args:
        text: The text to embed.
        dim: Vector dimension.

    Returns:
        A list of ``dim`` floats with unit L2 norm.
    """
    if dim < 1:
        raise ValueError("dim must be >= 1")
    vector = [0.0] * dim
    tokens = _WORD_RE.findall(text.lower()) or [text]
    for token in tokens:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=32).digest()
        for k in range(4):
            index = int.from_bytes(digest[4 * k : 4 * k + 4], "little") % dim
            sign = 1.0 if digest[16 + k] & 1 else -1.0
            vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        vector[int.from_bytes(digest, "little") % dim] = 1.0
        return vector
    return [v / norm for v in vector]


def generate_from_schema(schema: Mapping[str, Any] | bool, *, name: str = "value") -> Any:
    """Generate a JSON value that validates against a JSON schema.

    Supports ``$ref``/``$defs`` (and ``definitions``), objects (all properties
    are generated; ``additionalProperties`` schemas are honoured), strings
    (``enum``, ``const``, ``minLength``/``maxLength`` and common ``format``
    values; ``pattern`` is not supported), integers and numbers (bounds,
    exclusive bounds, ``multipleOf``; the midpoint is chosen when both bounds
    are given), booleans, arrays (``minItems``/``maxItems``, default 2 items,
    ``prefixItems``, ``uniqueItems``), ``anyOf``/``oneOf`` (first non-null
    branch), ``allOf`` (merged) and nullable types.

    Args:
        schema: The JSON schema (the root, so that local refs resolve).
        name: Name used in generated strings for the root value.

    Returns:
        The generated value.
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _SchemaGenerator(root).generate(schema, name=name, depth=0)


def _humanize(name: str) -> str:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower() or "value"


def _is_null_schema(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    if schema.get("type") == "null":
        return True
    if "const" in schema and schema["const"] is None:
        return True
    enum = schema.get("enum")
    return isinstance(enum, list) and len(enum) > 0 and all(v is None for v in enum)


class _SchemaGenerator:
    """Recursive JSON-schema instance generator (see :func:`generate_from_schema`)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node if isinstance(node, Mapping) else {}

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = dict(merged.get("properties") or {})
        required: list[str] = list(merged.get("required") or [])
        for sub in schema.get("allOf") or []:
            if not isinstance(sub, Mapping):
                continue
            if "$ref" in sub:
                sub = {
                    **self._resolve(sub["$ref"]),
                    **{k: v for k, v in sub.items() if k != "$ref"},
                }
            if "allOf" in sub:
                sub = self._merge_all_of(sub)
            for key, value in sub.items():
                if key == "properties" and isinstance(value, Mapping):
                    properties.update(value)
                elif key == "required" and isinstance(value, list):
                    required.extend(r for r in value if r not in required)
                elif key not in merged:
                    merged[key] = value
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
        return merged

    def generate(
        self,
        schema: Any,
        *,
        name: str,
        depth: int,
        index: int | None = None,
    ) -> Any:
        if schema is False:
            return None
        if not isinstance(schema, Mapping):
            schema = {}
        shallow = depth > _MAX_SCHEMA_DEPTH
        seen_refs = 0
        while "$ref" in schema and seen_refs < 32:
            resolved = self._resolve(str(schema["$ref"]))
            schema = {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen_refs += 1
        if "allOf" in schema:
            schema = self._merge_all_of(schema)

        if "const" in schema:
            return copy.deepcopy(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            non_null = [v for v in enum if v is not None]
            return copy.deepcopy(non_null[0] if non_null else None)

        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                non_null = [b for b in branches if not _is_null_schema(b)]
                if not non_null or (shallow and len(non_null) < len(branches)):
                    return None
                branch = non_null[0]
                merged = {**rest, **branch} if isinstance(branch, Mapping) else rest
                return self.generate(merged, name=name, depth=depth + 1, index=index)

        schema_type = schema.get("type")
        if isinstance(schema_type, list):
            candidates = [t for t in schema_type if t != "null"]
            if not candidates:
                return None
            if shallow and "null" in schema_type:
                return None
            schema_type = candidates[0]
        if schema_type is None:
            schema_type = self._infer_type(schema)

        if schema_type == "object":
            return self._object(schema, name=name, depth=depth, index=index, shallow=shallow)
        if schema_type == "array":
            return self._array(schema, name=name, depth=depth, shallow=shallow)
        if schema_type == "string":
            return self._string(schema, name=name, index=index)
        if schema_type == "integer":
            return self._number(schema, integer=True, index=index)
        if schema_type == "number":
            return self._number(schema, integer=False, index=index)
        if schema_type == "boolean":
            return True
        if schema_type == "null":
            return None
        return self._string(schema, name=name, index=index)

    @staticmethod
    def _infer_type(schema: Mapping[str, Any]) -> str:
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema or "minItems" in schema:
            return "array"
        numeric = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
        if any(k in schema for k in numeric):
            return "number"
        return "string"

    def _object(
        self,
        schema: Mapping[str, Any],
        *,
        name: str,
        depth: int,
        index: int | None,
        shallow: bool,
    ) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        result: dict[str, Any] = {}
        for prop_name, prop_schema in properties.items():
            if shallow and prop_name not in required:
                continue
            result[prop_name] = self.generate(prop_schema, name=prop_name, depth=depth + 1, index=index)
        additional = schema.get("additionalProperties")
        min_props = int(schema.get("minProperties", 0) or 0)
        max_props = schema.get("maxProperties")
        wanted = min_props if (properties or shallow) else max(min_props, 1)
        if max_props is not None:
            wanted = min(wanted, int(max_props))
        if additional is not False and len(result) < wanted:
            extra_schema = additional if isinstance(additional, Mapping) else {}
            counter = 1
            while len(result) < wanted:
                key = f"{_humanize(name).replace(' ', '_')}_{counter}"
                counter += 1
                if key in result:
                    continue
                result[key] = self.generate(extra_schema, name=key, depth=depth + 1)
        return result

    def _array(self, schema: Mapping[str, Any], *, name: str, depth: int, shallow: bool) -> list[Any]:
        min_items = int(schema.get("minItems", 0) or 0)
        max_items = schema.get("maxItems")
        count = min_items if shallow else max(2, min_items)
        if max_items is not None:
            count = min(count, int(max_items))
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items")
        result: list[Any] = []
        for i in range(count):
            if i < len(prefix):
                item_schema: Any = prefix[i]
            elif isinstance(items, list):  # draft-4 tuple form
                item_schema = items[i] if i < len(items) else schema.get("additionalItems", {})
            elif items is False:
                break
            else:
                item_schema = items if isinstance(items, Mapping) else {}
            result.append(self.generate(item_schema, name=name, depth=depth + 1, index=i))
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for item in result:
                if item not in unique:
                    unique.append(item)
            result = unique
        return result

    @staticmethod
    def _string(schema: Mapping[str, Any], *, name: str, index: int | None) -> str:
        label = _humanize(name)
        fmt = schema.get("format")
        if fmt == "uuid":
            text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}:{index}"))
        elif isinstance(fmt, str) and fmt in _STRING_FORMATS:
            text = _STRING_FORMATS[fmt]
        else:
            suffix = f" #{index + 1}" if index is not None else ""
            text = f"This is the {label}{suffix}."
        min_len = int(schema.get("minLength", 0) or 0)
        max_len = schema.get("maxLength")
        if len(text) < min_len:
            filler = f" More detail about the {label}."
            while len(text) < min_len:
                text += filler
        if max_len is not None and len(text) > int(max_len):
            text = text[: int(max_len)].rstrip() or text[: int(max_len)]
        if len(text) < min_len:
            text = text.ljust(min_len, ".")
        return text

    @staticmethod
    def _number(schema: Mapping[str, Any], *, integer: bool, index: int | None) -> int | float:
        minimum = schema.get("minimum")
        maximum = schema.get("maximum")
        ex_min = schema.get("exclusiveMinimum")
        ex_max = schema.get("exclusiveMaximum")
        # Draft-4 style boolean exclusive bounds.
        if isinstance(ex_min, bool):
            ex_min, minimum = (minimum, None) if ex_min else (None, minimum)
        if isinstance(ex_max, bool):
            ex_max, maximum = (maximum, None) if ex_max else (None, maximum)
        multiple = schema.get("multipleOf")
        default = 3 if integer else 2.5

        if integer:
            lows = [math.ceil(minimum)] if minimum is not None else []
            if ex_min is not None:
                lows.append(math.floor(ex_min) + 1)
            highs = [math.floor(maximum)] if maximum is not None else []
            if ex_max is not None:
                highs.append(math.ceil(ex_max) - 1)
            lo = max(lows) if lows else None
            hi = min(highs) if highs else None
            if lo is not None and hi is not None:
                value: float = math.floor((lo + hi) / 2 + 0.5)
            elif lo is not None:
                value = max(lo, default)
            elif hi is not None:
                value = min(hi, default)
            else:
                value = default
            if multiple:
                step = int(multiple) if float(multiple).is_integer() else multiple
                value = round(value / step) * step
                if lo is not None and value < lo:
                    value += step
                if hi is not None and value > hi:
                    value -= step
            return int(value)

        lo_f = max([v for v in (minimum, ex_min) if v is not None], default=None)
        hi_f = min([v for v in (maximum, ex_max) if v is not None], default=None)
        if lo_f is not None and hi_f is not None:
            value = (lo_f + hi_f) / 2
        elif lo_f is not None:
            value = max(float(lo_f) + (1.0 if ex_min is not None else 0.0), default)
        elif hi_f is not None:
            value = min(float(hi_f) - (1.0 if ex_max is not None else 0.0), default)
        else:
            value = default
        if multiple:
            value = round(value / multiple) * multiple
            if lo_f is not None and value < lo_f:
                value += multiple
            if hi_f is not None and value > hi_f:
                value -= multiple
        return float(value)


# --------------------------------------------------------------------------- #
# Server
# --------------------------------------------------------------------------- #


@dataclass
class _Counted:
    match: str
    remaining: int
    status: int = 500
    calls: list[dict[str, Any]] | None = None
    skip: int = 0


def _simulated_error(failure: _Counted) -> str:
    """The message of an error scripted with :meth:`FakeOpenAIServer.fail`."""
    return f"Simulated error {failure.status} from FakeOpenAIServer (match={failure.match!r})."


@dataclass(frozen=True)
class _Context:
    agent: str | None
    schema: str | None
    system: str

    def matches(self, match: str) -> bool:
        return match == self.schema or match == self.agent or match in self.system


@dataclass
class _Answer:
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str


@dataclass
class _Turn:
    """What the server makes of one chat body before answering it, live or as a batch line.

    :meth:`FakeOpenAIServer._chat_turn` reads the body; :meth:`FakeOpenAIServer._draw`
    fills in the scripted behaviour that applies to it.
    """

    ctx: _Context
    json_schema: Mapping[str, Any] | None
    forced: str | None
    after_tool: bool
    delay: float = 0.0
    failure: _Counted | None = None
    fault: str | None = None
    script: _Counted | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def _forced_function(body: Mapping[str, Any]) -> str | None:
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return function["name"]
        if isinstance(tool_choice.get("name"), str):
            return tool_choice["name"]
    return None


def _json_schema_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        json_schema = response_format.get("json_schema")
        return json_schema if isinstance(json_schema, Mapping) else {}
    return None


def _tool_functions(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    functions: list[Mapping[str, Any]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
                functions.append(tool["function"])
    return functions


def _completion(
    answer: _Answer, *, completion_id: str, created: int, model: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``chat.completion`` object for ``answer``: the response, or what a streamed call stores.

    ``usage=None`` leaves the ``usage`` key out, as a server that does not report it does.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "service_tier": "default",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        ],
        **({"usage": usage} if usage is not None else {}),
    }


def _error_body(status: int, message: str, **fields: Any) -> dict[str, Any]:
    """OpenAI's ``{"error": {...}}`` body for ``status``; ``fields`` override its keys."""
    error_type, code = _ERROR_TYPES.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    )
    return {"error": {"message": message, "type": error_type, "param": None, "code": code, **fields}}


_HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
"""The body of a ``non_json`` fault: what a proxy in front of a model server may send with a 200."""


def _violating(answer: _Answer) -> _Answer:
    """``answer`` made into valid JSON that fails any requested schema (a ``schema_violation``).

    A text or JSON answer becomes ``{"unexpected": ...}``; tool-call arguments become
    ``{"unexpected": true}``, which a strict schema with required fields refuses.
    """
    if answer.tool_calls:
        calls = [
            {**call, "function": {**call["function"], "arguments": json.dumps({"unexpected": True})}}
            for call in answer.tool_calls
        ]
        return _Answer(content=answer.content, tool_calls=calls, finish_reason=answer.finish_reason)
    return _Answer(
        content=json.dumps({"unexpected": "this answer does not follow the requested schema"}),
        tool_calls=[],
        finish_reason=answer.finish_reason,
    )


@dataclass(frozen=True)
class Billed:
    """What the server billed: every answer it produced, read by the client or not.

    The totals include the answers to batch lines (see :meth:`FakeOpenAIServer.script_batch`);
    the ``batch_*`` fields count those alone, so live figures are the difference.

    Attributes:
        responses: Answers produced (errors with a 4xx/5xx status are not billed).
        input_tokens: Prompt tokens billed.
        output_tokens: Completion tokens billed.
        batch_responses: Of ``responses``, the answers to batch lines.
        batch_input_tokens: Of ``input_tokens``, those of batch lines.
        batch_output_tokens: Of ``output_tokens``, those of batch lines.
    """

    responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    batch_responses: int = 0
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Input plus output tokens billed."""
        return self.input_tokens + self.output_tokens

    @property
    def batch_tokens(self) -> int:
        """Input plus output tokens billed for batch lines."""
        return self.batch_input_tokens + self.batch_output_tokens


class _FaultPlan:
    """The faults :meth:`FakeOpenAIServer.inject_faults` asked for, drawn per request.

    Each kind has its own rate; for each request the kinds are tried in the
    order of :data:`FAULT_KINDS`, each with its own draw from one seeded RNG,
    and the first that hits is injected.
    """

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        seed: int,
        hang_s: float,
        retry_after_s: float,
        match: str | None,
        models: Sequence[str] | None,
        limit: int | None,
    ) -> None:
        self.rates = dict(rates)
        self.rng = random.Random(seed)
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self.match = match
        self.models = None if models is None else frozenset(models)
        self.left = limit

    def draw(self, ctx: _Context, model: str) -> str | None:
        if self.match is not None and not ctx.matches(self.match):
            return None
        if (self.models is not None and model not in self.models) or self.left == 0:
            return None
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind, 0.0)
            if rate > 0 and self.rng.random() < rate:
                if self.left is not None:
                    self.left -= 1
                return kind
        return None


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------- #
# Files and batches
# --------------------------------------------------------------------------- #

BATCH_ENDPOINT = "/v1/chat/completions"
"""The only endpoint the fake runs batches for (lines' ``url`` and the batch's ``endpoint``)."""

BATCH_OUTCOMES: tuple[str, ...] = ("completed", "failed", "expired", "cancelled")
"""The terminal statuses a batch can be scripted to end in (:meth:`FakeOpenAIServer.script_batch`)."""

BATCH_WINDOW_S = 24 * 3600
"""A batch's ``completion_window`` (``"24h"``, the only one accepted) in s: ``expires_at - created_at``."""

_FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_BATCH_FILE_TTL_S = 30 * 24 * 3600  # files with purpose "batch" expire after 30 days by default
_FILES_ROUTE = re.compile(r"/v1/files(?:/([^/]+)(/content)?)?$")
_BATCHES_ROUTE = re.compile(r"/v1/batches(?:/([^/]+)(/cancel)?)?$")
_LINE_ERRORS: dict[str, tuple[str, str]] = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


@dataclass
class FakeFile:
    """A file held by :class:`FakeOpenAIServer`: uploaded, or a batch's output or error file.

    Attributes:
        id: ``"file-..."``.
        filename: The uploaded name, or ``"{batch_id}_output.jsonl"`` / ``"{batch_id}_error.jsonl"``.
        purpose: As uploaded (``"batch"``, ``"user_data"``, ...), or ``"batch_output"`` for the
            files a batch writes.
        content: The bytes, as served by ``GET /v1/files/{id}/content``.
        created_at: Unix time (s) of the upload or of the batch's end.
    """

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    @property
    def lines(self) -> list[dict[str, Any]]:
        """The JSON objects of a JSONL file (a batch input, output or error file), in order."""
        # Split on "\n" only, as batch_input_problems does: str.splitlines() also splits on
        # U+2028 and friends, which JSON strings may hold unescaped.
        return [json.loads(line) for line in self.content.decode("utf-8").split("\n") if line.strip()]

    def to_object(self) -> dict[str, Any]:
        """The ``file`` object the API serves (``openai.types.FileObject``)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.created_at + _BATCH_FILE_TTL_S if self.purpose == "batch" else None,
            "status_details": None,
        }


@dataclass
class FakeBatch:
    """A batch held by :class:`FakeOpenAIServer` (see :meth:`FakeOpenAIServer.script_batch`).

    Attributes:
        id: ``"batch_..."``.
        input_file_id: The uploaded JSONL file the batch runs.
        endpoint: Always :data:`BATCH_ENDPOINT`.
        completion_window: Always ``"24h"``.
        metadata: The ``metadata`` given at creation, or ``None``.
        lines: The input file's request lines (``custom_id``, ``method``, ``url``, ``body``),
            read when the batch was created.
        model: The ``model`` of the first line (or the server's ``model`` override).
        outcome: The terminal status the batch is headed for (one of :data:`BATCH_OUTCOMES`);
            a cancel call overrides it.
        after_polls: The retrieve on which the batch reaches ``outcome``.
        fail_lines: 1-based input lines that do not succeed (see :meth:`FakeOpenAIServer.script_batch`).
        created_at: Unix time (s) of creation; ``expires_at`` is :data:`BATCH_WINDOW_S` later.
        status: The current status (``openai.types.Batch.status``).
        polls: ``GET /v1/batches/{id}`` calls so far.
        cancel_poll: ``polls`` when the batch became ``cancelling``; the next retrieve cancels it.
        results: Input line index (0-based) -> the output or error line written for it.
        errors: The validation errors of a ``failed`` batch (``openai.types.BatchError`` dicts).
        requests: One record per answered line, as the live endpoint records its requests (these
            are not in :attr:`FakeOpenAIServer.requests`); ``billed`` is what was billed for it.
        output_file_id: The output file, once the batch ended with at least one answered line.
        error_file_id: The error file, once the batch ended with at least one failed line.
    """

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    lines: list[dict[str, Any]]
    model: str | None
    outcome: str
    after_polls: int
    fail_lines: tuple[int, ...]
    created_at: int
    status: str = "validating"
    polls: int = 0
    cancel_poll: int | None = None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None

    @property
    def request_counts(self) -> dict[str, int]:
        """``total``/``completed``/``failed`` lines; expired and cancelled lines count as failed.

        A ``failed`` batch never ran, so all three are 0.
        """
        if self.status == "failed":
            return {"total": 0, "completed": 0, "failed": 0}
        completed = sum(1 for r in self.results.values() if _line_status(r) == 200)
        return {"total": len(self.lines), "completed": completed, "failed": len(self.results) - completed}

    @property
    def usage(self) -> dict[str, Any]:
        """The summed usage of the answered lines (``openai.types.BatchUsage``)."""
        billed = [r.billed for r in self.requests if r.billed is not None]
        prompt = sum(int(b["prompt_tokens"]) for b in billed)
        completion = sum(int(b["completion_tokens"]) for b in billed)
        return {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": sum(int(b["prompt_tokens_details"]["cached_tokens"]) for b in billed)
            },
            "output_tokens": completion,
            "output_tokens_details": {
                "reasoning_tokens": sum(
                    int(b["completion_tokens_details"]["reasoning_tokens"]) for b in billed
                )
            },
            "total_tokens": prompt + completion,
        }

    def answerable(self) -> list[int]:
        """Indices of the lines the batch answers: all but the ``fail_lines`` of an expiry or cancel."""
        if self.outcome in _LINE_ERRORS:
            return [i for i in range(len(self.lines)) if i + 1 not in self.fail_lines]
        return list(range(len(self.lines)))

    def to_object(self) -> dict[str, Any]:
        """The ``batch`` object the API serves (``openai.types.Batch``)."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": copy.deepcopy(self.errors)} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.created_at + BATCH_WINDOW_S,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": self.request_counts,
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "usage": self.usage,
        }


@dataclass
class _BatchScript:
    outcome: str
    match: str | None
    after_polls: int | None
    fail_lines: tuple[int, ...] | None
    remaining: int


def _line_status(result: Mapping[str, Any]) -> int | None:
    """The HTTP status of an output/error line; ``None`` for an expired or cancelled line."""
    response = result.get("response")
    return int(response["status_code"]) if isinstance(response, Mapping) else None


def _jsonl(items: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode("utf-8")


def _multipart_fields(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """The parts of a ``multipart/form-data`` body: name -> (filename, bytes); ``None`` if not one."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def batch_input_problems(data: bytes) -> list[str]:
    """What is wrong with a batch input file, one entry per problem, each naming its line.

    A file is one JSON object per line (a final newline is allowed, blank lines are not),
    each with a non-empty ``custom_id`` unique in the file, ``"method": "POST"``,
    ``"url": "/v1/chat/completions"`` (:data:`BATCH_ENDPOINT`) and a JSON-object ``body``.
    Whether a ``body`` is a valid chat request is not checked here: the batch answers
    such a line with the live endpoint's 400, in its error file.

    Args:
        data: The uploaded bytes.

    Returns:
        The problems, in line order; empty for a valid file.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ["the file is not UTF-8 text"]
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    if not rows:
        return ["the file has no requests"]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if not row.strip():
            problems.append(f"line {number} is empty")
            continue
        try:
            item = json.loads(row)
        except ValueError:
            problems.append(f"line {number} is not valid JSON")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number} is not a JSON object")
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(f"line {number}: `custom_id` must be a non-empty string")
        elif custom_id in seen:
            problems.append(
                f"line {number}: `custom_id` `{custom_id}` is already used on line {seen[custom_id]}"
            )
        else:
            seen[custom_id] = number
        if item.get("method") != "POST":
            problems.append(f"line {number}: `method` must be `POST`, not `{item.get('method')}`")
        if item.get("url") != BATCH_ENDPOINT:
            problems.append(f"line {number}: `url` must be `{BATCH_ENDPOINT}`, not `{item.get('url')}`")
        if not isinstance(item.get("body"), dict):
            problems.append(f"line {number}: `body` must be a JSON object")
    return problems


def _page(items: Sequence[Any], query: Mapping[str, str], *, default: int, most: int) -> dict[str, Any]:
    """A cursor-paged ``list`` of API objects (``limit``/``after``, as the SDK's ``SyncCursorPage`` reads).

    Raises:
        ValueError: A ``limit`` that is not an integer within 1-``most``, or an ``after``
            that names no listed object.
    """
    raw_limit = query.get("limit", str(default))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= most:
        raise ValueError(f"`limit` must be an integer within 1-{most}, not `{raw_limit}`")
    limit = int(raw_limit)
    objects = [item.to_object() for item in items]
    after = query.get("after")
    if after is not None:
        ids = [o["id"] for o in objects]
        if after not in ids:
            raise ValueError(f"`after` names no listed object: `{after}`")
        objects = objects[ids.index(after) + 1 :]
    data = objects[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(objects) > limit,
    }


def _query(path: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients going away; report anything else as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def __init__(self, fake: FakeOpenAIServer) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (about 40 ms a request on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # -- low level I/O ------------------------------------------------------ #

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        self.wfile.write(data)

    def send_and_drop(self, data: bytes, content_type: str) -> None:
        """Announce all of ``data``, send half of it, then close the connection."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.drop()

    def drop(self) -> None:
        """Close the connection now, mid-response."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_error_json(self, status: int, message: str, **fields: Any) -> None:
        payload = _error_body(status, message, **fields)
        # A short retry-after keeps clients that do retry (max_retries > 0) fast.
        self.send_json(status, payload, {"retry-after-ms": "10"})

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()

    def send_sse(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        data = f"data: {text}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- routing ------------------------------------------------------------ #

    def _batch_api(self, method: str, raw: bytes) -> bool:
        """Serve ``/v1/files...`` and ``/v1/batches...``; False for any other path."""
        route = urlsplit(self.path).path.rstrip("/")
        fake = self.server.fake
        found = _FILES_ROUTE.search(route)
        if found is not None:
            fake._serve_files(self, method, found.group(1), bool(found.group(2)), raw)
            return True
        found = _BATCHES_ROUTE.search(route)
        if found is not None:
            fake._serve_batches(self, method, found.group(1), bool(found.group(2)), raw)
            return True
        return False

    def do_DELETE(self) -> None:
        """Serve ``DELETE /v1/files/{id}``."""
        raw = self._read_body()
        if not self._batch_api("DELETE", raw):
            self.send_error_json(404, f"Unknown path: {self.path}")

    def do_GET(self) -> None:
        """Serve models, stored chat completions, files and batches."""
        path = self.path.split("?", 1)[0].rstrip("/")
        fake = self.server.fake
        if self._batch_api("GET", b""):
            return
        if path.endswith("/chat/completions"):
            query = parse_qs(urlsplit(self.path).query)
            metadata = {
                key[len("metadata[") : -1]: values[0]
                for key, values in query.items()
                if key.startswith("metadata[") and key.endswith("]")
            }
            limit = int(query.get("limit", ["20"])[0])
            data = fake.list_stored(metadata, limit)
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                    "has_more": False,
                },
            )
        elif path.endswith("/models"):
            self.send_json(
                200,
                {"object": "list", "data": [fake.model_card(m) for m in fake.model_ids()]},
            )
        elif "/models/" in path:
            self.send_json(200, fake.model_card(path.rsplit("/models/", 1)[1]))
        else:
            self.send_error_json(404, f"Unknown path: {self.path}")

    def do_POST(self) -> None:
        """Serve chat completions, embeddings, file uploads and batch creation and cancels."""
        started = time.monotonic()
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if self._batch_api("POST", raw):
            return
        route = path.rstrip("/")
        if not (route.endswith("/chat/completions") or route.endswith("/embeddings")):
            self.send_error_json(404, f"Unknown path: {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        fake = self.server.fake
        if not isinstance(body, dict):
            fake._record(path, {}, None, None, False, started, 400, None)
            self.send_error_json(400, "Request body must be a JSON object.")
            return
        if route.endswith("/chat/completions"):
            fake._handle_chat(self, path, body, started)
        else:
            fake._handle_embeddings(self, path, body, started)


class FakeOpenAIServer:
    """A real local HTTP server imitating the OpenAI Chat Completions API.

    A request *matches* a ``match`` string when ``match`` equals its
    structured-output schema name, equals its agent (see
    :func:`agent_from_system_prompt`), or is a substring of its first system
    message.

    Attributes:
        latency_s: Seconds every chat/embedding request sleeps before answering.
        model: If set, reported as ``model`` in every response instead of
            echoing the request's model.
        embedding_dim: Default dimension of embedding vectors (a request's
            ``dimensions`` parameter takes precedence).
        requests: Every ``/chat/completions`` and ``/embeddings`` request, in
            order of completion (appended under a lock). Batch lines are not
            requests: they are recorded in their :attr:`FakeBatch.requests`.
        files: Uploaded files and batch output/error files by id (see :class:`FakeFile`).
        batches: Batches by id, in order of creation (see :class:`FakeBatch`).
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        model: str | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    ) -> None:
        """Create a server; call :meth:`start` (or use ``with``) to serve.

        Args:
            latency_s: Delay applied to every chat/embedding request.
            model: Override the ``model`` reported in responses (default: echo
                the request's model).
            embedding_dim: Default dimension of embedding vectors.
        """
        self.latency_s = latency_s
        self.model = model
        self.embedding_dim = embedding_dim
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._field_overrides: list[tuple[str, dict[str, Any]]] = []
        self._failures: list[_Counted] = []
        self.stored: list[dict[str, Any]] = []
        self._delays: dict[str, float] = {}
        self._scripts: list[_Counted] = []
        self._cached_tokens = 0
        self._reasoning_tokens = 0
        self._faults: _FaultPlan | None = None
        self.faults_injected: dict[str, int] = {}
        self._billed = Billed()
        self._in_flight = 0
        # Files and batches have their own lock, taken before (never inside) ``_lock``: a
        # retrieve holds it while it answers lines through the live chat code path.
        self._batch_lock = threading.Lock()
        self.files: dict[str, FakeFile] = {}
        self.batches: dict[str, FakeBatch] = {}
        self._batch_scripts: list[_BatchScript] = []
        self._batch_after_polls = 2

    # -- lifecycle ------------------------------------------------------------ #

    @property
    def base_url(self) -> str:
        """``"http://127.0.0.1:PORT/v1"``; only available once started."""
        if self._base_url is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first.")
        return self._base_url

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first.")
        return int(self._httpd.server_address[1])

    def start(self) -> FakeOpenAIServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server is already running.
        """
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAIServer is already running.")
        httpd = _HTTPServer(self)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        thread.start()
        self._httpd = httpd
        self._thread = thread
        self._base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        return self

    def stop(self) -> None:
        """Stop serving, close open keep-alive connections and free the port."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        with httpd.connections_lock:
            connections = list(httpd.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        self._base_url = None

    def __enter__(self) -> FakeOpenAIServer:
        """Start the server and return it."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- scripting ------------------------------------------------------------ #

    def chat_requests(self, agent: str | None = None) -> list[RecordedRequest]:
        """Successful (HTTP 200) chat completion requests.

        Args:
            agent: If given, only requests whose derived agent equals it.

        Returns:
            The matching recorded requests in recording order.
        """
        with self._lock:
            recorded = list(self.requests)
        return [
            r
            for r in recorded
            if r.path.rstrip("/").endswith("/chat/completions")
            and r.status == 200
            and (agent is None or r.agent == agent)
        ]

    def set_fields(self, match: str, **values: Any) -> None:
        """Override top-level fields of generated structured output.

        Applies to ``json_schema`` content, forced function-call arguments and
        ``json_object`` content of matching requests. Later calls win.

        Args:
            match: Schema name, agent name or system-prompt substring.
            **values: Top-level keys and the values to put there.
        """
        with self._lock:
            self._field_overrides.append((match, dict(values)))

    def fail(self, match: str, *, status: int = 500, times: int = 1, after: int = 0) -> None:
        """Make the next ``times`` matching chat requests fail.

        The answer carries an OpenAI-style ``{"error": {...}}`` body and a
        ``retry-after-ms: 10`` header.

        Args:
            match: Schema name, agent name or system-prompt substring.
            status: HTTP status to answer with (500 gives
                ``openai.InternalServerError``, 429 ``openai.RateLimitError``).
            times: How many matching requests fail.
            after: How many matching requests succeed first.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._failures.append(_Counted(match=match, remaining=times, status=status, skip=after))

    def delay(self, match: str, seconds: float) -> None:
        """Make matching requests sleep before answering (on top of ``latency_s``).

        Args:
            match: Schema name, agent name or system-prompt substring.
            seconds: Extra delay; when several rules match, the largest applies.
        """
        with self._lock:
            self._delays[match] = seconds

    def script_tool_calls(self, match: str, calls: list[dict[str, Any]], *, times: int = 1) -> None:
        """Answer the next ``times`` matching tool-offering requests with tool calls.

        A request qualifies when it offers ``tools``, its last message is not a
        tool result and it does not force a function other than one of
        ``calls``. The answer has ``finish_reason="tool_calls"``.

        Args:
            match: Schema name, agent name or system-prompt substring.
            calls: ``[{"name": "calculate", "arguments": {...}}]``; ``arguments``
                may also be a JSON string; an optional ``id`` is used verbatim.
            times: How many matching requests are answered this way.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        normalised: list[dict[str, Any]] = []
        for call in calls:
            if not isinstance(call.get("name"), str):
                raise ValueError(f"tool call without a name: {call!r}")
            normalised.append(copy.deepcopy(dict(call)))
        with self._lock:
            self._scripts.append(_Counted(match=match, remaining=times, calls=normalised))

    def set_usage(self, *, cached_tokens: int = 0, reasoning_tokens: int = 0) -> None:
        """Set the reported ``cached_tokens`` and ``reasoning_tokens``.

        Args:
            cached_tokens: Reported as ``prompt_tokens_details.cached_tokens``.
            reasoning_tokens: Reported as ``completion_tokens_details.reasoning_tokens``.
        """
        with self._lock:
            self._cached_tokens = cached_tokens
            self._reasoning_tokens = reasoning_tokens

    def reset(self) -> None:
        """Clear recorded requests, files, batches and all scripted behaviour."""
        with self._batch_lock:
            self.files.clear()
            self.batches.clear()
            self._batch_scripts.clear()
            self._batch_after_polls = 2
        with self._lock:
            self.requests.clear()
            self._field_overrides.clear()
            self._failures.clear()
            self._delays.clear()
            self._scripts.clear()
            self.stored.clear()
            self._cached_tokens = 0
            self._reasoning_tokens = 0
            self._faults = None
            self.faults_injected = {}
            self._billed = Billed()

    # -- faults --------------------------------------------------------------- #

    def inject_faults(
        self,
        rates: float | Mapping[str, float],
        *,
        kinds: Sequence[str] = FAULT_KINDS,
        seed: int = 0,
        hang_s: float = 2.0,
        retry_after_s: float = 0.05,
        match: str | None = None,
        models: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        """Answer chat requests with faults at a rate per kind (see :data:`FAULT_KINDS`).

        Faults apply to streamed and plain requests alike; scripted failures
        (:meth:`fail`) take precedence. Replaces any earlier plan; the counts in
        :attr:`faults_injected` and :attr:`billed` go on.

        Args:
            rates: One rate (0-1) for every kind in ``kinds``, or a rate per kind.
            kinds: The kinds a single ``rates`` applies to.
            seed: Seed of the RNG that draws the faults.
            hang_s: How long a ``hang`` sleeps before answering (s): make it longer
                than the client's timeout.
            retry_after_s: The ``Retry-After`` of a ``rate_limit`` (s).
            match: Only requests matching this (schema, agent or system-prompt
                substring) get faults; ``None`` for all.
            models: Only requests for these models get faults; ``None`` for all.
            limit: Inject at most this many faults, then none; ``None`` for no limit.

        Raises:
            ValueError: An unknown kind, or a rate outside 0-1.
        """
        per_kind = dict.fromkeys(kinds, rates) if isinstance(rates, int | float) else dict(rates)
        for kind, rate in per_kind.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not 0 <= rate <= 1:
                raise ValueError(f"rate of {kind!r} must be within 0-1, not {rate!r}")
        plan = _FaultPlan(
            per_kind,
            seed=seed,
            hang_s=hang_s,
            retry_after_s=retry_after_s,
            match=match,
            models=models,
            limit=limit,
        )
        with self._lock:
            self._faults = plan

    def stop_faults(self) -> None:
        """Stop injecting faults (counts are kept)."""
        with self._lock:
            self._faults = None

    @property
    def billed(self) -> Billed:
        """The tokens billed so far: every chat answer produced, whether the client read it or not."""
        with self._lock:
            return self._billed

    @property
    def in_flight(self) -> int:
        """Chat requests being answered right now."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no chat request is being answered (a hung one finishes and bills late).

        Returns:
            True when idle, False when ``timeout`` (s) passed first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    # -- batches -------------------------------------------------------------- #

    def batch_mode(self, *, after_polls: int = 2) -> None:
        """Set on which retrieve unscripted batches end (``completed``).

        Args:
            after_polls: The ``GET /v1/batches/{id}`` that ends a batch: 2 (the default)
                answers ``in_progress`` to the first retrieve and ``completed`` to the
                second; 1 completes on the first; 0 completes within the create call.

        Raises:
            ValueError: A negative ``after_polls``.
        """
        if after_polls < 0:
            raise ValueError(f"after_polls must be >= 0, not {after_polls!r}")
        with self._batch_lock:
            self._batch_after_polls = after_polls

    def script_batch(
        self,
        status: str = "completed",
        *,
        match: str | None = None,
        after_polls: int | None = None,
        fail_lines: Sequence[int] | None = None,
        times: int = 1,
    ) -> None:
        """Script how the next ``times`` batches created (matching ``match``) end.

        ``fail_lines`` are 1-based input lines that do not succeed; what that means
        depends on ``status``:

        - ``"completed"``: they are answered with an HTTP 500 error in the error file
          (default: none);
        - ``"failed"``: validation refuses them, listed in the batch's ``errors`` (code
          ``invalid_request``, with their ``line``); nothing runs, no files are written
          and ``request_counts`` stay 0 (default: line 1). The batch stays ``validating``
          until it fails;
        - ``"expired"``: they are never answered and go to the error file with code
          ``batch_expired`` (default: the second half, lines ``n // 2 + 1`` to ``n``);
        - ``"cancelled"``: the batch turns ``cancelling`` (as if cancelled elsewhere) on
          retrieve ``after_polls`` and ``cancelled`` on the next; these lines go to the error
          file with code ``batch_cancelled`` (default: the second half).

        The other lines are answered as the live endpoint would, spread over the
        ``in_progress`` retrieves, and written to the output file. Lines beyond the file
        are ignored. Scripts are matched in the order given, when a batch is created.

        Args:
            status: The terminal status, one of :data:`BATCH_OUTCOMES`.
            match: Only batches with a line whose ``custom_id`` starts with this; ``None``
                for any batch.
            after_polls: The retrieve on which the batch reaches ``status`` (``cancelling``
                for ``"cancelled"``); ``None`` for the :meth:`batch_mode` default.
            fail_lines: The 1-based lines that do not succeed (see above).
            times: How many batches this script applies to.

        Raises:
            ValueError: An unknown ``status``, ``times`` < 1, ``after_polls`` < 0, a line
                number < 1, or no ``fail_lines`` for ``"failed"``.
        """
        if status not in BATCH_OUTCOMES:
            raise ValueError(f"unknown batch status {status!r}; scriptable: {', '.join(BATCH_OUTCOMES)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if after_polls is not None and after_polls < 0:
            raise ValueError(f"after_polls must be >= 0, not {after_polls!r}")
        lines = None if fail_lines is None else tuple(int(n) for n in fail_lines)
        if lines is not None and any(n < 1 for n in lines):
            raise ValueError(f"fail_lines are 1-based line numbers, not {fail_lines!r}")
        if status == "failed" and lines == ():
            raise ValueError("a failed batch needs at least one of fail_lines")
        with self._batch_lock:
            self._batch_scripts.append(
                _BatchScript(
                    outcome=status, match=match, after_polls=after_polls, fail_lines=lines, remaining=times
                )
            )

    def _serve_files(
        self, handler: _Handler, method: str, file_id: str | None, content: bool, raw: bytes
    ) -> None:
        if file_id is None and method == "POST":
            self._upload(handler, raw)
            return
        if file_id is None and method == "GET":
            query = _query(handler.path)
            purpose = query.get("purpose")
            with self._batch_lock:
                files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
                if query.get("order", "desc") == "desc":
                    files.reverse()
                try:
                    page = _page(files, query, default=10_000, most=10_000)
                except ValueError as error:
                    handler.send_error_json(400, str(error))
                    return
            handler.send_json(200, page)
            return
        if file_id is None or method not in (("GET",) if content else ("GET", "DELETE")):
            handler.send_error_json(405, f"`{method}` is not served on {handler.path}")
            return
        with self._batch_lock:
            stored = self.files.get(file_id)
            if stored is not None and method == "DELETE":
                del self.files[file_id]
        if stored is None:
            handler.send_error_json(
                404, f"No such File object: {file_id}", type="invalid_request_error", param="id", code=None
            )
        elif method == "DELETE":
            handler.send_json(200, {"id": file_id, "object": "file", "deleted": True})
        elif content:
            handler.send_raw(200, stored.content, "application/octet-stream")
        else:
            handler.send_json(200, stored.to_object())

    def _upload(self, handler: _Handler, raw: bytes) -> None:
        fields = _multipart_fields(handler.headers.get("Content-Type") or "", raw)
        if fields is None or "file" not in fields:
            handler.send_error_json(400, "Upload a `file` part as multipart/form-data.", param="file")
            return
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in _FILE_PURPOSES:
            handler.send_error_json(
                400,
                f"`purpose` must be one of {', '.join(sorted(_FILE_PURPOSES))}, not `{purpose}`.",
                param="purpose",
            )
            return
        filename, data = fields["file"]
        filename = filename or "upload"
        if purpose == "batch":
            problems = batch_input_problems(data)
            if problems:
                handler.send_error_json(
                    400, f"Invalid batch input file `{filename}`: {'; '.join(problems)}.", param="file"
                )
                return
        with self._batch_lock:
            stored = self._new_file(filename, purpose, data)
        handler.send_json(200, stored.to_object())

    def _new_file(self, filename: str, purpose: str, content: bytes) -> FakeFile:
        """Keep a new file (the caller holds ``_batch_lock``)."""
        stored = FakeFile(
            id=self._next_id("file"),
            filename=filename,
            purpose=purpose,
            content=content,
            created_at=int(time.time()),
        )
        self.files[stored.id] = stored
        return stored

    def _serve_batches(
        self, handler: _Handler, method: str, batch_id: str | None, cancel: bool, raw: bytes
    ) -> None:
        if batch_id is None and method == "POST":
            self._create_batch(handler, raw)
            return
        if batch_id is None and method == "GET":
            with self._batch_lock:
                try:
                    page = _page(
                        list(reversed(self.batches.values())), _query(handler.path), default=20, most=100
                    )
                except ValueError as error:
                    handler.send_error_json(400, str(error))
                    return
            handler.send_json(200, page)
            return
        if batch_id is None or method != ("POST" if cancel else "GET"):
            handler.send_error_json(405, f"`{method}` is not served on {handler.path}")
            return
        with self._batch_lock:
            batch = self.batches.get(batch_id)
            refusal = None
            if batch is not None and cancel:
                refusal = self._cancel(batch)
            elif batch is not None:
                batch.polls += 1
                self._advance(batch)
            answer = batch.to_object() if batch is not None else None
        if answer is None:
            handler.send_error_json(
                404, f"No such Batch object: {batch_id}", type="invalid_request_error", param="id", code=None
            )
        elif refusal is not None:
            handler.send_error_json(400, refusal)
        else:
            handler.send_json(200, answer)

    def _create_batch(self, handler: _Handler, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            handler.send_error_json(400, "Request body must be a JSON object.")
            return
        input_file_id = body.get("input_file_id")
        metadata = body.get("metadata")
        problem: tuple[str, str] | None = None
        if not isinstance(input_file_id, str) or not input_file_id:
            problem = ("input_file_id", "`input_file_id` must name an uploaded file.")
        elif body.get("endpoint") != BATCH_ENDPOINT:
            problem = (
                "endpoint",
                f"`endpoint` must be `{BATCH_ENDPOINT}` (the only one FakeOpenAIServer batches), "
                f"not `{body.get('endpoint')}`.",
            )
        elif body.get("completion_window") != "24h":
            problem = (
                "completion_window",
                f"`completion_window` must be `24h`, not `{body.get('completion_window')}`.",
            )
        elif metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            problem = ("metadata", "`metadata` must map at most 16 string keys to string values.")
        if problem is not None:
            handler.send_error_json(400, problem[1], param=problem[0])
            return
        answer: dict[str, Any] | None = None
        with self._batch_lock:
            source = self.files.get(str(input_file_id))
            if source is not None and source.purpose == "batch":
                batch = self._new_batch(source, metadata)
                self._advance(batch)
                answer = batch.to_object()
        if source is None:
            handler.send_error_json(
                404,
                f"No such File object: {input_file_id}",
                type="invalid_request_error",
                param="input_file_id",
                code=None,
            )
        elif source.purpose != "batch":
            handler.send_error_json(
                400,
                f"File `{source.id}` has purpose `{source.purpose}`; a batch input needs purpose `batch`.",
                param="input_file_id",
            )
        else:
            handler.send_json(200, answer)

    def _new_batch(self, source: FakeFile, metadata: Mapping[str, str] | None) -> FakeBatch:
        """Create a batch over ``source``, taking the first matching script (caller holds ``_batch_lock``)."""
        lines = source.lines
        script = next(
            (
                s
                for s in self._batch_scripts
                if s.remaining > 0
                and (s.match is None or any(line["custom_id"].startswith(s.match) for line in lines))
            ),
            None,
        )
        outcome = "completed" if script is None else script.outcome
        after_polls = self._batch_after_polls
        fail_lines = None
        if script is not None:
            script.remaining -= 1
            after_polls = self._batch_after_polls if script.after_polls is None else script.after_polls
            fail_lines = script.fail_lines
        total = len(lines)
        if fail_lines is None:
            defaults = {"failed": (1,), "completed": ()}
            fail_lines = defaults.get(outcome, tuple(range(total // 2 + 1, total + 1)))
        model = lines[0]["body"].get("model")
        batch = FakeBatch(
            id=f"batch_fake{next(self._ids):05d}{uuid.uuid4().hex[:12]}",
            input_file_id=source.id,
            endpoint=BATCH_ENDPOINT,
            completion_window="24h",
            metadata=dict(metadata) if metadata is not None else None,
            lines=lines,
            model=self.model or (model if isinstance(model, str) else None),
            outcome=outcome,
            after_polls=after_polls,
            fail_lines=tuple(n for n in fail_lines if n <= total),
            created_at=int(time.time()),
        )
        self.batches[batch.id] = batch
        return batch

    def _cancel(self, batch: FakeBatch) -> str | None:
        """Start cancelling ``batch``; the refusal message when it has already ended."""
        if batch.status in ("validating", "in_progress"):
            batch.status = "cancelling"
            batch.cancelling_at = int(time.time())
            batch.cancel_poll = batch.polls
            return None
        if batch.status == "cancelling":
            return None
        return f"Batch `{batch.id}` is `{batch.status}` and can no longer be cancelled."

    def _advance(self, batch: FakeBatch) -> None:
        """Move ``batch`` on after a retrieve (or its creation), answering the lines now due.

        The caller holds ``_batch_lock``. On retrieve ``k`` of ``n = after_polls`` the
        batch has answered the first ``len(answerable) * k // n`` of its answerable lines;
        on retrieve ``n`` it has answered them all and reaches its outcome.
        """
        if batch.status in BATCH_OUTCOMES:
            return
        now = int(time.time())
        if batch.status == "cancelling":
            if batch.cancel_poll is not None and batch.polls > batch.cancel_poll:
                self._finish_batch(batch, "cancelled")
            return
        due = batch.polls >= batch.after_polls
        if batch.outcome == "failed":
            if due:
                batch.status = "failed"
                batch.failed_at = now
                batch.errors = [
                    {
                        "code": "invalid_request",
                        "line": number,
                        "message": f"Line {number} was refused by validation (script_batch).",
                        "param": None,
                    }
                    for number in batch.fail_lines
                ]
            return
        if batch.status == "validating" and (batch.polls >= 1 or due):
            batch.status = "in_progress"
            batch.in_progress_at = now
        if batch.status != "in_progress":
            return
        answerable = batch.answerable()
        if not due:
            answerable = answerable[: len(answerable) * batch.polls // batch.after_polls]
        for index in answerable:
            if index not in batch.results:
                batch.results[index] = self._answer_line(batch, index)
        if not due:
            return
        if batch.outcome == "cancelled":
            self._cancel(batch)
        else:
            self._finish_batch(batch, batch.outcome)

    def _finish_batch(self, batch: FakeBatch, status: str) -> None:
        """End ``batch`` as ``completed``, ``expired`` or ``cancelled`` and write its files."""
        now = int(time.time())
        if status in _LINE_ERRORS:
            code, message = _LINE_ERRORS[status]
            for index, line in enumerate(batch.lines):
                if index not in batch.results:
                    batch.results[index] = {
                        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": message},
                    }
        ordered = [batch.results[i] for i in sorted(batch.results)]
        answered = [r for r in ordered if _line_status(r) == 200]
        failed = [r for r in ordered if _line_status(r) != 200]
        if answered:
            batch.output_file_id = self._new_file(
                f"{batch.id}_output.jsonl", "batch_output", _jsonl(answered)
            ).id
        if failed:
            batch.error_file_id = self._new_file(f"{batch.id}_error.jsonl", "batch_output", _jsonl(failed)).id
        batch.status = status
        if status == "completed":
            batch.finalizing_at = batch.completed_at = now
        elif status == "expired":
            batch.expired_at = now
        else:
            batch.cancelled_at = now

    def _answer_line(self, batch: FakeBatch, index: int) -> dict[str, Any]:
        """Answer input line ``index`` of ``batch`` as the live endpoint would; its output line.

        The body goes through the live code path (:meth:`_chat_turn`, :meth:`_draw` without
        faults, :meth:`_produce`), so :meth:`fail`, :meth:`set_fields`,
        :meth:`script_tool_calls` and :meth:`set_usage` apply; delays and ``stream`` do not.
        """
        line = batch.lines[index]
        body: dict[str, Any] = line["body"]
        started = time.monotonic()
        turn, refusal = self._chat_turn(body)
        ctx = turn.ctx if turn is not None else None
        usage: dict[str, Any] | None = None
        if batch.outcome == "completed" and index + 1 in batch.fail_lines:
            status = 500
            payload = _error_body(
                500, "The server had an error processing your request (FakeOpenAIServer.script_batch)."
            )
        elif refusal is not None:
            status, payload = 400, _error_body(400, refusal)
        else:
            assert turn is not None
            self._draw(turn, body, faults=False)
            if turn.failure is not None:
                status = turn.failure.status
                payload = _error_body(status, _simulated_error(turn.failure))
            else:
                answer, usage = self._produce(body, turn)
                status = 200
                payload = _completion(
                    answer,
                    completion_id=self._next_id("chatcmpl"),
                    created=int(time.time()),
                    model=self.model or body["model"],
                    usage=usage,
                )
                self._bill(usage, batch=True)
                self._store(body, payload)
        batch.requests.append(
            RecordedRequest(
                path=line["url"],
                body=body,
                agent=ctx.agent if ctx is not None else None,
                schema=ctx.schema if ctx is not None else None,
                stream=False,
                started=started,
                finished=time.monotonic(),
                status=status,
                usage=copy.deepcopy(usage),
                billed=copy.deepcopy(usage),
            )
        )
        return {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": payload},
            "error": None,
        }

    # -- models ------------------------------------------------------------- #

    def model_ids(self) -> list[str]:
        """Model ids listed by ``GET /v1/models``."""
        ids = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"]
        if self.model and self.model not in ids:
            ids.insert(0, self.model)
        return ids

    @staticmethod
    def model_card(model_id: str) -> dict[str, Any]:
        """The ``model`` object served for ``model_id``."""
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "fake"}

    # -- request handling ------------------------------------------------------ #

    def _record(
        self,
        path: str,
        body: dict[str, Any],
        agent: str | None,
        schema: str | None,
        stream: bool,
        started: float,
        status: int,
        usage: dict[str, Any] | None,
        *,
        fault: str | None = None,
        billed: dict[str, Any] | None = None,
    ) -> None:
        record = RecordedRequest(
            path=path,
            body=body,
            agent=agent,
            schema=schema,
            stream=stream,
            started=started,
            finished=time.monotonic(),
            status=status,
            usage=copy.deepcopy(usage),
            fault=fault,
            billed=copy.deepcopy(billed),
        )
        with self._lock:
            self.requests.append(record)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):05d}{uuid.uuid4().hex[:12]}"

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        with self._lock:
            cached, reasoning = self._cached_tokens, self._reasoning_tokens
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def _handle_chat(self, handler: _Handler, path: str, body: dict[str, Any], started: float) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self._chat(handler, path, body, started)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _chat_turn(self, body: Mapping[str, Any]) -> tuple[_Turn | None, str | None]:
        """Read a chat body: its turn, and the message of the 400 the endpoint answers it with.

        Returns:
            ``(turn, None)`` for a body the endpoint answers; ``(None, message)`` when
            ``messages`` is missing or empty; ``(turn, message)`` when ``model`` is.
        """
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None, "'messages' must be a non-empty array."
        system = first_system_text(messages)
        json_schema = _json_schema_format(body)
        forced = _forced_function(body)
        schema_name = forced or (
            str(json_schema.get("name")) if json_schema and json_schema.get("name") else None
        )
        ctx = _Context(agent=agent_from_system_prompt(system), schema=schema_name, system=system)
        last = messages[-1] if isinstance(messages[-1], Mapping) else {}
        turn = _Turn(
            ctx=ctx,
            json_schema=json_schema,
            forced=forced,
            after_tool=last.get("role") in ("tool", "function"),
        )
        if not isinstance(body.get("model"), str) or not body["model"]:
            return turn, "you must provide a model parameter"
        return turn, None

    def _draw(self, turn: _Turn, body: Mapping[str, Any], *, faults: bool) -> None:
        """Fill in the delay, scripted failure, fault, tool-call script and field overrides of ``turn``.

        Consumes what it draws (a :meth:`fail` or :meth:`script_tool_calls` count, a fault
        from the plan); ``faults=False`` (batch lines) leaves the fault plan alone.
        """
        ctx, forced = turn.ctx, turn.forced
        offers_tools = bool(_tool_functions(body))
        with self._lock:
            turn.delay = self.latency_s + max(
                (s for m, s in self._delays.items() if ctx.matches(m)), default=0.0
            )
            failure = next((f for f in self._failures if f.remaining > 0 and ctx.matches(f.match)), None)
            if failure is not None and failure.skip > 0:
                failure.skip -= 1
                failure = None
            elif failure is not None:
                failure.remaining -= 1
            turn.failure = failure
            if faults and failure is None and self._faults is not None:
                turn.fault = self._faults.draw(ctx, str(body["model"]))
            if turn.fault is not None:
                self.faults_injected[turn.fault] = self.faults_injected.get(turn.fault, 0) + 1
            if failure is None and offers_tools and not turn.after_tool:
                for candidate in self._scripts:
                    names = {c["name"] for c in candidate.calls or []}
                    if (
                        candidate.remaining > 0
                        and ctx.matches(candidate.match)
                        and (forced is None or forced in names)
                    ):
                        turn.script = candidate
                        candidate.remaining -= 1
                        break
            for match, values in self._field_overrides:
                if ctx.matches(match):
                    turn.overrides.update(values)

    def _produce(self, body: Mapping[str, Any], turn: _Turn) -> tuple[_Answer, dict[str, Any]]:
        """The answer to a drawn ``turn`` and its true usage (cut at ``max_completion_tokens``)."""
        answer = self._answer(
            body, turn.ctx, turn.script, turn.overrides, turn.json_schema, turn.forced, turn.after_tool
        )
        if turn.fault == "schema_violation":
            answer = _violating(answer)
        generated = answer.content or "".join(tc["function"]["arguments"] for tc in answer.tool_calls)
        completion_tokens = max(1, len(generated) // 4)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and completion_tokens > limit and answer.content is not None:
            # Like a real server: stop at the cap, report finish_reason "length".
            answer = _Answer(content=answer.content[: limit * 4], tool_calls=[], finish_reason="length")
            completion_tokens = limit
        return answer, self._usage(estimate_prompt_tokens(body), completion_tokens)

    def _chat(self, handler: _Handler, path: str, body: dict[str, Any], started: float) -> None:
        stream = bool(body.get("stream"))
        turn, refusal = self._chat_turn(body)
        if refusal is not None:
            agent, schema = (turn.ctx.agent, turn.ctx.schema) if turn is not None else (None, None)
            self._record(path, body, agent, schema, stream, started, 400, None)
            handler.send_error_json(400, refusal)
            return
        assert turn is not None
        ctx = turn.ctx
        self._draw(turn, body, faults=True)
        failure, fault = turn.failure, turn.fault

        if turn.delay > 0:
            time.sleep(turn.delay)
        if failure is not None:
            self._record(path, body, ctx.agent, ctx.schema, stream, started, failure.status, None)
            handler.send_error_json(failure.status, _simulated_error(failure))
            return
        if fault in ("rate_limit", "server_error"):
            assert self._faults is not None
            status = 429 if fault == "rate_limit" else 503
            self._record(path, body, ctx.agent, ctx.schema, stream, started, status, None, fault=fault)
            headers = {"retry-after": f"{self._faults.retry_after_s:g}"} if status == 429 else {}
            handler.send_json(
                status,
                {
                    "error": {
                        "message": f"Injected fault `{fault}` from FakeOpenAIServer.",
                        "type": "rate_limit_error" if status == 429 else "server_error",
                        "param": None,
                        "code": "rate_limit_exceeded" if status == 429 else None,
                    }
                },
                headers,
            )
            return

        answer, usage = self._produce(body, turn)
        if fault == "hang":
            assert self._faults is not None
            time.sleep(self._faults.hang_s)  # the client gives up; the server still finishes and bills
        reported: dict[str, Any] | None = usage
        if fault == "missing_usage":
            reported = None
        elif fault == "negative_usage":
            reported = {**usage, "prompt_tokens": -usage["prompt_tokens"] - 10_000}
            reported["completion_tokens"] = -usage["completion_tokens"] - 10_000
            reported["total_tokens"] = reported["prompt_tokens"] + reported["completion_tokens"]
        elif fault == "absurd_usage":
            reported = {**usage, "prompt_tokens": usage["prompt_tokens"] * 1_000_000}
            reported["completion_tokens"] = usage["completion_tokens"] * 1_000_000
            reported["total_tokens"] = reported["prompt_tokens"] + reported["completion_tokens"]
        elif fault == "tiny_usage":
            reported = {**usage, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        elif fault == "partial_usage":
            reported = {"completion_tokens": usage["completion_tokens"]}
        model = self.model or body["model"]
        completion_id = self._next_id("chatcmpl")
        created = int(time.time())
        self._bill(usage)

        def record(sent_usage: dict[str, Any] | None) -> None:
            self._record(
                path, body, ctx.agent, ctx.schema, stream, started, 200, sent_usage, fault=fault, billed=usage
            )

        if not stream:
            response = _completion(
                answer, completion_id=completion_id, created=created, model=model, usage=reported
            )
            # Record before writing so the record is visible once the client returns.
            record(reported)
            stored = _completion(
                answer, completion_id=completion_id, created=created, model=model, usage=usage
            )
            self._store(body, stored)
            try:
                if fault == "malformed_json":
                    text = json.dumps(response)
                    handler.send_raw(200, text[: len(text) // 2].encode(), "application/json")
                elif fault == "non_json":
                    handler.send_raw(200, _HTML_PAGE, "text/html; charset=utf-8")
                elif fault == "drop":
                    handler.send_and_drop(json.dumps(response).encode(), "application/json")
                else:
                    handler.send_json(200, response)
            except (BrokenPipeError, ConnectionResetError):  # a hung answer's client is gone
                handler.close_connection = True
            return

        if fault == "non_json":
            record(None)
            try:
                handler.send_raw(200, _HTML_PAGE, "text/html; charset=utf-8")
            except (BrokenPipeError, ConnectionResetError):
                handler.close_connection = True
            return

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, Mapping) and bool(stream_options.get("include_usage"))
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": "default",
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            payload = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        sent_usage = reported if include_usage else None
        recorded = False
        try:
            handler.start_sse()
            handler.send_sse(
                chunk(
                    {
                        "role": "assistant",
                        "content": "" if answer.content is not None else None,
                        "refusal": None,
                    }
                )
            )
            pieces = _split(answer.content or "", 4)
            for index, piece in enumerate(pieces):
                if fault == "drop" and index == len(pieces) // 2:
                    record(sent_usage)
                    recorded = True
                    handler.drop()
                    return
                if fault == "malformed_json" and index == len(pieces) // 2:
                    handler.send_sse(json.dumps(chunk({"content": piece}))[:40])
                    continue
                handler.send_sse(chunk({"content": piece}))
            for i, call in enumerate(answer.tool_calls):
                handler.send_sse(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for piece in _split(call["function"]["arguments"], 3):
                    if fault == "drop":
                        record(sent_usage)
                        recorded = True
                        handler.drop()
                        return
                    delta = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                    if fault == "malformed_json":
                        handler.send_sse(json.dumps(chunk(delta))[:40])
                        continue
                    handler.send_sse(chunk(delta))
            # Record before the final events so the record is visible once the
            # client has consumed the stream.
            record(sent_usage)
            recorded = True
            self._store(
                body,
                _completion(answer, completion_id=completion_id, created=created, model=model, usage=usage),
            )
            handler.send_sse(chunk({}, answer.finish_reason))
            if include_usage and reported is not None:
                handler.send_sse({**base, "choices": [], "usage": reported})
            handler.send_sse("[DONE]")
            handler.end_sse()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
            if not recorded:
                record(None)

    def _bill(self, usage: Mapping[str, Any], *, batch: bool = False) -> None:
        """Count an answer the server produced (see :attr:`billed`); ``batch`` for a batch line."""
        prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        with self._lock:
            billed = self._billed
            self._billed = Billed(
                responses=billed.responses + 1,
                input_tokens=billed.input_tokens + prompt,
                output_tokens=billed.output_tokens + completion,
                batch_responses=billed.batch_responses + int(batch),
                batch_input_tokens=billed.batch_input_tokens + (prompt if batch else 0),
                batch_output_tokens=billed.batch_output_tokens + (completion if batch else 0),
            )

    def _store(self, body: Mapping[str, Any], completion: dict[str, Any]) -> None:
        """Keep a completion asked for with ``store: true``, with its ``metadata``."""
        if body.get("store"):
            with self._lock:
                self.stored.append({**completion, "metadata": dict(body.get("metadata") or {})})

    def list_stored(self, metadata: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        """Stored completions whose metadata has every given key and value, oldest first."""
        with self._lock:
            found = [c for c in self.stored if all(c["metadata"].get(k) == v for k, v in metadata.items())]
        return found[:limit]

    def _answer(
        self,
        body: Mapping[str, Any],
        ctx: _Context,
        script: _Counted | None,
        overrides: Mapping[str, Any],
        json_schema: Mapping[str, Any] | None,
        forced: str | None,
        after_tool: bool,
    ) -> _Answer:
        if script is not None:
            calls = []
            for call in script.calls or []:
                arguments = call.get("arguments", {})
                calls.append(
                    self._tool_call(
                        call["name"],
                        arguments if isinstance(arguments, str) else json.dumps(arguments),
                        call.get("id"),
                    )
                )
            return _Answer(content=None, tool_calls=calls, finish_reason="tool_calls")

        functions = _tool_functions(body)
        tool_choice = body.get("tool_choice")
        target: Mapping[str, Any] | None = None
        if forced is not None:
            target = next((f for f in functions if f.get("name") == forced), {"name": forced})
        elif tool_choice == "required" and functions and not after_tool:
            target = functions[0]
        if target is not None:
            parameters = target.get("parameters") or {"type": "object", "properties": {}}
            arguments = generate_from_schema(parameters, name=str(target["name"]))
            if forced is not None and isinstance(arguments, dict):
                arguments.update(copy.deepcopy(dict(overrides)))
            call = self._tool_call(str(target["name"]), json.dumps(arguments))
            # The real API reports "stop" when tool_choice names a function.
            return _Answer(
                content=None,
                tool_calls=[call],
                finish_reason="stop" if forced is not None else "tool_calls",
            )

        if json_schema is not None:
            value = generate_from_schema(
                json_schema.get("schema") or {}, name=str(json_schema.get("name") or "value")
            )
            if isinstance(value, dict):
                value.update(copy.deepcopy(dict(overrides)))
            return _Answer(content=json.dumps(value), tool_calls=[], finish_reason="stop")

        response_format = body.get("response_format")
        if isinstance(response_format, Mapping) and response_format.get("type") == "json_object":
            value = {"response": self._plain_text(body, ctx, after_tool)}
            value.update(copy.deepcopy(dict(overrides)))
            return _Answer(content=json.dumps(value), tool_calls=[], finish_reason="stop")

        return _Answer(content=self._plain_text(body, ctx, after_tool), tool_calls=[], finish_reason="stop")

    @staticmethod
    def _tool_call(name: str, arguments: str, call_id: str | None = None) -> dict[str, Any]:
        return {
            "id": call_id or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    @staticmethod
    def _plain_text(body: Mapping[str, Any], ctx: _Context, after_tool: bool) -> str:
        messages = body.get("messages") or []
        speaker = f"the {ctx.agent} agent" if ctx.agent else "the assistant"
        if after_tool:
            results: list[str] = []
            for message in reversed(messages):
                if not isinstance(message, Mapping) or message.get("role") not in (
                    "tool",
                    "function",
                ):
                    break
                results.append(content_text(message.get("content")))
            joined = "; ".join(reversed(results))
            return f"Final answer from {speaker} based on the tool results: {joined[:200]}"
        last_user = next(
            (
                content_text(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, Mapping) and m.get("role") == "user"
            ),
            "",
        )
        snippet = " ".join(last_user.split())[:80]
        return f"Fake response from {speaker} to: {snippet}"

    def _handle_embeddings(self, handler: _Handler, path: str, body: dict[str, Any], started: float) -> None:
        raw_input = body.get("input")
        texts: list[str]
        if isinstance(raw_input, str):
            texts = [raw_input]
        elif isinstance(raw_input, list) and raw_input and all(isinstance(t, int) for t in raw_input):
            texts = [" ".join(f"tok{t}" for t in raw_input)]
        elif isinstance(raw_input, list) and raw_input:
            texts = []
            for item in raw_input:
                if isinstance(item, str):
                    texts.append(item)
                elif isinstance(item, list):
                    texts.append(" ".join(f"tok{t}" for t in item))
                else:
                    texts = []
                    break
        else:
            texts = []
        if not texts:
            self._record(path, body, None, None, False, started, 400, None)
            handler.send_error_json(400, "'input' must be a non-empty string or array.")
            return
        dimensions = body.get("dimensions")
        dim = int(dimensions) if isinstance(dimensions, int) and dimensions > 0 else None
        dim = dim or self.embedding_dim
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        base64_format = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dim)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
                if base64_format
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(1, len(text) // 4) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._record(path, body, None, None, False, started, 200, usage)
        handler.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": self.model or body.get("model") or "text-embedding-3-small",
                "usage": usage,
            },
        )
