"""Telemetry set up from the standard ``OTEL_*`` variables, and shut down within a bound.

:func:`configure_telemetry` builds, once per process, what budgetgraph's spans
and metrics go to:

- the local span store (SQLite, ``.budgetgraph/traces.sqlite``), always on
  unless ``OTEL_SDK_DISABLED=true`` or ``BUDGETGRAPH_TRACE_STORE=off``, written
  like an exporter behind the SDK's ``BatchSpanProcessor`` (see
  :mod:`budgetgraph.tracing.store`);
- OTLP export of spans, through the SDK's own exporters behind a
  ``BatchSpanProcessor`` (spans leave from a background thread, never from
  the run's);
- OTLP export of the GenAI client metrics, through a
  ``PeriodicExportingMetricReader``.

The OpenTelemetry SDK reads most variables itself, and budgetgraph leaves
them to it: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` (``Resource.create``; budgetgraph only
fills in ``service.name=budgetgraph`` and ``service.version`` when they name
none); the OTLP exporters' endpoint, headers, timeout, compression and
certificates; the batch processors' ``OTEL_BSP_*`` (queue size, batch size,
export timeout, schedule delay). budgetgraph reads, by the names of
:mod:`opentelemetry.environment_variables` and :mod:`opentelemetry.sdk.environment_variables`:

- ``OTEL_SDK_DISABLED=true``: no spans, no metrics, no local store.
- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` (stderr) or ``none``. Unset:
  ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else none (the local store only).
- ``OTEL_METRICS_EXPORTER``: likewise, except that unset means ``otlp`` only
  when ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set. Jaeger, the usual
  target of ``OTEL_EXPORTER_OTLP_ENDPOINT``, takes no metrics.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and ``_TRACES_`` / ``_METRICS_``):
  ``http/protobuf`` (default) or ``grpc``: which SDK exporter is built.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``_TRACES_`` / ``_METRICS_``), resolved
  by the SDK's rules only for the logs and the shutdown's reachability check.
- ``OTEL_EXPORTER_OTLP_TIMEOUT`` (and ``_TRACES_`` ...): in seconds as the
  Python SDK reads it (default 10); it also bounds the wait at shutdown.
- ``OTEL_BSP_SCHEDULE_DELAY``: whether it is set. Unset, the local store is
  written every :data:`~budgetgraph.tracing.store.STORE_SCHEDULE_DELAY_MS`
  (500 ms) instead of the SDK's 5 s; set, it applies to the store too.
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: record prompts,
  completions and tool arguments and results (:func:`capture_content_from_env`).
- ``OTEL_SEMCONV_STABILITY_OPT_IN``: ``gen_ai_latest_experimental`` opts in to
  the latest GenAI conventions (:func:`genai_semconv_latest`).
- ``BUDGETGRAPH_TRACE_STORE``: the local span store's path, or ``off``; read
  with the other settings by :mod:`budgetgraph.settings`.

A host program that already installed an SDK ``TracerProvider`` (or
``MeterProvider``) as the global one keeps it: budgetgraph's spans go to it,
with the local store added, and no exporter of ours is added beside the
host's. Otherwise budgetgraph keeps its providers to itself and does not
install them globally.

An unreachable collector never fails or holds up a run: spans are exported
from a background thread, and :func:`shutdown_telemetry` writes the local
store first, then gives the final export the rest of the export timeout.
Before it waits, it checks with one TCP connection that the collector's port
answers; when it does not (connection refused, no route), the pending spans
are dropped at once with a warning (they are in the local store), instead of
the exporter's retries with backoff (1 s, 2 s, 4 s ...) running out the timeout.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
)

from budgetgraph.tracing import attributes as attr

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from budgetgraph.tracing.metrics import Instruments
    from budgetgraph.tracing.store import SpanStore, SpanStoreBatchProcessor

logger = logging.getLogger(__name__)

Protocol = Literal["http/protobuf", "grpc"]
ExporterName = Literal["otlp", "console", "none"]

DEFAULT_SERVICE_NAME = "budgetgraph"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one."""
DEFAULT_EXPORT_TIMEOUT_S = 10.0
"""The OTLP exporters' default timeout (s), per export."""
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Opt-in to recording prompts, completions and tool arguments (the GenAI instrumentations' variable)."""
_CAPTURE_ON = {"true", "span_only", "span_and_event"}
SEMCONV_OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
"""The conventions' stability opt-in: a comma-separated list of modes."""
GENAI_LATEST = "gen_ai_latest_experimental"
"""The opt-in mode of the latest (experimental) GenAI semantic conventions."""
_PROBE_TIMEOUT_S = 1.0
"""The longest the shutdown's reachability check waits for the collector's port (s)."""


@functools.cache
def _optional(module: str) -> ModuleType | None:
    """``module`` if it imports (tried once per process; 10-50 ms for the instrumentations), else ``None``."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception:  # not installed, or broken: fall back to reading the variable ourselves
        return None


def genai_semconv_latest(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental``.

    Args:
        env: The variables to read now. ``None``: the process's opt-in as
            opentelemetry-instrumentation reads it (``_semconv``, once per process,
            so budgetgraph's spans follow the same conventions as the GenAI
            instrumentations', e.g. openai-v2); without that package, ``os.environ``
            now, the same way (a comma-separated list, entries stripped,
            case-sensitive).

    Returns:
        True when the latest experimental GenAI conventions are asked for. Never raises.
    """
    if env is None:
        semconv = _optional("opentelemetry.instrumentation._semconv")
        if semconv is not None:
            try:
                stability = semconv._OpenTelemetrySemanticConventionStability
                stability._initialize()
                mode = stability._get_opentelemetry_stability_opt_in_mode(
                    semconv._OpenTelemetryStabilitySignalType.GEN_AI
                )
                return bool(mode == semconv._StabilityMode.GEN_AI_LATEST_EXPERIMENTAL)
            except Exception:  # a private API that may change: read the variable instead
                logger.debug("Could not ask opentelemetry-instrumentation for the opt-in", exc_info=True)
        env = os.environ
    return GENAI_LATEST in (mode.strip() for mode in env.get(SEMCONV_OPT_IN_ENV, "").split(","))


def capture_content_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for message content on spans.

    ``true`` (the spelling of the GenAI conventions before
    ``gen_ai_latest_experimental``) asks for it, as do the content capturing
    modes of opentelemetry-util-genai that put content on spans, ``SPAN_ONLY``
    and ``SPAN_AND_EVENT`` (any case); ``false``, ``NO_CONTENT`` and
    ``EVENT_ONLY`` do not (budgetgraph emits no content events).

    Args:
        env: The variables (default ``os.environ``). With ``os.environ`` and
            opentelemetry-util-genai installed, its ``should_capture_content_on_spans``
            decides a mode, and warns of an unknown value.

    Returns:
        True to record content. Never raises.
    """
    source = os.environ if env is None else env
    raw = source.get(CAPTURE_ENV, "").strip().lower()
    if raw in {"", "true", "false"}:
        return raw == "true"
    if env is None:
        utils = _optional("opentelemetry.util.genai.utils")
        if utils is not None:
            try:
                return bool(utils.should_capture_content_on_spans())
            except Exception:
                logger.debug("Could not ask opentelemetry-util-genai for the capture mode", exc_info=True)
    return raw in _CAPTURE_ON


def default_store_path(cwd: Path | None = None) -> Path | None:
    """The local span store's path from the settings (``BUDGETGRAPH_TRACE_STORE``), read now.

    Returns:
        The path (default ``.budgetgraph/traces.sqlite`` under ``cwd``), or ``None`` when
        the store is off. An invalid setting is logged and turns the store off:
        telemetry never breaks a run (the CLI checks the settings before it gets here).
    """
    from budgetgraph.budgets.errors import ConfigError
    from budgetgraph.settings import load_settings

    try:
        return load_settings().trace_store_path(cwd)
    except ConfigError as exc:
        logger.warning("The local span store is off: %s", exc)
        return None


@dataclass(frozen=True)
class SignalSettings:
    """Export settings of one signal (traces or metrics).

    Attributes:
        exporter: ``otlp``, ``console`` or ``none``.
        protocol: ``http/protobuf`` or ``grpc``.
        endpoint: Where the exporter sends, as resolved by the SDK's rules (for logs and
            the reachability check; the SDK exporter resolves it again itself).
        timeout_s: Export timeout (s), which also bounds the shutdown.
    """

    exporter: ExporterName
    protocol: Protocol
    endpoint: str
    timeout_s: float


@dataclass(frozen=True)
class TelemetrySettings:
    """What the environment asks of telemetry (see the module docstring for the variables).

    Attributes:
        disabled: ``OTEL_SDK_DISABLED=true``.
        service_name: ``service.name`` of the resource when ``OTEL_RESOURCE_ATTRIBUTES``
            names none: ``OTEL_SERVICE_NAME``, else ``budgetgraph``.
        traces: Span export.
        metrics: Metric export.
        capture_content: Record message content on spans.
        store_path: The local span store, or ``None``.
        store_schedule_delay_ms: The local store's batch delay (ms); ``None``: the
            SDK's ``OTEL_BSP_SCHEDULE_DELAY``, which is set.
        genai_latest: ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental``.
    """

    disabled: bool
    service_name: str
    traces: SignalSettings
    metrics: SignalSettings
    capture_content: bool
    store_path: Path | None
    store_schedule_delay_ms: float | None = None
    genai_latest: bool = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        store_path: Path | None | Literal["default"] = "default",
    ) -> TelemetrySettings:
        """Read the ``OTEL_*`` settings from ``env`` (default: ``os.environ``).

        Args:
            env: The variables.
            cwd: Folder of the default span store.
            store_path: The local span store (``None``: off); ``"default"`` asks
                budgetgraph's settings (:func:`default_store_path`).
        """
        from budgetgraph.tracing.store import STORE_SCHEDULE_DELAY_MS

        source = os.environ if env is None else env
        return cls(
            disabled=source.get(OTEL_SDK_DISABLED, "").strip().lower() == "true",
            service_name=source.get(OTEL_SERVICE_NAME, "").strip() or DEFAULT_SERVICE_NAME,
            traces=_signal(source, "traces", default_on_general_endpoint=True),
            metrics=_signal(source, "metrics", default_on_general_endpoint=False),
            capture_content=capture_content_from_env(env),
            store_path=default_store_path(cwd) if store_path == "default" else store_path,
            store_schedule_delay_ms=None if source.get(OTEL_BSP_SCHEDULE_DELAY) else STORE_SCHEDULE_DELAY_MS,
            genai_latest=genai_semconv_latest(env),
        )


@dataclass(frozen=True)
class _SignalVariables:
    """The variables of one signal, by the SDK's names."""

    exporter: str
    endpoint: str
    protocol: str
    timeout: str
    path: str
    """Added to the general endpoint over HTTP."""


_SIGNALS = {
    "traces": _SignalVariables(
        OTEL_TRACES_EXPORTER,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
        "v1/traces",
    ),
    "metrics": _SignalVariables(
        OTEL_METRICS_EXPORTER,
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
        OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
        "v1/metrics",
    ),
}


def _signal(env: Mapping[str, str], signal: str, *, default_on_general_endpoint: bool) -> SignalSettings:
    """One signal's exporter, protocol, endpoint and timeout, by the SDK's rules."""
    names = _SIGNALS[signal]
    chosen = [p.strip().lower() for p in env.get(names.exporter, "").split(",") if p.strip()]
    specific = env.get(names.endpoint, "").strip()
    general = env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip()
    exporter: ExporterName
    if chosen:
        exporter = "otlp" if "otlp" in chosen else "console" if "console" in chosen else "none"
        unknown = set(chosen) - {"otlp", "console", "none"}
        if unknown:
            logger.warning("%s: %s not supported; using %s", names.exporter, sorted(unknown), exporter)
    elif specific or (general and default_on_general_endpoint):
        exporter = "otlp"
    else:
        exporter = "none"
    raw_protocol = (
        env.get(names.protocol) or env.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
    ).strip().lower() or "http/protobuf"
    protocol: Protocol
    if raw_protocol == "grpc":
        protocol = "grpc"
    else:
        if raw_protocol != "http/protobuf":
            logger.warning("OTLP protocol `%s` is not supported; using http/protobuf", raw_protocol)
        protocol = "http/protobuf"
    if protocol == "grpc":
        endpoint = specific or general or "http://localhost:4317"
    else:
        endpoint = specific or f"{(general or 'http://localhost:4318').rstrip('/')}/{names.path}"
    raw_timeout = env.get(names.timeout) or env.get(OTEL_EXPORTER_OTLP_TIMEOUT)
    try:
        timeout_s = float(raw_timeout) if raw_timeout else DEFAULT_EXPORT_TIMEOUT_S
    except ValueError:
        logger.warning("OTLP timeout `%s` is not a number of seconds; using %s", raw_timeout, 10)
        timeout_s = DEFAULT_EXPORT_TIMEOUT_S
    return SignalSettings(exporter=exporter, protocol=protocol, endpoint=endpoint, timeout_s=timeout_s)


class Telemetry:
    """Configured telemetry: the tracer, the metric instruments, the store, and their shutdown.

    Built by :func:`configure_telemetry`; read by the span helpers through :func:`current`.

    Attributes:
        settings: What the environment asked for.
        tracer: The tracer of budgetgraph's spans (scope ``budgetgraph``).
        instruments: The metric instruments, or ``None`` when no metric reader is configured.
        store: The local span store, or ``None``; :mod:`budgetgraph.tracing.runs` notes
            and reads each thread's first run span in it directly.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        tracer: trace.Tracer,
        *,
        instruments: Instruments | None = None,
        store: SpanStore | None = None,
        store_processor: SpanStoreBatchProcessor | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        remote: Sequence[tuple[_Guarded, str]] = (),
    ) -> None:
        self.settings = settings
        self.tracer = tracer
        self.instruments = instruments
        self.store = store
        self._store_processor = store_processor
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._remote = list(remote)
        self._closed = False

    @property
    def capture_content(self) -> bool:
        """Whether prompts, completions and tool arguments are recorded."""
        return self.settings.capture_content

    @property
    def genai_latest(self) -> bool:
        """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the latest experimental GenAI conventions."""
        return self.settings.genai_latest

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Write the local store's queue, then export what is pending, within ``timeout_s``.

        Args:
            timeout_s: The longest wait (s); default: the export timeout.

        Returns:
            True when everything was handed over in time.
        """
        timeout = self.settings.traces.timeout_s if timeout_s is None else timeout_s
        return _bounded(self._flush_all, timeout, "flush")

    def _flush_all(self) -> None:
        self._flush_store()
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()
        if self._meter_provider is not None:
            self._meter_provider.force_flush()

    def _flush_store(self) -> None:
        """Write what the local store's batch processor holds, in the calling thread."""
        if self._store_processor is not None:
            self._store_processor.force_flush()

    def shutdown(self) -> float:
        """Write the local store, then export what is pending and close, within the export timeout.

        The store comes first (a local file, about a millisecond for a run's
        spans): ``budgetgraph trace`` reads it next. Never raises.

        Returns:
            Seconds spent.
        """
        started = time.monotonic()
        if self._closed:
            return 0.0
        self._closed = True
        timeout = max(self.settings.traces.timeout_s, self.settings.metrics.timeout_s)
        deadline = started + timeout
        stored = True
        if self._store_processor is not None:
            stored = _bounded(self._flush_store, timeout, "store")
            if not stored:
                logger.warning(
                    "The local span store %s was not written within %.1f s; its last spans are lost.",
                    self.store.path if self.store is not None else "",
                    timeout,
                )
        try:
            self._drop_where_unreachable(deadline)
        except Exception:  # telemetry never raises into the host
            logger.debug("Could not check the collectors", exc_info=True)
        try:
            remaining = max(deadline - time.monotonic(), 0.0)
            if not _bounded(self._shutdown_providers, remaining, "shutdown"):
                logger.warning(
                    "Telemetry export did not finish within the export timeout (%.1f s); dropped the rest.",
                    timeout,
                )
                for guarded, _ in self._remote:
                    guarded.abort()
        except Exception:
            logger.debug("Telemetry shutdown failed", exc_info=True)
        finally:
            if self.store is not None and stored:  # else a write holds the store: leave it to the exit
                self.store.close()
        return time.monotonic() - started

    def _drop_where_unreachable(self, deadline: float) -> None:
        """Abort the exporters whose collector's port does not answer (one check per endpoint)."""
        answers: dict[str, bool] = {}  # spans and metrics often share an endpoint
        for guarded, endpoint in self._remote:
            if endpoint not in answers:
                remaining = deadline - time.monotonic()
                answers[endpoint] = reachable(endpoint, timeout_s=min(_PROBE_TIMEOUT_S, max(remaining, 0.0)))
            if not answers[endpoint]:
                logger.warning(
                    "The OTLP collector at %s does not answer: pending %s dropped "
                    "(`budgetgraph trace THREAD` shows the spans from the local store).",
                    endpoint,
                    guarded.kind,
                )
                guarded.abort()

    def _shutdown_providers(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


def _bounded(work: Any, timeout_s: float, what: str) -> bool:
    """Run ``work()`` in a daemon thread and wait for it at most ``timeout_s``.

    Returns:
        True when it finished in time (an exception in it is logged, not raised).
    """

    def target() -> None:
        try:
            work()
        except Exception:
            logger.debug("Telemetry %s failed", what, exc_info=True)

    worker = threading.Thread(target=target, name=f"budgetgraph-telemetry-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return not worker.is_alive()


def reachable(endpoint: str, *, timeout_s: float) -> bool:
    """Whether a TCP connection to ``endpoint``'s host and port opens within ``timeout_s``.

    An endpoint reached through a proxy (``HTTPS_PROXY`` and the like), or on a
    Unix socket, is taken as reachable: the check cannot tell.
    """
    try:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:  # not a URL: no exporter will reach it either
        return False
    if parsed.scheme == "unix" or not host:
        return True
    import urllib.request  # only at shutdown: it takes ~30 ms to import

    proxies = urllib.request.getproxies()
    if (proxies.get(parsed.scheme) or proxies.get("https") or proxies.get("all")) and not (
        urllib.request.proxy_bypass(host)
    ):
        return True
    try:
        with socket.create_connection((host, port), timeout=max(timeout_s, 0.001)):
            return True
    except OSError:
        return False


class _Guarded:
    """An exporter that can be aborted at shutdown: later exports fail at once, quietly."""

    kind = "telemetry"

    def abort(self) -> None:  # pragma: no cover - overridden
        """Drop what is pending and refuse further exports."""


def _guarded_span_exporter(inner: SpanExporter) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class GuardedSpanExporter(SpanExporter, _Guarded):
        """Delegates to the SDK exporter; :meth:`abort` stops its retries and later exports."""

        kind = "spans"

        def __init__(self) -> None:
            self._inner = inner
            self._aborted = False
            self._closed = False
            self._lock = threading.Lock()

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            if self._aborted:
                return SpanExportResult.FAILURE
            return self._inner.export(spans)

        def shutdown(self) -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self._inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True if self._aborted else self._inner.force_flush(timeout_millis)

        def abort(self) -> None:
            self._aborted = True
            self.shutdown()

    return GuardedSpanExporter()


def _guarded_metric_exporter(inner: MetricExporter) -> Any:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class GuardedMetricExporter(MetricExporter, _Guarded):
        """Delegates to the SDK exporter; :meth:`abort` stops its retries and later exports."""

        kind = "metrics"

        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=inner._preferred_temporality,
                preferred_aggregation=inner._preferred_aggregation,
            )
            self._inner = inner
            self._aborted = False
            self._closed = False
            self._lock = threading.Lock()

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            if self._aborted:
                return MetricExportResult.FAILURE
            return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True if self._aborted else self._inner.force_flush(timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self._inner.shutdown(timeout_millis=timeout_millis)

        def abort(self) -> None:
            self._aborted = True
            self.shutdown()

    return GuardedMetricExporter()


def _span_exporter(signal: SignalSettings) -> SpanExporter:
    if signal.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout may be a --json document
    if signal.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _metric_exporter(signal: SignalSettings) -> MetricExporter:
    if signal.exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stderr)
    if signal.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


PINNED_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "budgetgraph_pinned_trace_id", default=None
)
"""A trace id the next root span started in this context takes instead of a random one
(set by :func:`budgetgraph.tracing.runs.node_span` around a served graph's node spans)."""

_lock = threading.RLock()
_current: Telemetry | None = None
_atexit_registered = False


def current() -> Telemetry | None:
    """The telemetry :func:`configure_telemetry` set up, or ``None`` before it (or after shutdown)."""
    return _current


def get_tracer() -> trace.Tracer:
    """The tracer for budgetgraph's spans: the configured one, else the global API's.

    Without :func:`configure_telemetry` and without a global SDK provider the
    global API's tracer makes no-op spans, so tracing costs nothing.
    """
    telemetry = _current
    if telemetry is not None:
        return telemetry.tracer
    return trace.get_tracer(attr.SCOPE)


def configure_telemetry(
    settings: TelemetrySettings | None = None,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Set up telemetry from the ``OTEL_*`` variables, once: later calls return the same.

    Call it at the start of a program (the CLI does, and the graph served by
    ``langgraph dev`` on its first node), and :func:`shutdown_telemetry` at its
    end (registered with :mod:`atexit` too).

    Args:
        settings: The settings (default: read from the environment now).
        span_processors: More span processors, e.g. an in-memory exporter in tests.
        metric_readers: More metric readers, e.g. an ``InMemoryMetricReader``.

    Returns:
        The configured telemetry. Never raises: a failure is logged and leaves
        tracing off.
    """
    global _current, _atexit_registered
    if _current is not None:  # the common case, from every node of a served graph: no lock
        return _current
    with _lock:
        if _current is not None:
            return _current
        settings = settings or TelemetrySettings.from_env()
        try:
            _current = _build(settings, span_processors, metric_readers)
        except Exception:  # telemetry never breaks the program
            logger.warning("Could not set up telemetry; tracing is off", exc_info=True)
            _current = Telemetry(settings, trace.NoOpTracer())
        if not _atexit_registered:
            atexit.register(shutdown_telemetry)
            _atexit_registered = True
        return _current


def shutdown_telemetry() -> float:
    """Export what is pending and close, within the export timeout; never raises.

    A later :func:`configure_telemetry` sets up afresh (reading the variables again).

    Returns:
        Seconds spent.
    """
    global _current
    with _lock:
        telemetry, _current = _current, None
    if telemetry is None:
        return 0.0
    return telemetry.shutdown()


def force_flush(timeout_s: float | None = None) -> bool:
    """Export what is pending now (a long-lived server between runs), within ``timeout_s``."""
    telemetry = _current
    return True if telemetry is None else telemetry.force_flush(timeout_s)


def _build(
    settings: TelemetrySettings,
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
) -> Telemetry:
    if settings.disabled:
        logger.debug("OTEL_SDK_DISABLED=true: no spans, no metrics, no local span store")
        return Telemetry(settings, trace.NoOpTracer())

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from budgetgraph.tracing.metrics import Instruments
    from budgetgraph.tracing.store import SpanStore, SpanStoreBatchProcessor

    version = _version()
    store_processor: SpanStoreBatchProcessor | None = None
    remote: list[tuple[_Guarded, str]] = []
    host = trace.get_tracer_provider()
    owned_tracer_provider: TracerProvider | None = None
    resource: Resource | None = None
    if isinstance(host, TracerProvider):
        # The host program set up OpenTelemetry: join its provider and exporters.
        provider = host
        if settings.store_path is not None:
            store_processor = _joined_store(provider, settings)
    else:
        resource = _resource(settings, version)
        provider = owned_tracer_provider = TracerProvider(
            resource=resource, id_generator=_pinnable_ids(), shutdown_on_exit=False
        )
        if settings.store_path is not None:  # first: shutdown writes the store before exporting
            store_processor = SpanStoreBatchProcessor(
                SpanStore(settings.store_path), schedule_delay_millis=settings.store_schedule_delay_ms
            )
            provider.add_span_processor(store_processor)
        if settings.traces.exporter != "none":
            exporter = _guarded_span_exporter(_span_exporter(settings.traces))
            provider.add_span_processor(BatchSpanProcessor(exporter))
            if settings.traces.exporter == "otlp":
                remote.append((exporter, settings.traces.endpoint))
                logger.info(
                    "Exporting spans over OTLP (%s) to %s", settings.traces.protocol, settings.traces.endpoint
                )
    for processor in span_processors:
        provider.add_span_processor(processor)

    meter_provider, instruments = None, None
    readers = list(metric_readers)
    host_meters = metrics.get_meter_provider()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if isinstance(host_meters, MeterProvider) and not readers:
        instruments = Instruments(host_meters.get_meter(attr.SCOPE, version))
    else:
        if settings.metrics.exporter != "none":
            metric_exporter = _guarded_metric_exporter(_metric_exporter(settings.metrics))
            readers.append(PeriodicExportingMetricReader(metric_exporter))
            if settings.metrics.exporter == "otlp":
                remote.append((metric_exporter, settings.metrics.endpoint))
        if readers:
            resource = resource or _resource(settings, version)
            meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
            instruments = Instruments(meter_provider.get_meter(attr.SCOPE, version))

    return Telemetry(
        settings,
        provider.get_tracer(attr.SCOPE, version),
        instruments=instruments,
        store=store_processor.store if store_processor is not None else None,
        store_processor=store_processor,
        tracer_provider=owned_tracer_provider if owned_tracer_provider is not None else None,
        meter_provider=meter_provider,
        remote=remote,
    )


def _pinnable_ids() -> Any:
    """Random ids, except a root span's trace id when :data:`PINNED_TRACE_ID` holds one."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PinnableIdGenerator(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return PINNED_TRACE_ID.get() or super().generate_trace_id()

    return PinnableIdGenerator()


def _resource(settings: TelemetrySettings, version: str) -> Resource:
    """The SDK's resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, the detectors).

    ``service.name`` and ``service.version`` are budgetgraph's only where the
    two variables give none (the SDK would say ``unknown_service``).
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource

    given = OTELResourceDetector().detect().attributes
    ours = {SERVICE_NAME: settings.service_name, SERVICE_VERSION: version}
    return Resource.create({key: value for key, value in ours.items() if key not in given})


def _joined_store(provider: Any, settings: TelemetrySettings) -> SpanStoreBatchProcessor:
    """The store's batch processor on a host's provider: added once per process and path, then reused.

    A host provider keeps its processors until it shuts down, so a later
    :func:`configure_telemetry` (after :func:`shutdown_telemetry`) finds the
    one it added before rather than adding a second writer of the same file.
    """
    from budgetgraph.tracing.store import SpanStore, SpanStoreBatchProcessor

    assert settings.store_path is not None
    joined: dict[Path, SpanStoreBatchProcessor] = getattr(provider, "_budgetgraph_stores", {})
    processor = joined.get(settings.store_path)
    if processor is None:
        processor = SpanStoreBatchProcessor(
            SpanStore(settings.store_path), schedule_delay_millis=settings.store_schedule_delay_ms
        )
        provider.add_span_processor(processor)
        joined[settings.store_path] = processor
        try:
            provider._budgetgraph_stores = joined
        except AttributeError:  # a provider with __slots__: a processor per configuration, as before
            pass
    return processor


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("budgetgraph")
    except PackageNotFoundError:
        return "0"
