"""Telemetry set up from the standard ``OTEL_*`` variables, and shut down within a bound.

:func:`configure_telemetry` builds, once per process, what budgetgraph's spans
and metrics go to:

- the local span store (SQLite, ``.budgetgraph/traces.sqlite``), always on
  unless ``OTEL_SDK_DISABLED=true`` or ``BUDGETGRAPH_TRACE_STORE=off``;
- OTLP export of spans, through the SDK's own exporters behind a
  ``BatchSpanProcessor`` (spans leave from a background thread, never from
  the run's);
- OTLP export of the GenAI client metrics, through a
  ``PeriodicExportingMetricReader``.

Variables read (the OpenTelemetry SDK configuration spec; the SDK exporters
read the rest themselves: headers, certificates, compression):

- ``OTEL_SDK_DISABLED=true``: no spans, no metrics, no local store.
- ``OTEL_SERVICE_NAME`` (default ``budgetgraph``), ``OTEL_RESOURCE_ATTRIBUTES``.
- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` (stderr) or ``none``. Unset:
  ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else none (the local store only).
- ``OTEL_METRICS_EXPORTER``: likewise, except that unset means ``otlp`` only
  when ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set. Jaeger, the usual
  target of ``OTEL_EXPORTER_OTLP_ENDPOINT``, takes no metrics.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and ``_TRACES_`` / ``_METRICS_``):
  ``http/protobuf`` (default) or ``grpc``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``_TRACES_`` / ``_METRICS_``): the
  collector. Over HTTP the general one is a base URL (``/v1/traces`` is
  added), a signal's own is used as is; over gRPC, ``host:port``.
- ``OTEL_EXPORTER_OTLP_HEADERS`` (and ``_TRACES_`` ...): ``key=value,...``.
- ``OTEL_EXPORTER_OTLP_TIMEOUT`` (and ``_TRACES_`` ...): the export timeout,
  in seconds as the Python SDK reads it (default 10). It also bounds the
  wait at shutdown.
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``: record prompts,
  completions and tool arguments and results.
- ``BUDGETGRAPH_TRACE_STORE``: the local span store's path, or ``off``; read
  with the other settings by :mod:`budgetgraph.settings`.

A host program that already installed an SDK ``TracerProvider`` (or
``MeterProvider``) as the global one keeps it: budgetgraph's spans go to it,
with the local store added, and no exporter of ours is added beside the
host's. Otherwise budgetgraph keeps its providers to itself and does not
install them globally.

An unreachable collector never fails or holds up a run: spans are exported
from a background thread, and :func:`shutdown_telemetry` gives the final
export at most the export timeout. Before it waits, it checks with one TCP
connection that the collector's port answers; when it does not (connection
refused, no route), the pending spans are dropped at once with a warning
(they are in the local store), instead of the exporter's retries with
backoff (1 s, 2 s, 4 s ...) running out the timeout.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from opentelemetry import metrics, trace

from budgetgraph.tracing import attributes as attr

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from budgetgraph.tracing.metrics import Instruments
    from budgetgraph.tracing.store import SpanStore

logger = logging.getLogger(__name__)

Protocol = Literal["http/protobuf", "grpc"]
ExporterName = Literal["otlp", "console", "none"]

DEFAULT_SERVICE_NAME = "budgetgraph"
DEFAULT_EXPORT_TIMEOUT_S = 10.0
"""The OTLP exporters' default timeout (s), per export."""
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Opt-in to recording prompts, completions and tool arguments (the GenAI instrumentations' variable)."""
_CAPTURE_ON = {"true", "span_only", "span_and_event"}
_PROBE_TIMEOUT_S = 1.0
"""The longest the shutdown's reachability check waits for the collector's port (s)."""


def capture_content_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for message content."""
    env = os.environ if env is None else env
    return env.get(CAPTURE_ENV, "").strip().lower() in _CAPTURE_ON


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
        timeout_s: Export timeout (s).
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
        service_name: ``service.name`` of the resource.
        traces: Span export.
        metrics: Metric export.
        capture_content: Record message content on spans.
        store_path: The local span store, or ``None``.
    """

    disabled: bool
    service_name: str
    traces: SignalSettings
    metrics: SignalSettings
    capture_content: bool
    store_path: Path | None

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
        env = os.environ if env is None else env
        return cls(
            disabled=env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true",
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
            traces=_signal(env, "TRACES", "v1/traces", default_on_general_endpoint=True),
            metrics=_signal(env, "METRICS", "v1/metrics", default_on_general_endpoint=False),
            capture_content=capture_content_from_env(env),
            store_path=default_store_path(cwd) if store_path == "default" else store_path,
        )


def _signal(
    env: Mapping[str, str], signal: str, path: str, *, default_on_general_endpoint: bool
) -> SignalSettings:
    chosen = [p.strip().lower() for p in env.get(f"OTEL_{signal}_EXPORTER", "").split(",") if p.strip()]
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    exporter: ExporterName
    if chosen:
        exporter = "otlp" if "otlp" in chosen else "console" if "console" in chosen else "none"
        unknown = set(chosen) - {"otlp", "console", "none"}
        if unknown:
            logger.warning("OTEL_%s_EXPORTER: %s not supported; using %s", signal, sorted(unknown), exporter)
    elif specific or (general and default_on_general_endpoint):
        exporter = "otlp"
    else:
        exporter = "none"
    raw_protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
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
        endpoint = specific or f"{(general or 'http://localhost:4318').rstrip('/')}/{path}"
    raw_timeout = env.get(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
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
        store: The local span store, or ``None``.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        tracer: trace.Tracer,
        *,
        instruments: Instruments | None = None,
        store: SpanStore | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        remote: Sequence[tuple[_Guarded, str]] = (),
    ) -> None:
        self.settings = settings
        self.tracer = tracer
        self.instruments = instruments
        self.store = store
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._remote = list(remote)
        self._closed = False

    @property
    def capture_content(self) -> bool:
        """Whether prompts, completions and tool arguments are recorded."""
        return self.settings.capture_content

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export what is pending, waiting at most ``timeout_s`` (default: the export timeout).

        Returns:
            True when everything was handed over in time.
        """
        timeout = self.settings.traces.timeout_s if timeout_s is None else timeout_s
        return _bounded(self._flush_all, timeout, "flush")

    def _flush_all(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()
        if self._meter_provider is not None:
            self._meter_provider.force_flush()

    def shutdown(self) -> float:
        """Export what is pending and close, within the export timeout; never raises.

        Returns:
            Seconds spent.
        """
        started = time.monotonic()
        if self._closed:
            return 0.0
        self._closed = True
        timeout = max(self.settings.traces.timeout_s, self.settings.metrics.timeout_s)
        deadline = started + timeout
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
            if self.store is not None:
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

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from budgetgraph.tracing.metrics import Instruments
    from budgetgraph.tracing.store import SpanStore, SpanStoreProcessor

    version = _version()
    store = SpanStore(settings.store_path) if settings.store_path is not None else None
    remote: list[tuple[_Guarded, str]] = []
    host = trace.get_tracer_provider()
    owned_tracer_provider: TracerProvider | None = None
    if isinstance(host, TracerProvider):
        # The host program set up OpenTelemetry: join its provider and exporters.
        provider = host
        if store is not None and _mark(provider, f"store:{store.path}"):
            provider.add_span_processor(SpanStoreProcessor(store))
    else:
        resource = Resource.create({"service.name": settings.service_name, "service.version": version})
        provider = owned_tracer_provider = TracerProvider(
            resource=resource, id_generator=_pinnable_ids(), shutdown_on_exit=False
        )
        if store is not None:
            provider.add_span_processor(SpanStoreProcessor(store))
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
            resource = Resource.create({"service.name": settings.service_name, "service.version": version})
            meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
            instruments = Instruments(meter_provider.get_meter(attr.SCOPE, version))

    return Telemetry(
        settings,
        provider.get_tracer(attr.SCOPE, version),
        instruments=instruments,
        store=store,
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


def _mark(provider: Any, key: str) -> bool:
    """Note ``key`` on a host provider; False when it was noted already (added once per process)."""
    marks: set[str] = getattr(provider, "_budgetgraph_marks", set())
    if key in marks:
        return False
    marks.add(key)
    try:
        provider._budgetgraph_marks = marks
    except AttributeError:
        pass
    return True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("budgetgraph")
    except PackageNotFoundError:
        return "0"
