"""A fake OpenTelemetry collector for tests: an OTLP receiver on 127.0.0.1.

It speaks OTLP/HTTP (``POST /v1/traces`` and ``/v1/metrics``, binary
protobuf, optionally gzip- or deflate-compressed) and, when asked, OTLP/gRPC
(``TraceService/Export``, ``MetricsService/Export``). Every request is decoded
with the official ``opentelemetry-proto`` classes (``ExportTraceServiceRequest``,
``ExportMetricsServiceRequest``) and kept, flattened into :class:`ReceivedSpan`
and :class:`ReceivedPoint` records whose attributes are plain Python values.

Typical use::

    with OTLPReceiver() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint)
        ...  # run something that exports
        spans = collector.wait_for_spans(lambda spans: any(s.parent_span_id is None for s in spans))

The receiver answers every export with success, unless told to fail the
next ones with :meth:`fail_next` (e.g. 503, which the SDK retries).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = ["OTLPReceiver", "ReceivedPoint", "ReceivedSpan", "any_value", "attributes_of"]


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (lists for arrays, dicts for key-value lists)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` pairs as a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as a collector received it.

    Attributes:
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent_span_id: 16 hex digits, or ``None`` for a root.
        name: The span name.
        kind: ``SPAN_KIND_INTERNAL``, ``SPAN_KIND_CLIENT`` ...
        start_ns: Start (ns since the epoch).
        end_ns: End (ns since the epoch).
        attributes: The span's attributes.
        events: ``(name, attributes)`` per event.
        links: ``(trace_id, span_id, attributes)`` per link.
        status: ``STATUS_CODE_UNSET``, ``STATUS_CODE_OK`` or ``STATUS_CODE_ERROR``.
        resource: The resource's attributes (``service.name`` ...).
        scope: The instrumentation scope's name.
        transport: ``http`` or ``grpc``.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    status: str
    resource: dict[str, Any]
    scope: str
    transport: str


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point as a collector received it.

    Attributes:
        metric: The metric's name.
        unit: Its unit.
        type: ``histogram``, ``sum`` or ``gauge``.
        attributes: The point's attributes.
        value: A sum's or gauge's value; a histogram's sum.
        count: A histogram's count (``None`` for the others).
        bounds: A histogram's explicit bucket bounds.
        resource: The resource's attributes.
    """

    metric: str
    unit: str
    type: str
    attributes: dict[str, Any]
    value: float
    count: int | None = None
    bounds: list[float] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


class OTLPReceiver:
    """An OTLP/HTTP (and, with ``grpc=True``, OTLP/gRPC) receiver on 127.0.0.1.

    Args:
        grpc: Also serve OTLP/gRPC on another free port.

    Attributes:
        http_endpoint: ``http://127.0.0.1:PORT``, the value for ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        grpc_endpoint: ``http://127.0.0.1:PORT`` of the gRPC receiver, or ``None``.
    """

    def __init__(self, *, grpc: bool = False) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self._requests: list[tuple[str, dict[str, str]]] = []
        self._fail: list[int] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.http_endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="otlp-receiver", daemon=True)
        self._grpc: Any = None
        self.grpc_endpoint: str | None = None
        if grpc:
            self._start_grpc()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._http.shutdown()
        self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what was received -------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def points(self, metric: str | None = None) -> list[ReceivedPoint]:
        """Every metric data point received so far (of ``metric`` only, if given)."""
        with self._lock:
            return [p for p in self._points if metric is None or p.metric == metric]

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """``(path, headers)`` of every export request, headers lower-cased."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` HTTP exports with ``status`` (e.g. 503, which the SDK retries)."""
        with self._lock:
            self._fail.extend([status] * times)

    def wait_for_spans(
        self, done: Callable[[list[ReceivedSpan]], bool], *, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until ``done(spans)`` holds, and return the spans.

        Raises:
            TimeoutError: It did not hold within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver has {len(spans)} spans, not what was waited for")
            time.sleep(0.02)

    # -- decoding ----------------------------------------------------------------------

    def _take_traces(self, request: ExportTraceServiceRequest, transport: str) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=Span.SpanKind.Name(span.kind),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=attributes_of(span.attributes),
                            events=[(e.name, attributes_of(e.attributes)) for e in span.events],
                            links=[
                                (link.trace_id.hex(), link.span_id.hex(), attributes_of(link.attributes))
                                for link in span.links
                            ],
                            status=Status.StatusCode.Name(span.status.code),
                            resource=resource,
                            scope=scope_spans.scope.name,
                            transport=transport,
                        )
                    )
        with self._lock:
            self._spans.extend(received)

    def _take_metrics(self, request: ExportMetricsServiceRequest) -> None:
        received = []
        for resource_metrics in request.resource_metrics:
            resource = attributes_of(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    if kind == "histogram":
                        for h in metric.histogram.data_points:
                            received.append(
                                ReceivedPoint(
                                    metric.name,
                                    metric.unit,
                                    "histogram",
                                    attributes_of(h.attributes),
                                    h.sum,
                                    h.count,
                                    list(h.explicit_bounds),
                                    resource,
                                )
                            )
                    elif kind in ("sum", "gauge"):
                        for p in getattr(metric, kind).data_points:
                            number = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            received.append(
                                ReceivedPoint(
                                    metric.name,
                                    metric.unit,
                                    kind,
                                    attributes_of(p.attributes),
                                    number,
                                    resource=resource,
                                )
                            )
        with self._lock:
            self._points.extend(received)

    # -- HTTP --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver._requests.append((self.path, headers))
                    status = receiver._fail.pop(0) if receiver._fail else 200
                if status != 200:
                    self._answer(status, b"")
                    return
                if self.path == "/v1/traces":
                    receiver._take_traces(ExportTraceServiceRequest.FromString(body), "http")
                    self._answer(200, ExportTraceServiceResponse().SerializeToString())
                elif self.path == "/v1/metrics":
                    receiver._take_metrics(ExportMetricsServiceRequest.FromString(body))
                    self._answer(200, ExportMetricsServiceResponse().SerializeToString())
                else:
                    self._answer(404, b"")

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    # -- gRPC --------------------------------------------------------------------------

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
                with receiver._lock:
                    receiver._requests.append(("grpc:traces", dict(context.invocation_metadata())))
                receiver._take_traces(request, "grpc")
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(
                self, request: ExportMetricsServiceRequest, context: Any
            ) -> ExportMetricsServiceResponse:
                receiver._take_metrics(request)
                return ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        self.grpc_endpoint = f"http://127.0.0.1:{port}"
