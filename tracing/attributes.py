"""Attribute, span and metric names that budgetgraph's telemetry emits.

Sources:

- OpenTelemetry GenAI semantic conventions (development status), spans
  (``gen-ai-spans.md``, ``gen-ai-agent-spans.md``) and metrics
  (``gen-ai-metrics.md``) of open-telemetry/semantic-conventions v1.41 and
  its successor repository semantic-conventions-genai.
- The open upstream proposal for cost: ``gen_ai.usage.cost.amount`` and
  ``gen_ai.usage.cost.currency``.
- OpenInference (Arize Phoenix): ``openinference.span.kind``,
  ``llm.cost.total``, ``llm.token_count.*``.
- budgetgraph's own, under ``budgetgraph.*``: exact integer micro-dollars
  (1 USD = 1,000,000), tier, cache result, budget left.

The names are spelled here once so that the spans, the local span store and
``budgetgraph trace`` agree.
"""

from __future__ import annotations

from typing import Final

# -- GenAI semantic conventions --------------------------------------------------------

OPERATION: Final = "gen_ai.operation.name"
PROVIDER: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
REASONING_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
AGENT_NAME: Final = "gen_ai.agent.name"
WORKFLOW_NAME: Final = "gen_ai.workflow.name"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
"""Opt-in (content capture)."""
TOOL_RESULT: Final = "gen_ai.tool.call.result"
"""Opt-in (content capture)."""
INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Opt-in (content capture)."""
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Opt-in (content capture)."""
TOKEN_TYPE: Final = "gen_ai.token.type"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
OUTPUT_TYPE: Final = "gen_ai.output.type"
OPENAI_SERVICE_TIER: Final = "openai.response.service_tier"
OPENAI_SYSTEM_FINGERPRINT: Final = "openai.response.system_fingerprint"

# Names the conventions renamed; emitted beside the current ones unless
# ``OTEL_SEMCONV_STABILITY_OPT_IN`` holds ``gen_ai_latest_experimental``.
SYSTEM_DEPRECATED: Final = "gen_ai.system"
"""Renamed ``gen_ai.provider.name`` (semantic conventions 1.37)."""
OPENAI_SERVICE_TIER_DEPRECATED: Final = "gen_ai.openai.response.service_tier"
"""Renamed ``openai.response.service_tier`` (semantic conventions 1.37)."""
OPENAI_SYSTEM_FINGERPRINT_DEPRECATED: Final = "gen_ai.openai.response.system_fingerprint"
"""Renamed ``openai.response.system_fingerprint`` (semantic conventions 1.37)."""

COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
"""Cost of the span's calls in ``COST_CURRENCY`` (a float, for display; the
exact figure is :data:`COST_MICRO_USD`)."""
COST_CURRENCY: Final = "gen_ai.usage.cost.currency"

# -- GenAI values ----------------------------------------------------------------------

OP_CHAT: Final = "chat"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_EXECUTE_TOOL: Final = "execute_tool"

# -- OpenInference -----------------------------------------------------------------------

OI_SPAN_KIND: Final = "openinference.span.kind"
OI_COST_TOTAL: Final = "llm.cost.total"
OI_MODEL_NAME: Final = "llm.model_name"
OI_PROMPT_TOKENS: Final = "llm.token_count.prompt"
OI_COMPLETION_TOKENS: Final = "llm.token_count.completion"
OI_TOTAL_TOKENS: Final = "llm.token_count.total"

# -- budgetgraph -----------------------------------------------------------------------

STEP: Final = "budgetgraph.step"
"""What an ``INTERNAL`` pipeline span does: one of the ``STEP_*`` values."""
STEP_CALL: Final = "call"
"""A node's model call through the plugin chain: its requests, cache answer or local step."""
STEP_ROUTE: Final = "route"
"""The router's choice of tier (outcome: the tier chosen)."""
STEP_CACHE_LOOKUP: Final = "cache.lookup"
STEP_CACHE_STORE: Final = "cache.store"
"""A miss's answer written to the cache (embedding it when the lookup did not)."""
STEP_CACHE_CONFIRM: Final = "cache.confirm"
"""A near hit put to the cheapest model tier before it is served (outcome: ``yes`` or ``no``)."""
STEP_EMBED: Final = "cache.embed"
STEP_GUARD: Final = "cache.guard"
STEP_RESERVE: Final = "reserve"
STEP_SETTLE: Final = "settle"
STEP_LOCAL: Final = "local"
OUTCOME: Final = "budgetgraph.outcome"
"""How a pipeline step ended (``hit``, ``miss``, ``refused``, ``reserved``, ``accepted`` ...)."""
BATCH_ID: Final = "budgetgraph.batch.id"
"""The batch that answered a deferred call, on its ``chat`` span."""
RESERVED_TOKENS: Final = "budgetgraph.reserved.tokens"
"""What a reservation holds (tokens), on its ``budgetgraph.reserve`` span."""
RESERVED_MICRO_USD: Final = "budgetgraph.reserved.micro_usd"
"""What a reservation holds (integer micro-USD), on its ``budgetgraph.reserve`` span."""
ALERTS: Final = "budgetgraph.alerts"
"""Alerts a settlement noted (cap crossings), on its ``budgetgraph.settle`` span."""
DURATION_MS: Final = "budgetgraph.duration_ms"
"""A step's duration (ms), on events that stand for a step without a span of their own."""
USAGE_SOURCE: Final = "budgetgraph.usage.source"
"""On a chat span whose server reported no usable usage: ``estimated`` or ``refused``; the
tokens counted are then ``budgetgraph.usage.input_tokens`` / ``.output_tokens``."""
COUNTED_INPUT_TOKENS: Final = "budgetgraph.usage.input_tokens"
COUNTED_OUTPUT_TOKENS: Final = "budgetgraph.usage.output_tokens"
SIMILARITY: Final = "budgetgraph.cache.similarity"
"""Cosine similarity of the cache entry served, or of the nearest candidate."""
REFUSAL_CATEGORY: Final = "budgetgraph.cache.refusal"
"""Why the guard refused the nearest candidate (a ``REFUSAL_CATEGORIES`` value)."""

COST_MICRO_USD: Final = "budgetgraph.cost_micro_usd"
"""Exact cost in integer micro-dollars; node and run spans carry the sum of their children's."""
CALLS: Final = "budgetgraph.calls"
"""Model round trips and local steps summed into a node or run span."""
TOOL_CALLS: Final = "budgetgraph.tool_calls"
"""Tool calls the model asked for, summed like :data:`CALLS`."""
TIER: Final = "budgetgraph.tier"
"""The tier that answered (``economy``, ``standard``, ``premium``, ``local``)."""
TIER_REQUESTED: Final = "budgetgraph.tier.requested"
"""The tier the node asked for, before the router and the limits."""
MODEL: Final = "budgetgraph.model"
"""The model that answered a call (``local-rules`` for the local tier), on its call span."""
MODEL_REQUESTED: Final = "budgetgraph.model.requested"
"""The model of the tier the node asked for, on its call span."""
CACHE_HIT: Final = "budgetgraph.cache_hit"
"""True when the semantic cache answered instead of a model."""
CACHE_OUTCOME: Final = "budgetgraph.cache.outcome"
"""What the cache did: ``exact`` or ``semantic`` (hits), ``miss``, or ``refused``
(a miss because the guard refused the nearest candidate); absent without a lookup."""
SAVED_MICRO_USD: Final = "budgetgraph.saved_micro_usd"
"""On a cache hit: what the answer cost when it was first made (integer micro-USD)."""
NODE_LEFT_TOKENS: Final = "budgetgraph.budget.node.remaining_tokens"
NODE_LEFT_USD: Final = "budgetgraph.budget.node.remaining_usd"
TASK_LEFT_TOKENS: Final = "budgetgraph.budget.task.remaining_tokens"
TASK_LEFT_USD: Final = "budgetgraph.budget.task.remaining_usd"
RUN_RESUMED: Final = "budgetgraph.run.resumed"
"""True on the run span of a process that continued an earlier run of the thread."""
RUN_STATUS: Final = "budgetgraph.run.status"
"""How the run stopped: ``done``, ``paused`` or ``failed``."""
INTERRUPTED: Final = "budgetgraph.interrupted"
"""True when a node or call stopped to wait for a human (LangGraph ``interrupt()``)."""

# -- metrics ---------------------------------------------------------------------------

METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_COST: Final = "budgetgraph.client.cost"
"""Counter of spend, in integer micro-dollars, by node, model and tier."""

TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""Advised buckets of ``gen_ai.client.token.usage`` (GenAI metrics conventions)."""
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""Advised buckets of ``gen_ai.client.operation.duration`` in seconds (GenAI metrics conventions)."""

SCOPE: Final = "budgetgraph"
"""Instrumentation scope of every budgetgraph span; the local span store keeps only these."""
