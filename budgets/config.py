"""The two YAML files that configure the pipeline: ``models.yaml`` and ``budgets.yaml``.

Both are validated by pydantic models with ``extra="forbid"``; a bad file
raises one :class:`~budgetgraph.budgets.errors.ConfigError` that lists every problem with
its file, line and key path. The defaults ship inside this package and are
found through :mod:`importlib.resources`; an explicit path (from the
settings, :mod:`budgetgraph.settings`) points at other files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo

from budgetgraph.budgets.errors import ConfigError
from budgetgraph.budgets.yamlfile import Number, YamlDocument, mention

M = TypeVar("M", bound=BaseModel)

Tier = Literal["economy", "standard", "premium", "local"]
"""A tier of chat models. ``local`` is the deterministic no-model path."""

MODEL_TIERS: tuple[Tier, ...] = ("economy", "standard", "premium")
"""The tiers served by a chat model, cheapest first."""

TIERS: tuple[Tier, ...] = ("local", *MODEL_TIERS)
"""Every tier, from no model at all to the strongest."""


NonNegativeUsd = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)]
"""An amount in USD; YAML's booleans are refused (pydantic's ``Decimal`` takes no ``bool``)."""

API_KEY_SUFFIX = "_API_KEY"
"""A variable whose name ends so may be named by a file as holding an API key."""

ALLOWED_KEY_ENV = "allowed_key_env"
"""Key of the validation context that lists further variables allowed to hold an API key."""


_KEY_VARIABLE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]*{API_KEY_SUFFIX}")


def _key_variable(name: str, info: ValidationInfo) -> str:
    allowed = (info.context or {}).get(ALLOWED_KEY_ENV, ())
    if _KEY_VARIABLE.fullmatch(name) or name in allowed:
        return name
    raise ValueError(
        f"only a variable whose name ends in `{API_KEY_SUFFIX}`, or one the operator allows,"
        " may hold an API key; this one is not read"
    )


ApiKeyEnv = Annotated[str, AfterValidator(_key_variable)]
"""The name of the environment variable holding an API key.

A file may only name a variable ending in ``_API_KEY`` (``OPENAI_API_KEY``) or
one of the names the operator allows (the validation context's
``allowed_key_env``), so a hostile file cannot have the pipeline send another
secret, say ``DATABASE_PASSWORD``, to a server of its choosing.
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- models.yaml


class TierModel(_Strict):
    """One chat model serving a tier, reached through ``ChatOpenAI``."""

    model: str = Field(min_length=1)
    """Model name sent to the server, e.g. ``gpt-4.1-mini``."""
    base_url: str | None = None
    """OpenAI-compatible base URL; ``None`` reads the variable ``base_url_env``."""
    base_url_env: str = "OPENAI_BASE_URL"
    """Variable holding the base URL when ``base_url`` is not set."""
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY"
    """Variable holding the API key: a name ending in ``_API_KEY`` or one the operator allows."""
    provider: str | None = None
    """genai-prices provider id used for pricing (e.g. ``openai``); ``None`` matches by model."""
    temperature: Number | None = Field(default=None, ge=0, le=2)
    """Sampling temperature; ``None`` leaves the server's default."""
    max_output_tokens: StrictInt = Field(default=2048, gt=0)
    """Cap on completion tokens per call (tokens)."""
    timeout_s: Number = Field(default=60.0, gt=0)
    """Per-request timeout (seconds)."""
    max_retries: StrictInt = Field(default=2, ge=0, le=10)
    """Retries by the gateway on 429, 5xx, timeouts and unusable answers (0-10); each waits for
    ``Retry-After`` or a backoff, reserves again, and none runs past the node's latency cap."""
    streaming: StrictBool = False
    """Stream completions (usage is still counted from the final chunk)."""
    store_completions: StrictBool = False
    """Ask the server to store each completion (OpenAI's ``store: true``) tagged with its
    call id, so that a call cut off by a crash is fetched back on resume instead of being
    sent again. Needs a server that stores chat completions (OpenAI does; most
    self-hosted servers do not). The provider keeps the prompt and answer for its
    retention period."""


class Tiers(_Strict):
    """The chat model of each model tier. ``local`` needs no entry."""

    economy: TierModel = TierModel(model="gpt-4.1-nano")
    standard: TierModel = TierModel(model="gpt-4.1-mini")
    premium: TierModel = TierModel(model="gpt-4.1")


class PriceOverride(_Strict):
    """Prices of one model, in USD per million tokens, used before genai-prices."""

    input_per_mtok: NonNegativeUsd
    """Uncached input tokens (USD / 1M tokens)."""
    output_per_mtok: NonNegativeUsd
    """Output tokens, reasoning tokens included (USD / 1M tokens)."""
    cache_read_per_mtok: NonNegativeUsd | None = None
    """Cached input tokens (USD / 1M tokens); ``None`` prices them as input."""


class ModelsFile(_Strict):
    """Schema of ``models.yaml``."""

    default_tier: Tier = "standard"
    """Tier a request gets when it names none."""
    tiers: Tiers = Tiers()
    prices: dict[str, PriceOverride] = {}
    """Per-model price overrides for self-hosted or unlisted models."""
    batch_discounts: dict[str, Annotated[Number, Field(gt=0, le=1)]] = {"openai": 0.5, "anthropic": 0.5}
    """Per provider: a batch request's price as a fraction of the standard one, where
    genai-prices lists no batch price (OpenAI's Batch API and Anthropic's Message
    Batches charge 50%)."""


@dataclass(frozen=True)
class Endpoint:
    """A tier's model resolved against the environment.

    Attributes:
        tier: The tier name.
        settings: The tier's entry in ``models.yaml``.
        base_url: The server's base URL, or ``None`` for the OpenAI default.
        api_key: The API key, or ``None`` when the variable is unset.
    """

    tier: Tier
    settings: TierModel
    base_url: str | None
    api_key: str | None

    @property
    def configured(self) -> bool:
        """True when a server can be reached: a base URL or an API key is set."""
        return bool(self.base_url or self.api_key)


@dataclass(frozen=True)
class ModelsConfig:
    """``models.yaml`` resolved against the environment.

    Attributes:
        source: The file it came from.
        file: The validated file.
        endpoints: The resolved endpoint of each model tier.
    """

    source: str
    file: ModelsFile
    endpoints: Mapping[Tier, Endpoint]

    @property
    def any_configured(self) -> bool:
        """True when at least one model tier can reach a server."""
        return any(e.configured for e in self.endpoints.values())


def load_models(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    allowed_key_env: Sequence[str] = (),
) -> ModelsConfig:
    """Load ``models.yaml`` and resolve each tier's endpoint.

    Args:
        path: The file; ``None`` for the packaged default.
        env: Variables to resolve base URLs and keys from (default: ``os.environ``).
        allowed_key_env: Variables a tier's ``api_key_env`` may name besides
            those ending in ``_API_KEY`` (exact names, from the operator's settings).

    Raises:
        ConfigError: The file is missing, not YAML, or fails the schema, e.g.
            a tier's ``api_key_env`` names a variable that is not allowed (no
            variable is read then).
    """
    env = os.environ if env is None else env
    doc = _read(path, "models.yaml")
    file, problems = doc.validate(ModelsFile, doc.data, context={ALLOWED_KEY_ENV: _names(allowed_key_env)})
    if file is None:
        raise doc.fail(problems)
    endpoints = {}
    for tier in MODEL_TIERS:
        settings: TierModel = getattr(file.tiers, tier)
        base_url = settings.base_url or env.get(settings.base_url_env) or None
        endpoints[tier] = Endpoint(tier, settings, base_url, env.get(settings.api_key_env) or None)
    return ModelsConfig(source=doc.path, file=file, endpoints=endpoints)


# --------------------------------------------------------------------------- budgets.yaml


OnExceed = Literal["stop", "degrade", "local", "approve"]
"""What happens when a cap would be passed: stop with ``BudgetExceededError``,
degrade one tier, go to the local tier, or interrupt for a human's approval."""

DEFAULT_ALERTS: tuple[float, ...] = (0.7, 0.9, 1.0)
"""Fractions of a cap at which a warning is recorded."""

Alerts = Annotated[
    tuple[Annotated[Number, Field(gt=0, le=1)], ...], Field(description="Warn at these fractions.")
]


class Actions(_Strict):
    """What happens at a cap: the action and the alert thresholds."""

    on_exceed: OnExceed = "stop"
    """What happens when a cap would be passed."""
    alerts: Alerts = DEFAULT_ALERTS
    """Fractions of each cap (0-1] at which a warning is recorded."""


class NodeBudget(Actions):
    """Caps on one node's calls over a whole task (every re-plan loop included)."""

    max_tokens: StrictInt | None = Field(default=None, gt=0)
    """Input plus output tokens (tokens)."""
    max_cost_usd: NonNegativeUsd | None = None
    """Spend (USD)."""
    max_latency_ms: StrictInt | None = Field(default=None, gt=0)
    """Wall time spent waiting on calls (ms)."""
    max_tool_calls: StrictInt | None = Field(default=None, ge=0)
    """Tool calls the node's model may make."""
    plugins: tuple[str, ...] | None = None
    """The node's plugin chain, outermost first; ``None`` takes the default chain."""


class TaskBudget(Actions):
    """Caps on the whole task, all nodes together."""

    max_tokens: StrictInt | None = Field(default=None, gt=0)
    """Input plus output tokens (tokens)."""
    max_cost_usd: NonNegativeUsd | None = None
    """Spend (USD)."""


class Pacing(_Strict):
    """Spread a daily budget over the day.

    An hour may spend at most ``factor`` times the daily budget left at the
    start of the hour divided by the hours left in the day (UTC).
    """

    factor: Number = Field(default=1.5, gt=0)
    """Multiple of the even hourly share an hour may spend."""
    on_exceed: OnExceed = "degrade"
    """What happens to a call that would run past the pace."""


class WindowBudget(Actions):
    """Caps on one tenant's spend in a calendar window (UTC)."""

    max_tokens: StrictInt | None = Field(default=None, gt=0)
    """Input plus output tokens (tokens)."""
    max_cost_usd: NonNegativeUsd | None = None
    """Spend (USD)."""
    pacing: Pacing | None = None
    """Pacing of the window's spend over its hours (daily windows only)."""


class Windows(_Strict):
    """Per-tenant caps per calendar window."""

    hourly: WindowBudget | None = None
    daily: WindowBudget | None = None
    monthly: WindowBudget | None = None


def _apprise_url(url: str) -> str:
    """``url`` when apprise can send to it (its scheme and form); the URL itself is never echoed."""
    import apprise  # only a file that asks for notifications pays for the import

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in apprise.NotificationManager().schemas():
        raise ValueError(f"`{scheme[:20]}://` is not a service apprise knows; see its list of services")
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise ValueError(f"not a `{scheme}://` URL apprise can send to; see its page for the service")
    return url


class AlertsSettings(_Strict):
    """Who hears of a cap's alerts: ``budgets.yaml``'s ``alerts`` section.

    Example::

        alerts:
          notify: ["json://hooks.example.com/budget", "slack://T000/B000/XXXX"]
          levels: [0.9, 1.0]

    Each alert threshold a cap crosses (its ``alerts: [0.7, 0.9, 1.0]``) is
    noted once in the ledger; the first time, it is sent to every URL here
    (:mod:`budgetgraph.budgets.notify`), through apprise.
    """

    notify: tuple[Annotated[str, Field(min_length=1), AfterValidator(_apprise_url)], ...] = ()
    """Apprise URLs (``json://`` / ``jsons://`` for a webhook, ``slack://``, ``msteams://``,
    ``mailto://`` ...), each sent every alert; none: alerts are only recorded."""
    levels: tuple[Annotated[Number, Field(gt=0, le=1)], ...] | None = None
    """The thresholds that are sent (e.g. ``[0.9, 1.0]``); ``None``: every threshold a cap has."""


class DeferredSettings(_Strict):
    """Deferred calls, sent through the provider's batch API: ``budgets.yaml``'s ``deferred`` section.

    Example::

        deferred:
          nodes: [cto, coo]      # these nodes defer their calls in every run
          window_s: 300          # a request waits at most this long for others
          on_failure: live       # an expired, failed or cancelled request is sent live

    A run started with ``budgetgraph run --deferred`` (or the ``deferred``
    context key) defers every node's calls. See :mod:`budgetgraph.budgets.deferred`.
    """

    nodes: tuple[str, ...] = ()
    """Nodes whose calls are deferred in every run."""
    window_s: Number = Field(default=60.0, ge=0)
    """How long a queued request may wait for others before its batch is submitted (s)."""
    max_requests: StrictInt = Field(default=1000, gt=0, le=50_000)
    """Requests that fill one batch file (OpenAI takes up to 50,000)."""
    completion_window: Literal["24h"] = "24h"
    """The batch's completion window (the only one OpenAI offers)."""
    on_failure: Literal["live", "stop"] = "live"
    """An expired, failed or cancelled request: sent again live, or the run stops."""
    poll_interval_s: Number = Field(default=30.0, gt=0)
    """How often ``budgetgraph collect --wait`` and the served collector poll (s)."""
    submit_timeout_s: Number = Field(default=300.0, gt=0)
    """After this long, a submission a collector started and never finished is recovered (s)."""
    lease_s: Number = Field(default=60.0, gt=0)
    """How long a run a collector resumes stays its own after it last renewed the lease (s):
    a killed collector's runs are taken over after this; a live one renews every third of it."""


TASK_KEY = "total_task_budget"
CORE_KEYS = ("budgets", "nodes", "task", "windows", "tenants", "plugins", "alerts", "deferred")
"""Top-level keys of ``budgets.yaml`` besides the sections plugins own."""


@dataclass(frozen=True)
class BudgetsConfig:
    """``budgets.yaml``, with node names resolved to the graph's own.

    Attributes:
        source: The file it came from.
        nodes: Budget of each node that has one, by the graph's node name.
        task: The task budget.
        windows: Per-tenant calendar-window caps, for every tenant.
        tenants: Windows of particular tenants, overriding ``windows``.
        chain: The default plugin chain, or ``None`` for the gateway's own.
        sections: Top-level sections owned by plugins, unvalidated.
        document: The parsed file, for validating sections with line numbers.
        node_names: Every name a node may be given in the file, mapped to the
            graph's node name; a section's ``nodes:`` keys are resolved with it.
        allowed_key_env: Variables a section may name as holding an API key
            besides those ending in ``_API_KEY`` (see :data:`ApiKeyEnv`).
        alerts: Where alerts are sent (the ``alerts`` section).
        deferred: Deferred calls (the ``deferred`` section).
    """

    source: str
    nodes: Mapping[str, NodeBudget]
    task: TaskBudget
    windows: Windows = Windows()
    tenants: Mapping[str, Windows] = field(default_factory=dict)
    chain: tuple[str, ...] | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)
    document: YamlDocument | None = None
    node_names: Mapping[str, str] = field(default_factory=dict)
    allowed_key_env: tuple[str, ...] = ()
    alerts: AlertsSettings = AlertsSettings()
    deferred: DeferredSettings = DeferredSettings()

    def windows_for(self, tenant: str) -> Windows:
        """The windows of ``tenant``: its own entries, else the defaults."""
        own = self.tenants.get(tenant)
        if own is None:
            return self.windows
        return Windows(
            hourly=own.hourly or self.windows.hourly,
            daily=own.daily or self.windows.daily,
            monthly=own.monthly or self.windows.monthly,
        )

    def section(self, name: str, model: type[M]) -> M:
        """Validate the top-level section ``name``, owned by the plugin of that name.

        A missing or empty (``null``) section validates as ``{}`` (the model's
        defaults). When the section has per-node overrides (a mapping field
        named ``nodes``), their keys are resolved like the ``budgets``
        section's (``cto_agent`` -> ``cto``), and an unknown node is a problem.
        Validators see :attr:`allowed_key_env` in the validation context.

        Raises:
            ConfigError: The section fails ``model`` or names an unknown node;
                every problem is listed with its line.
        """
        data = self.sections.get(name)
        data = {} if data is None else data
        context = {ALLOWED_KEY_ENV: self.allowed_key_env}
        if self.document is None:
            parsed: M | None = model.model_validate(data, context=context)
            problems: list[str] = []
        else:
            parsed, problems = self.document.validate(model, data, (name,), context=context)
        nodes = getattr(parsed, "nodes", None)
        if parsed is not None and isinstance(nodes, dict) and self.node_names:
            resolved = {}
            for key, value in nodes.items():
                node = self.node_names.get(key)
                loc = (name, "nodes", key)
                if node is None:
                    known = ", ".join(sorted(self.node_names))
                    message = f"unknown node{mention(key)}; known: {known}"
                    problems.append(self.document.problem(loc, message) if self.document else message)
                elif node in resolved:
                    message = f"node `{node}` is given twice"
                    problems.append(self.document.problem(loc, message) if self.document else message)
                else:
                    resolved[node] = value
            parsed = parsed.model_copy(update={"nodes": resolved})
        if problems or parsed is None:
            if self.document is None:
                raise ConfigError(path=self.source, problems=problems)
            raise self.document.fail(problems)
        return parsed

    def node(self, name: str) -> NodeBudget:
        """Return the budget of node ``name`` (no caps when it has none)."""
        return self.nodes.get(name, NodeBudget())


def load_budgets(
    path: str | Path | None = None,
    *,
    node_names: Mapping[str, str],
    allowed_key_env: Sequence[str] = (),
) -> BudgetsConfig:
    """Load ``budgets.yaml``.

    The design document's format loads as it is::

        budgets:
          orchestrator: {max_tokens: 50000, max_latency_ms: 10000, max_tool_calls: 20, max_cost_usd: 5.00}
          total_task_budget: {max_tokens: 200000, max_cost_usd: 20.00}

    and extends with actions, alerts, windows, tenants and plugin chains::

        nodes:
          cto: {max_cost_usd: 2.00, on_exceed: degrade, alerts: [0.5, 1.0]}
        task: {max_cost_usd: 20, on_exceed: approve}
        windows:
          daily: {max_cost_usd: 100.0, alerts: [0.7, 0.9, 1.0], pacing: {factor: 1.5}}
        tenants:
          acme: {monthly: {max_cost_usd: 500}}
        plugins: [router, limits]
        alerts:
          notify: ["json://hooks.example.com/budget"]   # apprise URLs

    A node named in both ``budgets`` and ``nodes`` takes the fields of both,
    ``nodes`` winning; likewise ``total_task_budget`` and ``task``.

    Args:
        path: The file; ``None`` for the packaged default.
        node_names: Every name a node may be given in the file, mapped to the
            graph's node name (``{"orchestrator": "planner", "planner": "planner"}``).
            The graph supplies it: this package knows no particular node.
        allowed_key_env: Variables a plugin's section may name as holding an
            API key besides those ending in ``_API_KEY`` (the cache's
            endpoint embedder), checked when the section is read
            (:meth:`BudgetsConfig.section`).

    Raises:
        ConfigError: Not YAML, an unknown key, node or plugin, a section of the
            wrong type (``task: 5``), a wrong type or a negative cap; every
            problem of the file is listed.
    """
    doc = _read(path, "budgets.yaml")
    data = doc.data
    if not isinstance(data, dict):
        raise doc.fail([doc.problem((), "expected a mapping with a `budgets` key")])
    from budgetgraph.budgets.plugins.base import registered  # plugins own the sections named after them

    plugins = set(registered())
    problems: list[str] = []
    sections = {}
    for key in data:
        if key in plugins:
            sections[key] = data[key]
        elif key not in CORE_KEYS:
            problems.append(doc.problem((key,), "unknown key"))

    def mapping(where: tuple[Any, ...], value: Any, what: str) -> dict[Any, Any]:
        """``value`` when it is a mapping, ``{}`` when it is absent (``null``), else a problem."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(doc.problem(where, f"expected {what}"))
            return {}
        return value

    raw_nodes: dict[str, dict[str, Any]] = {}
    raw_task: dict[str, Any] = {}
    for section in ("budgets", "nodes"):
        entries = mapping((section,), data.get(section), "a mapping of node names to budgets")
        seen: set[str] = set()
        for name, value in entries.items():
            loc = (section, name)
            if not isinstance(value, dict):
                problems.append(doc.problem(loc, "expected a mapping of limits"))
                continue
            if name == TASK_KEY and section == "budgets":
                _, found = doc.validate(TaskBudget, value, loc)
                problems += found
                raw_task.update(value)
                continue
            node = node_names.get(name)
            if node is None:
                known = ", ".join(sorted(set(node_names) | ({TASK_KEY} if section == "budgets" else set())))
                problems.append(doc.problem(loc, f"unknown node{mention(name)}; known: {known}"))
                continue
            if node in seen:
                problems.append(doc.problem(loc, f"node `{node}` is given twice"))
                continue
            seen.add(node)
            _, found = doc.validate(NodeBudget, value, loc)  # report with this entry's lines
            problems += found
            raw_nodes.setdefault(node, {}).update(value)
    task = mapping(("task",), data.get("task"), "a mapping of limits")
    if task:
        _, found = doc.validate(TaskBudget, task, ("task",))
        problems += found
        raw_task.update(task)
    windows_data = mapping(("windows",), data.get("windows"), "a mapping of windows (hourly, daily, monthly)")
    windows, found = doc.validate(Windows, windows_data, ("windows",))
    problems += found
    tenants: dict[str, Windows] = {}
    tenants_data = mapping(("tenants",), data.get("tenants"), "a mapping of tenant names to windows")
    for tenant, value in tenants_data.items():
        loc = ("tenants", tenant)
        own = mapping(loc, value, "a mapping of windows (hourly, daily, monthly)")
        parsed, found = doc.validate(Windows, own, loc)
        problems += found
        if parsed is not None:
            tenants[str(tenant)] = parsed
    alerts_data = mapping(("alerts",), data.get("alerts"), "a mapping with `notify` (apprise URLs)")
    alerts, found = doc.validate(AlertsSettings, alerts_data, ("alerts",))
    problems += found
    deferred_data = mapping(
        ("deferred",), data.get("deferred"), "a mapping (nodes, window_s, on_failure ...)"
    )
    deferred, found = doc.validate(DeferredSettings, deferred_data, ("deferred",))
    problems += found
    if deferred is not None:
        for index, name in enumerate(deferred.nodes):
            if name not in node_names:
                known = ", ".join(sorted(node_names))
                problems.append(
                    doc.problem(("deferred", "nodes", index), f"unknown node{mention(name)}; known: {known}")
                )
        deferred = deferred.model_copy(
            update={"nodes": tuple(node_names[n] for n in deferred.nodes if n in node_names)}
        )
    chain = data.get("plugins")
    chains: list[tuple[tuple[str, ...], Any]] = [(("plugins",), chain)] + [
        (("nodes", n, "plugins"), v.get("plugins")) for n, v in raw_nodes.items()
    ]
    for where, names in chains:
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(doc.problem(where, "expected a list of plugin names"))
            continue
        for index, name in enumerate(names):
            if name not in plugins:
                message = f"unknown plugin{mention(name)}; known: {', '.join(sorted(plugins))}"
                problems.append(doc.problem((*where, index), message))
            elif name in names[:index]:  # twice in a chain: its reservations and spend would count twice
                twice = f"plugin{mention(name)} is already in this chain"
                problems.append(doc.problem((*where, index), twice))
    if problems:
        raise doc.fail(list(dict.fromkeys(problems)))
    return BudgetsConfig(
        source=doc.path,
        nodes={name: NodeBudget.model_validate(value) for name, value in raw_nodes.items()},
        task=TaskBudget.model_validate(raw_task),
        windows=windows or Windows(),
        tenants=tenants,
        chain=tuple(chain) if chain is not None else None,
        sections=sections,
        document=doc,
        node_names=dict(node_names),
        allowed_key_env=_names(allowed_key_env),
        alerts=alerts or AlertsSettings(),
        deferred=deferred or DeferredSettings(),
    )


def _names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; one name given as a string is one name, not its letters."""
    return (names,) if isinstance(names, str) else tuple(names)


def _read(path: str | Path | None, default_name: str) -> YamlDocument:
    if path:
        return YamlDocument.read(path)
    text = resources.files("budgetgraph.budgets").joinpath(default_name).read_text(encoding="utf-8")
    return YamlDocument.parse(text, path=f"<packaged {default_name}>")
