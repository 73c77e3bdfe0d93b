"""Alerts that reach people: a cap's alert, sent through apprise to ``budgets.yaml``'s ``alerts.notify``.

The ledger notes each alert threshold of a cap once ever, per scope, limit and
threshold (:meth:`~budgetgraph.budgets.ledger.Ledger.settle` returns the
alerts a settlement noted for the first time, as
:class:`~budgetgraph.budgets.ledger.NotedAlert`). Those, and only those, are
handed to :meth:`AlertNotifier.send`, so each alert is sent once per cap and
level however many processes share the ledger: the ledger's own record of the
alert is the deduplication, and it survives restarts.

Sending never holds up a model call and never raises into it: the messages go
out on one background thread, in order; a URL that fails is logged (by its
scheme and host, never its secrets) and the rest are still tried. A failed
delivery is not retried: the alert stays in the ledger, where ``budgetgraph
report`` and the dashboard show it. The thread is a ``concurrent.futures``
worker, which Python joins at exit, so a CLI run that crossed a threshold
delivers before the process ends (bounded by apprise's own timeouts).

Apprise (https://github.com/caronc/apprise) speaks Slack, Microsoft Teams,
email, Discord, ntfy, generic JSON/form webhooks and many more, each named by a
URL: ``json://host/path`` posts ``{"title", "message", "type", ...}``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from budgetgraph.budgets.config import AlertsSettings
from budgetgraph.budgets.ledger import NotedAlert

logger = logging.getLogger(__name__)

TITLE_PREFIX = "budgetgraph"
"""The start of every notification's title."""


@dataclass(frozen=True)
class AlertMessage:
    """One notification, as sent.

    Attributes:
        title: One line, e.g. ``budgetgraph: `daily.max_cost_usd` at 93% of its cap (alert at 90%)``.
        body: The cap's scope, how much of it is used, and who and what spent it.
        level: ``warning`` below the cap, ``failure`` at or past it (apprise's notify types).
    """

    title: str
    body: str
    level: str


def alert_message(
    alert: NotedAlert, *, tenant: str | None = None, node: str | None = None, thread_id: str | None = None
) -> AlertMessage:
    """The notification for ``alert``.

    Args:
        alert: The alert the ledger noted (its scope, limit, threshold and the share used).
        tenant: Who pays, when known.
        node: The node whose call crossed the threshold, when known.
        thread_id: The run, when known.
    """
    title = f"{TITLE_PREFIX}: `{alert.limit}` at {alert.used:.0%} of its cap (alert at {alert.threshold:.0%})"
    lines = [
        f"`{alert.limit}` on {alert.scope} is {alert.used:.0%} used; its alert is at {alert.threshold:.0%}."
    ]
    owner = tenant or _tenant_of(alert.scope)
    if owner:
        lines.append(f"Tenant: {owner}")
    if node:
        lines.append(f"Node: {node}")
    if thread_id:
        lines.append(f"Run: {thread_id}")
    return AlertMessage(
        title=title, body="\n".join(lines), level="failure" if alert.threshold >= 1 else "warning"
    )


class AlertNotifier:
    """Sends the alerts a ledger noted to ``budgets.yaml``'s ``alerts.notify`` URLs.

    Construct one per ``budgets.yaml`` (the ``limits`` plugin's), then call
    :meth:`send` with what each settlement returned. Nothing is imported,
    started or connected until the first alert is sent.

    Args:
        settings: The ``alerts`` section (``BudgetsConfig.alerts``).
    """

    def __init__(self, settings: AlertsSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()  # a finished future's callback may run under it
        self._executor: ThreadPoolExecutor | None = None
        self._apprise: Any = None
        self._pending: set[Future[None]] = set()

    @property
    def enabled(self) -> bool:
        """True when at least one URL is configured."""
        return bool(self.settings.notify)

    def wanted(self, alert: NotedAlert) -> bool:
        """True when ``alert``'s threshold is one of ``alerts.levels`` (all are, without ``levels``)."""
        levels = self.settings.levels
        return levels is None or any(abs(alert.threshold - level) < 1e-9 for level in levels)

    def send(
        self,
        alerts: Iterable[NotedAlert],
        *,
        tenant: str | None = None,
        node: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        """Send each of ``alerts`` (those a settlement noted first) to every URL, in the background.

        Never raises and never waits on the network. Call it with exactly the
        alerts the ledger noted for the first time, so each is sent once.

        Args:
            alerts: The alerts, e.g. the return value of ``Ledger.settle``.
            tenant: Who pays, for the message.
            node: The node whose call crossed the thresholds, for the message.
            thread_id: The run, for the message.
        """
        if not self.enabled:
            return
        try:
            messages = [
                alert_message(a, tenant=tenant, node=node, thread_id=thread_id)
                for a in alerts
                if self.wanted(a)
            ]
            if not messages:
                return
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="budgetgraph-alerts"
                    )
                for message in messages:
                    future = self._executor.submit(self._deliver, message)
                    self._pending.add(future)
                    future.add_done_callback(self._done)
        except Exception:  # an alert must never break the call that crossed it
            logger.warning("Could not queue a budget alert for sending", exc_info=True)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every alert sent so far was delivered or failed.

        Returns:
            True when none is still pending after ``timeout_s`` (s; ``None``: no limit).
        """
        with self._lock:
            pending = set(self._pending)
        if not pending:
            return True
        _, still = wait(pending, timeout=timeout_s)
        return not still

    def close(self) -> None:
        """Deliver what is queued, then stop the background thread."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _deliver(self, message: AlertMessage) -> None:
        """Send ``message`` to each URL; log each failure. Runs on the background thread."""
        try:
            targets = self._targets()
            for url, target in targets:
                ok = target.notify(body=message.body, title=message.title, notify_type=message.level)
                if not ok:
                    logger.warning("Budget alert not delivered to %s: %s", _shown(url), message.title)
        except Exception as exc:  # logged, never raised; its text may hold a URL's secret, so not shown
            logger.warning("Budget alert not delivered (%s): %s", type(exc).__name__, message.title)

    def _targets(self) -> list[tuple[str, Any]]:
        """One apprise object per URL (so a failure is reported per URL), built once."""
        if self._apprise is None:
            import apprise

            targets = []
            for url in self.settings.notify:
                target = apprise.Apprise()
                if target.add(url):
                    targets.append((url, target))
                else:
                    logger.warning(
                        "Budget alerts cannot be sent to %s: apprise does not accept it", _shown(url)
                    )
            self._apprise = targets
        return list(self._apprise)


def notifier_for(settings: AlertsSettings) -> AlertNotifier | None:
    """An :class:`AlertNotifier` for the ``alerts`` section, or ``None`` when it names no URL."""
    return AlertNotifier(settings) if settings.notify else None


def _shown(url: str) -> str:
    """``url`` as logs may show it: its scheme and host, no user, password, path or token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "an invalid URL"
    return f"{parts.scheme}://{host}" if host else f"{parts.scheme}://"


def _tenant_of(scope: str) -> str | None:
    """The tenant a window's scope names (``tenant:T:day:...``), else ``None``."""
    kind, _, rest = scope.partition(":")
    return unquote(rest.split(":", 1)[0]) if kind == "tenant" else None


__all__ = ["AlertMessage", "AlertNotifier", "alert_message", "notifier_for"]
