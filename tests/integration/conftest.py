"""Fixtures of the integration tests that look at exported telemetry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from budgetgraph.tracing import shutdown_telemetry
from tests.fakes.otlp_receiver import OTLPReceiver


@pytest.fixture
def fresh_telemetry() -> Iterator[None]:
    """Telemetry set up anew by the test (the CLI's runs), and shut down after it."""
    shutdown_telemetry()
    yield
    shutdown_telemetry()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch, fresh_telemetry: None) -> Iterator[OTLPReceiver]:
    """A local OTLP receiver that the runs of the test export to."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
        yield receiver
