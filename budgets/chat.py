"""The end of the chain: one round trip to a tier's chat model, or the local step.

Model tiers are ``ChatOpenAI`` instances from ``langchain-openai``, so any
OpenAI-compatible server works. The answer is asked for as OpenAI structured
output (``response_format`` with a strict JSON schema); tools, when the
request has any, are offered beside it. Usage comes from the response's
``usage_metadata`` (the final chunk's when streaming) and is priced by the
:class:`~budgetgraph.budgets.pricing.PriceBook`.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cached_property
from typing import Any

import openai
from langchain_core.messages import AIMessage, ToolCall
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_function
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, SecretStr, ValidationError

from budgetgraph.budgets.config import Endpoint, ModelsConfig, Tier
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import CallRequest, CallResult, ModelCall, unbilled_call

logger = logging.getLogger(__name__)

LOCAL_MODEL = "local-rules"
"""The model name recorded for steps of the ``local`` tier."""

CALL_ID_KEY = "budgetgraph_call"
"""Metadata key under which a stored completion carries its call id."""

NO_KEY = "not-needed"
"""API key sent to a server given by base URL alone (vLLM, Ollama, llama.cpp accept any)."""


class ChatModels:
    """Calls the chat model of each tier.

    Args:
        models: The resolved ``models.yaml``.
        prices: Prices for the usage each call reports.
    """

    def __init__(self, models: ModelsConfig, prices: PriceBook) -> None:
        self._models = models
        self._prices = prices

    @cached_property
    def _clients(self) -> dict[Tier, ChatOpenAI]:
        return {
            tier: _chat_model(endpoint)
            for tier, endpoint in self._models.endpoints.items()
            if endpoint.configured
        }

    def invoke(self, request: CallRequest) -> CallResult:
        """Make one round trip for ``request`` on its tier.

        Raises:
            openai.APIError: The server failed after the client's retries.
        """
        if request.tier == "local":
            return self._local(request)
        endpoint = self._models.endpoints[request.tier]
        chat = self._clients[request.tier]
        started = time.perf_counter()
        message = self._recover(chat, endpoint, request)
        if message is not None:
            request = request.decide("chat", "recovered", "answer of a call cut off by a crash, fetched back")
        else:
            try:
                message = self._runnable(chat, request).invoke(list(request.messages))
            except openai.LengthFinishReasonError as exc:
                # The answer hit the completion cap: billed, but cut short. Count it, then repair.
                message = _message_of(exc.completion, request)
        latency_ms = round((time.perf_counter() - started) * 1000)
        assert isinstance(message, AIMessage)
        call = self._record(request, endpoint, message, latency_ms)
        if message.tool_calls:
            return CallResult(tool_calls=list(message.tool_calls), message=message, calls=[call])
        try:
            output = request.schema.model_validate_json(message.text)
        except ValidationError as exc:
            return CallResult(message=message, parse_error=str(exc), calls=[call])
        return CallResult(output=output, message=message, calls=[call])

    def _recover(self, chat: ChatOpenAI, endpoint: Endpoint, request: CallRequest) -> AIMessage | None:
        """Fetch back the stored answer of a call whose process died, if the server kept it."""
        if not (request.recover and request.call_id and endpoint.settings.store_completions):
            return None
        try:
            page = chat.root_client.chat.completions.list(metadata={CALL_ID_KEY: request.call_id}, limit=1)
        except openai.OpenAIError as exc:  # the server does not store completions: call again
            logger.info("Could not list stored completions (%s); sending the call again", exc)
            return None
        found = list(page.data)
        if not found:
            return None
        logger.info("Node `%s`: recovered a stored completion instead of calling again", request.node)
        return _message_of(found[0], request)

    def _runnable(self, chat: ChatOpenAI, request: CallRequest) -> Runnable:
        options: dict[str, Any] = {}
        if request.call_id and self._models.endpoints[request.tier].settings.store_completions:
            # As extra body: LangChain keeps `metadata` for its own run metadata.
            options["extra_body"] = {"store": True, "metadata": {CALL_ID_KEY: request.call_id}}
        if request.max_output_tokens is not None:
            options["max_tokens"] = request.max_output_tokens
        if request.timeout_s is not None:
            options["timeout"] = request.timeout_s
        tools = list(request.tools)
        if request.max_tool_calls == 0:
            tools = []
        if tools:
            # bind_tools turns the class into the same plain JSON-schema format.
            return chat.bind_tools(tools, response_format=request.schema, strict=True, **options)
        return chat.bind(response_format=json_schema_format(request.schema), **options)

    def _record(
        self, request: CallRequest, endpoint: Endpoint, message: AIMessage, latency_ms: int
    ) -> ModelCall:
        usage: dict[str, Any] = dict(message.usage_metadata or {})
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        cache_read = int((usage.get("input_token_details") or {}).get("cache_read", 0) or 0)
        reasoning = int((usage.get("output_token_details") or {}).get("reasoning", 0) or 0)
        model = str(message.response_metadata.get("model_name") or endpoint.settings.model)
        price = self._prices.price(
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            provider=endpoint.settings.provider,
        )
        if not price.known and model != endpoint.settings.model:
            price = self._prices.price(
                endpoint.settings.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                provider=endpoint.settings.provider,
            )
        return ModelCall(
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

    def _local(self, request: CallRequest) -> CallResult:
        started = time.perf_counter()
        output = request.local()
        latency_ms = round((time.perf_counter() - started) * 1000)
        call = unbilled_call(
            node=request.node,
            tier="local",
            model=LOCAL_MODEL,
            latency_ms=latency_ms,
            decisions=list(request.decisions),
        )
        return CallResult(output=output, calls=[call])


def _message_of(completion: ChatCompletion, request: CallRequest) -> AIMessage:
    """A LangChain message from a raw completion: a stored one, or one cut at its length cap.

    A streamed completion cut at its cap carries no usage; its input is then the
    request's upper-bound estimate and its output the completion cap.
    """
    choice = completion.choices[0] if completion.choices else None
    text = (choice.message.content if choice is not None else None) or ""
    tool_calls = []
    for call in (choice.message.tool_calls if choice is not None else None) or []:
        function = getattr(call, "function", None)
        if function is not None:
            tool_calls.append(
                ToolCall(name=function.name, args=json.loads(function.arguments or "{}"), id=call.id)
            )
    usage = completion.usage
    if usage is not None:
        input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
        details = usage.prompt_tokens_details
        cache_read = (details.cached_tokens or 0) if details is not None else 0
    else:
        input_tokens, output_tokens = request.estimate_input_tokens(), request.max_output_tokens or 0
        cache_read = 0
    return AIMessage(
        content=text,
        tool_calls=tool_calls,
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_token_details": {"cache_read": cache_read},
        },
        response_metadata={
            "model_name": completion.model,
            "finish_reason": choice.finish_reason if choice is not None else None,
        },
    )


def json_schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's ``response_format`` asking for strict JSON that validates as ``schema``.

    Given as a plain JSON schema rather than the pydantic class, so the OpenAI
    client does not validate the answer itself: a bad answer comes back with
    its usage, to be counted and repaired.
    """
    function = convert_to_openai_function(schema, strict=True)
    return {
        "type": "json_schema",
        "json_schema": {"name": function["name"], "schema": function["parameters"], "strict": True},
    }


def _chat_model(endpoint: Endpoint) -> ChatOpenAI:
    settings = endpoint.settings
    return ChatOpenAI(
        model=settings.model,
        base_url=endpoint.base_url,
        api_key=SecretStr(endpoint.api_key or NO_KEY),
        temperature=settings.temperature,
        max_completion_tokens=settings.max_output_tokens,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
        streaming=settings.streaming,
        stream_usage=True,
    )
