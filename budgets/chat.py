"""The end of the chain: one round trip to a tier's chat model, or the local step.

Model tiers are ``ChatOpenAI`` instances from ``langchain-openai``, so any
OpenAI-compatible server works. The answer is asked for as OpenAI structured
output (``response_format`` with a strict JSON schema, given as a plain
schema so that the client never validates it: a bad answer comes back with
its usage, to be counted and repaired); tools, when the request has any, are
offered beside it. Each invocation is exactly one request: the OpenAI
client's own retries are off, since a retry is a new request that may be
billed, and the gateway retries with each attempt accounted for.

Usage is never taken on trust (:meth:`ChatModels.invoke`):

- a response without usage (or with all-zero usage) is counted with the
  model's tokenizer (:func:`~budgetgraph.budgets.request.count_tokens`): the
  prompt as sent, the completion as returned, each at most what the call
  reserved; the row says ``usage: estimated`` and a warning is logged once per model;
- usage that cannot be true is refused before it reaches the ledger, and the
  call is counted at its reservation (``usage: refused``): a negative or
  fractional count, more input than :data:`MAX_INPUT_FACTOR` times the
  request's upper-bound estimate, more output than :data:`MAX_OUTPUT_FACTOR`
  times its completion cap, more cached than input or more reasoning than
  output tokens, or any count over :data:`MAX_TOKENS`;
- a ``200`` whose body is no chat completion (not JSON, cut short, the wrong
  shape) raises :class:`UnusableResponseError`, which the router and the
  gateway retry like a broken connection.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, InvalidToolCall, ToolCall
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_function
from pydantic import BaseModel, SecretStr, ValidationError

from budgetgraph.budgets.config import Endpoint, ModelsConfig, Tier
from budgetgraph.budgets.deferred.queue import PENDING_STATES, BatchQueue, QueuedRequest
from budgetgraph.budgets.errors import DeferredFailedError, DeferredPending
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import (
    CallRequest,
    CallResult,
    ModelCall,
    UsageSource,
    count_tokens,
    tokenizer_name,
    unbilled_call,
)
from budgetgraph.lazy import lazy_module
from budgetgraph.tracing.attributes import STEP_LOCAL
from budgetgraph.tracing.spans import DEFAULT_PROVIDER, ChatRequest, chat_span, step_span

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI
    from openai.types.chat import ChatCompletion

# The OpenAI client is imported at the first model call, not with this module (budgetgraph.lazy).
openai = lazy_module("openai")
httpx2 = lazy_module("httpx2")

logger = logging.getLogger(__name__)

LOCAL_MODEL = "local-rules"
"""The model name recorded for steps of the ``local`` tier."""

CALL_ID_KEY = "budgetgraph_call"
"""Metadata key under which a stored completion carries its attempt id."""

NO_KEY = "not-needed"
"""API key sent to a server given by base URL alone (vLLM, Ollama, llama.cpp accept any)."""

MAX_OUTPUT_FACTOR = 10
"""Reported completion tokens above this many times the request's completion cap are refused."""

MAX_INPUT_FACTOR = 100
"""Reported prompt tokens above this many times the request's upper-bound estimate are refused."""

MAX_TOKENS = 10_000_000
"""No count in a usage report may pass this (tokens): ten times the largest context windows."""

MAX_CHARS_PER_TOKEN = 12
"""Reported prompt or completion tokens fewer than its text's characters over this are refused.

Tokenizers pack about four characters of English into a token, fewer of other
scripts, numbers and JSON; none packs twelve on average over a whole prompt, so
a report below that (``1`` token for a page of text) under-counts what was sent.
"""


@lru_cache(maxsize=1)
def _unusable_response_error() -> type:
    """``UnusableResponseError``, made once the OpenAI client is imported (its base class is the client's)."""

    class UnusableResponseError(openai.APIConnectionError):  # type: ignore[misc, name-defined]
        """Raised when a request got a ``2xx`` whose body is no usable chat completion.

        The body was not JSON, was cut off, or was not shaped like a chat
        completion (a proxy's error page, a broken stream). The server may have
        billed the answer it could not deliver. It subclasses
        :class:`openai.APIConnectionError` so that the router's ``connection``
        trigger and the gateway's retries treat it as the broken exchange it is.
        """

    UnusableResponseError.__module__ = __name__
    return UnusableResponseError


def __getattr__(name: str) -> Any:
    # ``UnusableResponseError`` is made on first use, so importing this module imports no client.
    if name == "UnusableResponseError":
        return _unusable_response_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def may_have_been_billed(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may still have been billed.

    An HTTP error status (429, 5xx, ...) was answered without a completion, and
    a connection that was never made sent nothing: neither is billed. A timeout
    or a connection lost after the request went out, or an unusable ``2xx``, may
    have been: the server can finish the answer nobody reads.
    """
    if isinstance(exc, openai.APIStatusError):
        return False
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, _unusable_response_error()):
        return not _never_sent(exc)
    return True


def _never_sent(exc: BaseException) -> bool:
    """True when ``exc`` comes from a connection that could not be opened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx2.ConnectError | httpx2.ConnectTimeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Exchange:
    """What the HTTP client saw of the current request.

    Its status and plain (unstreamed) body, and when it went out and its answer came in
    (Unix time, s; a streamed answer is in when the client has read it).
    """

    status: int | None = None
    request: Any = None
    body: bytes | None = None
    sent_at: float | None = None
    done_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


_EXCHANGE: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "budgetgraph_exchange", default=None
)


def _note_request(request: Any) -> None:
    """The HTTP client's request hook: note when the current chat request goes out."""
    exchange = _EXCHANGE.get()
    if exchange is not None and exchange.sent_at is None:
        exchange.sent_at = time.time()


def _note_response(response: Any) -> None:
    """The HTTP client's response hook: keep the status of the current chat request (headers only)."""
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.status = response.status_code
        exchange.request = response.request
        if "json" in response.headers.get("content-type", ""):
            # Kept, so that an answer the client fails to parse is still read (the client
            # reads the same bytes from the response afterwards).
            exchange.body = response.read()
            exchange.done_at = time.time()  # a stream is in when the client has read it


class ChatModels:
    """Calls the chat model of each tier.

    Args:
        models: The resolved ``models.yaml``.
        prices: Prices for the usage each call reports.
        queue: Where deferred calls are queued and their answers read (see
            :mod:`budgetgraph.budgets.deferred`); ``None``: a deferred call is an error.
    """

    def __init__(self, models: ModelsConfig, prices: PriceBook, queue: BatchQueue | None = None) -> None:
        self._models = models
        self._prices = prices
        self.queue = queue

    @cached_property
    def _clients(self) -> dict[Tier, ChatOpenAI]:
        return {
            tier: _chat_model(endpoint)
            for tier, endpoint in self._models.endpoints.items()
            if endpoint.configured
        }

    def invoke(self, request: CallRequest) -> CallResult:
        """Make one round trip for ``request`` on its tier: a single request to its server.

        Raises:
            openai.APIError: The server failed (an error status, a timeout, a broken
                connection), or answered with an unusable body (:class:`UnusableResponseError`).
        """
        if request.tier == "local":
            return self._local(request)
        endpoint = self._models.endpoints[request.tier]
        chat = self._clients[request.tier]
        if request.deferred:
            return self._deferred(chat, endpoint, request)
        started = time.perf_counter()
        recovered = self._recover(chat, endpoint, request)
        attempt: str | None = None
        if recovered is not None:
            attempt, message = recovered
            request = request.decide("chat", "recovered", "answer of a call cut off by a crash, fetched back")
            call = self._record(request, endpoint, message, round((time.perf_counter() - started) * 1000))
            return _result(request, message, call, attempt)
        # The chat span covers the HTTP exchange alone, from the request going out to its answer
        # read: what LangChain and the OpenAI client do before and after (building the request,
        # parsing the answer, their first-use set-up in a process) is not the model's latency.
        exchange = _Exchange()
        token = _EXCHANGE.set(exchange)
        try:
            message = self._send(chat, request)
        except BaseException:
            with chat_span(self._described(request, endpoint), start_time=exchange.sent_at) as span:
                span.stop(at=exchange.done_at)
                raise
        finally:
            _EXCHANGE.reset(token)
        with chat_span(self._described(request, endpoint), start_time=exchange.sent_at) as span:
            call = self._record(request, endpoint, message, span.stop(at=exchange.done_at))
            span.answered(message, call)
        return _result(request, message, call, attempt)

    def _deferred(self, chat: ChatOpenAI, endpoint: Endpoint, request: CallRequest) -> CallResult:
        """Queue ``request`` for the batch API, or take its answer from the queue once it is in.

        Raises:
            DeferredPending: The request is queued now, or still waits for its batch.
            DeferredFailedError: Its batch request failed (the gateway sends it live first,
                when ``deferred.on_failure`` is ``live``).
        """
        if self.queue is None:
            raise RuntimeError("a deferred call needs a batch queue (Gateway(batches=...))")
        custom_id = request.attempt_id or request.call_id
        if custom_id is None:
            raise RuntimeError("a deferred call needs an attempt id (the limits plugin gives one)")
        queued = self.queue.get(custom_id)
        if queued is None:
            binding: Any = self._runnable(chat, request)
            body = binding.bound._get_request_payload(list(request.messages), **binding.kwargs)
            body.pop("stream", None)
            body.pop("stream_options", None)
            self.queue.enqueue(
                QueuedRequest(
                    custom_id=custom_id,
                    thread_id=request.thread_id or "",
                    node=request.node,
                    tier=request.tier,
                    model=endpoint.settings.model,
                    body=body,
                )
            )
            raise DeferredPending(node=request.node, custom_id=custom_id, batch_id=None)
        if queued.state in PENDING_STATES:
            raise DeferredPending(node=request.node, custom_id=custom_id, batch_id=queued.batch_id)
        if queued.state == "failed" or queued.result is None:
            reason = json.dumps((queued.result or {}).get("error"))[:300]
            raise DeferredFailedError(
                node=request.node, custom_id=custom_id, batch_id=queued.batch_id, reason=reason
            )
        from openai.types.chat import ChatCompletion

        message = _message_of(ChatCompletion.model_validate(queued.result))
        done_at = queued.done_at or time.time()
        with chat_span(self._described(request, endpoint), start_time=queued.queued_at) as span:
            latency_ms = round((done_at - queued.queued_at) * 1000)
            call = self._record(request, endpoint, message, latency_ms, batch=True)
            call["batch_id"] = str(queued.batch_id)
            span.stop(at=done_at, batch_id=queued.batch_id)
            span.answered(message, call)
        return _result(request, message, call, None)

    def _described(self, request: CallRequest, endpoint: Endpoint) -> ChatRequest:
        """What the ``chat`` span of ``request`` says it asks for."""
        settings = endpoint.settings
        return ChatRequest(
            node=request.node,
            thread_id=request.thread_id,
            model=settings.model,
            provider=settings.provider or DEFAULT_PROVIDER,
            server_url=endpoint.base_url,
            max_tokens=request.max_output_tokens or settings.max_output_tokens,
            temperature=settings.temperature,
            output_type="json",  # every request asks for a structured answer (response_format)
            tier=request.tier,
            messages=request.messages,
        )

    def _send(self, chat: ChatOpenAI, request: CallRequest) -> AIMessage:
        """Send ``request`` once; an unusable ``2xx`` becomes :class:`UnusableResponseError`."""
        exchange = _EXCHANGE.get() or _Exchange()
        token = _EXCHANGE.set(exchange)
        try:
            message = self._runnable(chat, request).invoke(list(request.messages))
        except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as exc:
            if exc.completion is None:
                raise _unusable_response_error()(message=str(exc), request=exchange.request) from exc
            # Cut at the completion cap (or filtered): billed, but unparsed. Count it, then repair.
            message = _message_of(exc.completion)
        except openai.APIStatusError:
            raise
        except Exception as exc:
            if not exchange.answered:
                raise
            message = _message_from_body(exchange.body)
            if message is not None:
                # A completion the client could not parse (tool arguments that are not
                # JSON, say): the model's answer, billed, to be counted and repaired.
                logger.info("Node `%s`: the client could not parse the answer (%s)", request.node, exc)
                return message
            raise _unusable_response_error()(
                message=f"HTTP {exchange.status} without a usable chat completion"
                f" ({type(exc).__name__}: {exc})",
                request=exchange.request,
            ) from exc
        finally:
            _EXCHANGE.reset(token)
        assert isinstance(message, AIMessage)
        return message

    def _recover(
        self, chat: ChatOpenAI, endpoint: Endpoint, request: CallRequest
    ) -> tuple[str, AIMessage] | None:
        """Fetch back the stored answer of an attempt whose process died, if the server kept it.

        Returns:
            The attempt's id and its answer, or ``None``.
        """
        if not (request.recover and request.call_id and endpoint.settings.store_completions):
            return None
        for attempt in reversed(request.recover_ids or (request.call_id,)):
            try:
                page = chat.root_client.chat.completions.list(metadata={CALL_ID_KEY: attempt}, limit=1)
            except openai.OpenAIError as exc:  # the server does not store completions: call again
                logger.info("Could not list stored completions (%s); sending the call again", exc)
                return None
            found = list(page.data)
            if found:
                logger.info("Node `%s`: recovered a stored completion instead of calling again", request.node)
                return attempt, _message_of(found[0])
        return None

    def _runnable(self, chat: ChatOpenAI, request: CallRequest) -> Runnable:
        options: dict[str, Any] = {}
        if request.call_id and self._models.endpoints[request.tier].settings.store_completions:
            # As extra body: LangChain keeps `metadata` for its own run metadata.
            tag = request.attempt_id or request.call_id
            options["extra_body"] = {"store": True, "metadata": {CALL_ID_KEY: tag}}
        if request.max_output_tokens is not None:
            options["max_tokens"] = request.max_output_tokens
        if request.timeout_s is not None:
            options["timeout"] = request.timeout_s
        tools = list(request.tools)
        if request.max_tool_calls == 0:
            tools = []
        response_format = json_schema_format(request.schema)
        if tools:
            # The schema's inner form (name, schema, strict): bind_tools sends it as it is and,
            # as for `bind`, the client does not validate the answer.
            return chat.bind_tools(
                tools, response_format=response_format["json_schema"], strict=True, **options
            )
        return chat.bind(response_format=response_format, **options)

    def _record(
        self,
        request: CallRequest,
        endpoint: Endpoint,
        message: AIMessage,
        latency_ms: int,
        *,
        batch: bool = False,
    ) -> ModelCall:
        model = str(message.response_metadata.get("model_name") or endpoint.settings.model)
        max_out = request.max_output_tokens or endpoint.settings.max_output_tokens
        usage: dict[str, Any] = dict(message.usage_metadata or {})
        figures = (
            usage.get("input_tokens", 0),
            usage.get("output_tokens", 0),
            (usage.get("input_token_details") or {}).get("cache_read", 0) or 0,
            (usage.get("output_token_details") or {}).get("reasoning", 0) or 0,
        )
        source: UsageSource = "reported"
        if not usage or figures[:2] == (0, 0):
            source = "estimated"
            bound = request.estimate_input_tokens()
            counted_in = request.count_input_tokens(model)
            counted_out = count_tokens(_completion_text(message), model)
            input_tokens, output_tokens = min(counted_in, bound), min(counted_out, max_out)
            cache_read = reasoning = 0
            _warn_estimated(model)
            request = request.decide(
                "chat",
                "estimate",
                f"no usage in the response: {input_tokens} in, {output_tokens} out counted by "
                f"{tokenizer_name(model)} (at most the reservation)",
            )
        else:
            problem = _implausible(
                figures,
                max_out=max_out,
                estimate=request.estimate_input_tokens(),
                prompt_chars=request.prompt_chars(),
                completion_chars=len(_completion_text(message)),
            )
            if problem is None:
                input_tokens, output_tokens, cache_read, reasoning = (int(f) for f in figures)
            else:
                source = "refused"
                input_tokens, output_tokens = request.estimate_input_tokens(), max_out
                cache_read = reasoning = 0
                logger.warning(
                    "Node `%s`: %s refused (%s); counting the reservation", request.node, model, problem
                )
                request = request.decide(
                    "chat",
                    "refuse",
                    f"usage refused ({problem}): counted at the reservation, "
                    f"{input_tokens} in and {output_tokens} out",
                )
        price, note = self._price(model, endpoint, input_tokens, output_tokens, cache_read, batch=batch)
        if note is not None:
            request = request.decide("chat", "price", note)
        call = ModelCall(
            node=request.node,
            tier=request.tier,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            reasoning_tokens=reasoning,
            cost_micro_usd=price.micro_usd,
            priced=price.known,
            latency_ms=latency_ms,
            cache_hit=False,
            tool_calls=len(message.tool_calls),
            decisions=list(request.decisions),
        )
        if source != "reported":
            call["usage"] = source
        if request.cache is not None:
            call["cache"] = request.cache
        return call

    def _price(
        self,
        model: str,
        endpoint: Endpoint,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        *,
        batch: bool = False,
    ) -> tuple[Any, str | None]:
        """The call's price, and why it is not the reported model's (``None`` when it is).

        The server's answer names the model that ran, but a server is not trusted to
        lower the bill: the usage is priced at the reported model and at the configured
        one, and the higher counts (an unknown reported model: the configured one).
        """

        def at(name: str) -> Any:
            return self._prices.price(
                name,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                provider=endpoint.settings.provider,
                batch=batch,
            )

        price = at(model)
        configured = endpoint.settings.model
        if model == configured:
            return price, None
        asked = at(configured)
        if asked.known and (not price.known or asked.micro_usd > price.micro_usd):
            return asked, (
                f"the server reported `{model}`, priced below the configured `{configured}`: "
                f"charged at `{configured}`"
                if price.known
                else f"the server reported `{model}`, which has no price: charged at `{configured}`"
            )
        return price, None

    def _local(self, request: CallRequest) -> CallResult:
        with step_span(STEP_LOCAL, node=request.node) as step:
            started = time.perf_counter()
            output = request.local()
            latency_ms = round((time.perf_counter() - started) * 1000)
            step.outcome("answered")
        call = unbilled_call(
            node=request.node,
            tier="local",
            model=LOCAL_MODEL,
            latency_ms=latency_ms,
            decisions=list(request.decisions),
        )
        return CallResult(output=output, calls=[call])


def _result(request: CallRequest, message: AIMessage, call: ModelCall, attempt: str | None) -> CallResult:
    """The result of one answer: tool calls, a parse error to repair, or the structured output."""
    if message.tool_calls:
        return CallResult(
            tool_calls=list(message.tool_calls), message=message, calls=[call], recovered=attempt
        )
    if message.invalid_tool_calls:
        bad = "; ".join(
            f"`{c.get('name')}`: {c.get('error') or 'not JSON'}" for c in message.invalid_tool_calls
        )
        return CallResult(
            message=message,
            parse_error=f"tool call arguments are not valid JSON ({bad})",
            calls=[call],
            recovered=attempt,
        )
    try:
        output = request.schema.model_validate_json(message.text)
    except ValidationError as exc:
        return CallResult(message=message, parse_error=str(exc), calls=[call], recovered=attempt)
    return CallResult(output=output, message=message, calls=[call], recovered=attempt)


def _implausible(
    figures: tuple[Any, Any, Any, Any],
    *,
    max_out: int,
    estimate: int,
    prompt_chars: int = 0,
    completion_chars: int = 0,
) -> str | None:
    """Why reported usage cannot be true, or ``None`` when it may be.

    Args:
        figures: Input, output, cached input and reasoning tokens, as reported.
        max_out: The request's completion cap (tokens).
        estimate: The request's upper-bound input estimate (tokens).
        prompt_chars: Characters of the prompt's messages (for the lower bound).
        completion_chars: Characters the model generated (for the lower bound).
    """
    names = ("input", "output", "cached", "reasoning")
    for name, value in zip(names, figures, strict=True):
        whole = isinstance(value, int) and not isinstance(value, bool)
        whole = whole or (isinstance(value, float) and value.is_integer())
        if not whole:
            return f"{name} tokens {value!r} is not a whole number"
        if value < 0:
            return f"{name} tokens {value} is negative"
        if value > MAX_TOKENS:
            return f"{name} tokens {value} is over {MAX_TOKENS}"
    input_tokens, output_tokens, cached, reasoning = figures
    if output_tokens > MAX_OUTPUT_FACTOR * max_out:
        return f"output tokens {output_tokens} is over {MAX_OUTPUT_FACTOR} x the completion cap {max_out}"
    if input_tokens > MAX_INPUT_FACTOR * max(estimate, 1):
        return f"input tokens {input_tokens} is over {MAX_INPUT_FACTOR} x the estimate {estimate}"
    if input_tokens < prompt_chars // MAX_CHARS_PER_TOKEN:
        return (
            f"input tokens {input_tokens} is under the prompt's {prompt_chars} characters"
            f" / {MAX_CHARS_PER_TOKEN}"
        )
    if output_tokens < completion_chars // MAX_CHARS_PER_TOKEN:
        return (
            f"output tokens {output_tokens} is under the answer's {completion_chars} characters"
            f" / {MAX_CHARS_PER_TOKEN}"
        )
    if cached > input_tokens:
        return f"cached tokens {cached} is over the input tokens {input_tokens}"
    if reasoning > output_tokens:
        return f"reasoning tokens {reasoning} is over the output tokens {output_tokens}"
    return None


def _completion_text(message: AIMessage) -> str:
    """What the model generated: its text and the name and arguments of each tool call."""
    calls = [c["name"] + json.dumps(c["args"]) for c in message.tool_calls]
    calls += [str(c.get("name") or "") + str(c.get("args") or "") for c in message.invalid_tool_calls]
    return message.text + "".join(calls)


@lru_cache(maxsize=256)
def _warn_estimated(model: str) -> None:
    logger.warning(
        "%s returned a response without usage; its tokens are estimated with %s (and marked estimated)",
        model,
        tokenizer_name(model),
    )


def _message_of(completion: ChatCompletion) -> AIMessage:
    """A LangChain message from a raw completion: a stored one, or one cut at its length cap.

    Tool calls whose arguments are not JSON become invalid tool calls (to be
    repaired); a completion without usage gives a message without usage (to be
    estimated).
    """
    choice = completion.choices[0] if completion.choices else None
    text = (choice.message.content if choice is not None else None) or ""
    tool_calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in (choice.message.tool_calls if choice is not None else None) or []:
        function = getattr(call, "function", None)
        if function is None:
            continue
        try:
            args = json.loads(function.arguments or "{}")
        except ValueError as exc:
            args = None
            error = str(exc)
        if isinstance(args, dict):
            tool_calls.append(ToolCall(name=function.name, args=args, id=call.id))
        else:
            invalid.append(
                InvalidToolCall(
                    name=function.name,
                    args=function.arguments,
                    id=call.id,
                    error=error if args is None else "not a JSON object",
                    type="invalid_tool_call",
                )
            )
    usage = completion.usage
    usage_metadata = None
    if usage is not None:
        details = usage.prompt_tokens_details
        usage_metadata = {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "input_token_details": {"cache_read": (details.cached_tokens or 0) if details is not None else 0},
        }
    return AIMessage(
        content=text,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata,
        response_metadata={
            "model_name": completion.model,
            "finish_reason": choice.finish_reason if choice is not None else None,
            "id": completion.id,
            "system_fingerprint": completion.system_fingerprint,
            "service_tier": completion.service_tier,
        },
    )


def _message_from_body(body: bytes | None) -> AIMessage | None:
    """The message of a plain response body that is a chat completion, or ``None``."""
    if not body:
        return None
    from openai.types.chat import ChatCompletion

    try:
        completion = ChatCompletion.model_validate_json(body)
    except ValidationError:
        return None
    if not completion.choices:
        return None
    return _message_of(completion)


@lru_cache(maxsize=512)
def json_schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's ``response_format`` asking for strict JSON that validates as ``schema``.

    Given as a plain JSON schema rather than the pydantic class, so the OpenAI
    client does not validate the answer itself: a bad answer comes back with
    its usage, to be counted and repaired. Built once per class; callers must
    not change it.
    """
    function = convert_to_openai_function(schema, strict=True)
    return {
        "type": "json_schema",
        "json_schema": {"name": function["name"], "schema": function["parameters"], "strict": True},
    }


def _chat_model(endpoint: Endpoint) -> ChatOpenAI:
    """The tier's client: no retries of its own, and a hook that notes each response's status."""
    from langchain_openai import ChatOpenAI

    settings = endpoint.settings
    return ChatOpenAI(
        model=settings.model,
        base_url=endpoint.base_url,
        api_key=SecretStr(endpoint.api_key or NO_KEY),
        temperature=settings.temperature,
        max_completion_tokens=settings.max_output_tokens,
        timeout=settings.timeout_s,
        max_retries=0,
        streaming=settings.streaming,
        stream_usage=True,
        http_client=openai.DefaultHttpxClient(
            event_hooks={"request": [_note_request], "response": [_note_response]}
        ),
    )
