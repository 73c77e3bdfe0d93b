"""Telemetry: OpenTelemetry spans that carry each model call's tokens and dollars.

Spans follow the OpenTelemetry GenAI semantic conventions. Without a
configured OpenTelemetry SDK the API is a no-op, so tracing costs nothing
until an exporter is set up. Telemetry never raises into a run.
"""

from __future__ import annotations

from tracing.spans import model_call_span, record_result

__all__ = ["model_call_span", "record_result"]
