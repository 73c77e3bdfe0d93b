"""The cost dashboard's web app: one page and a JSON API, per tenant.

Routes (all under ``/budgetgraph/``):

- ``GET /budgetgraph/``: the page (HTML, CSS and JavaScript from ``static/``,
  with Chart.js vendored in ``static/vendor/``: it works offline, no CDN);
- ``GET /budgetgraph/runs/{thread_id}``: the page, showing one run's calls and
  its trace (the local span store's waterfall, as ``budgetgraph trace``);
- ``GET /budgetgraph/api/me``: who is looking (``tenant``, or every tenant);
- ``GET /budgetgraph/api/report?since=&tenant=``: exactly ``budgetgraph report
  --json`` for the same filters (:mod:`budgetgraph.graph.costs`);
- ``GET /budgetgraph/api/runs/{thread_id}``: one run's ledger records and trace.

**Who sees what.** Served by the LangGraph server, every API request is
authenticated by the graph's own auth (:func:`budgetgraph.graph.auth.authenticate`:
the API key, as ``x-api-key`` or ``Authorization: Bearer``, names a client
and so a tenant), and a client sees only its own tenant's spend: its
``tenant`` filter may only name itself, and another tenant's run is not found.
When LangGraph's ``http.enable_custom_route_auth`` is on, the user LangGraph
authenticated is taken as it is. The page itself (static files, no data) is
not authenticated, because a browser cannot send an API key when it opens a
URL: the page asks for the key and sends it with each API request.
``budgetgraph dashboard`` on a loopback address is the operator's own view:
no key, every tenant, with a tenant filter.

**The served collector.** Served by the LangGraph server, the app's lifespan
(which langgraph-api runs with its own) also runs the collector of deferred
runs in the background (:mod:`budgetgraph.graph.served_collector`): every
``deferred.poll_interval_s`` seconds it submits and polls batches and resumes,
through the server's own API, each run whose batch answers are all in.
``budgetgraph dashboard`` does not run it (``create_app``'s ``collect`` is off
there): it is no LangGraph server to resume runs through, and ``budgetgraph
collect --wait`` is the collector of local runs.

Importing this module builds the app and reads nothing: the settings, the
YAML files and the ledger are read on the first request (the collector's
files when the server starts).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from budgetgraph.budgets.errors import BudgetgraphError
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.report import unsettled_attempts
from budgetgraph.graph.costs import ReportConfig, cost_report, report_config
from budgetgraph.settings import Settings, load_settings

logger = logging.getLogger(__name__)

PREFIX = "/budgetgraph"
"""Where the dashboard is mounted on the server."""
STATIC = Path(__file__).parent / "static"
"""The page's files."""
FILTERS = frozenset({"since", "tenant"})
"""The query parameters of ``/api/report``: ``budgetgraph report``'s filters."""

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""Headers of the page: its own scripts and styles only, never framed."""
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""Headers of every API answer: spend is never cached."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking at the dashboard.

    Attributes:
        tenant: The tenant whose spend they may see; ``None``: every tenant's
            (the local ``budgetgraph dashboard``).
    """

    tenant: str | None


class _Source:
    """The settings and report files, read once, on first use."""

    def __init__(self, settings: Settings | None) -> None:
        self._settings = settings
        self._config: ReportConfig | None = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        with self._lock:
            if self._settings is None:
                self._settings = load_settings()
            return self._settings

    def config(self) -> ReportConfig:
        settings = self.settings
        with self._lock:
            if self._config is None:
                self._config = report_config(settings)
            return self._config


def create_app(*, settings: Settings | None = None, local: bool = False, collect: bool = False) -> Starlette:
    """Build the dashboard app.

    Args:
        settings: The ledger, files and span store to read (default: the
            environment's, read on the first request).
        local: Show every tenant without asking for a key (``budgetgraph
            dashboard`` on a loopback address); otherwise each request is
            authenticated and sees its own tenant.
        collect: Run the served collector of deferred runs for the app's
            lifespan (:func:`budgetgraph.graph.served_collector.collecting`);
            it only runs inside langgraph-api, and is off when no model tier
            has an endpoint. On for the app ``langgraph.json`` mounts.

    Returns:
        A Starlette app whose routes are all under ``/budgetgraph``.
    """
    source = _Source(settings)

    async def viewer_of(request: Request) -> Viewer | Response:
        if local:
            return Viewer(None)
        user = request.scope.get("user")  # set when LangGraph authenticates custom routes itself
        identity = getattr(user, "identity", None) if getattr(user, "is_authenticated", False) else None
        if identity:
            return Viewer(str(identity))
        from langgraph_sdk import Auth

        from budgetgraph.graph.auth import authenticate

        headers = {name.lower(): value for name, value in request.scope.get("headers", [])}
        try:
            found = await authenticate(headers)
        except Auth.exceptions.HTTPException as exc:
            return _error(exc.status_code, str(exc.detail), {"WWW-Authenticate": "Bearer"})
        except BudgetgraphError:
            logger.exception("The dashboard could not authenticate a request")
            return _error(503, "The server's serving configuration is invalid: see its log.")
        return Viewer(str(found["identity"]))

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    async def me(request: Request) -> Response:
        viewer = await viewer_of(request)
        if isinstance(viewer, Response):
            return viewer
        tenants = [viewer.tenant] if viewer.tenant is not None else await _call(_tenants, source)
        if isinstance(tenants, Response):
            return tenants
        return _json({"tenant": viewer.tenant, "all_tenants": viewer.tenant is None, "tenants": tenants})

    async def report(request: Request) -> Response:
        viewer = await viewer_of(request)
        if isinstance(viewer, Response):
            return viewer
        unknown = sorted(set(request.query_params) - FILTERS)
        if unknown:
            return _error(400, f"Unknown filter `{unknown[0][:40]}`: use since and tenant.")
        since = _since(request.query_params.get("since"))
        if isinstance(since, Response):
            return since
        tenant = request.query_params.get("tenant") or None
        if viewer.tenant is not None:
            if tenant is not None and tenant != viewer.tenant:
                return _error(403, "A client sees only its own tenant's spend.")
            tenant = viewer.tenant
        return await _call(lambda: _json(cost_report(source.config(), since=since, tenant=tenant)))

    async def run(request: Request) -> Response:
        viewer = await viewer_of(request)
        if isinstance(viewer, Response):
            return viewer
        thread_id = request.path_params["thread_id"]
        return await _call(_run, source, viewer, thread_id)

    routes = [
        Route(PREFIX, lambda request: RedirectResponse(f"{PREFIX}/", status_code=308), methods=["GET"]),
        Route(f"{PREFIX}/", page, methods=["GET"]),
        Route(f"{PREFIX}/runs/{{thread_id:path}}", page, methods=["GET"]),
        Route(f"{PREFIX}/api/me", me, methods=["GET"]),
        Route(f"{PREFIX}/api/report", report, methods=["GET"]),
        Route(f"{PREFIX}/api/runs/{{thread_id:path}}", run, methods=["GET"]),
        Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC, check_dir=False), name="budgetgraph-static"),
    ]
    return Starlette(routes=routes, lifespan=_collector_lifespan(settings) if collect else None)


def _collector_lifespan(
    settings: Settings | None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the served collector runs in the background while the server does."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from budgetgraph.graph.served_collector import collecting

        async with collecting(settings):
            yield

    return lifespan


async def _call(function: Any, *args: Any) -> Any:
    """Run a blocking read in a worker thread; a configuration problem is a 503, logged."""
    try:
        return await asyncio.to_thread(function, *args)
    except BudgetgraphError:
        logger.exception("The dashboard could not read the ledger or its files")
        return _error(503, "The dashboard's ledger or configuration is unusable: see the server's log.")


def _tenants(source: _Source) -> list[str]:
    ledger = open_ledger(source.settings.ledger_url)
    try:
        return sorted({record["tenant"] for record in ledger.records()})
    finally:
        ledger.close()


def _run(source: _Source, viewer: Viewer, thread_id: str) -> Response:
    """One run's ledger records and trace, if the viewer's tenant owns it."""
    ledger = open_ledger(source.settings.ledger_url)
    try:
        records = [r for r in ledger.records(tenant=viewer.tenant) if r["thread_id"] == thread_id]
        unsettled = unsettled_attempts(ledger, thread_id=thread_id, tenant=viewer.tenant)
    finally:
        ledger.close()
    if not records and not unsettled:
        return _error(404, "No spend is recorded for this run.")
    trace = None
    path = source.settings.trace_store_path()
    if path is not None and path.is_file():
        from budgetgraph.tracing.store import SpanStore
        from budgetgraph.tracing.view import build_view

        store = SpanStore(path)
        try:
            spans = store.spans(thread_id)
        finally:
            store.close()
        trace = build_view(thread_id, spans).to_json() if spans else None
    micro = sum(r["cost_micro_usd"] for r in records)
    return _json(
        {
            "thread_id": thread_id,
            "tenant": (records or unsettled)[0]["tenant"],
            "calls": records,
            "unsettled": unsettled,
            "total": {
                "calls": len(records),
                "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in records),
                "cost_micro_usd": micro,
                "cost_usd": micro / 1_000_000,
            },
            "trace": trace,
        }
    )


def _since(value: str | None) -> datetime | None | Response:
    """``since`` as ``budgetgraph report --since`` takes it: a date or a time, UTC unless it says."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _error(400, "`since` is a date or a time: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS.")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _json(content: Any) -> JSONResponse:
    return JSONResponse(content, headers=API_HEADERS)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers={**API_HEADERS, **(headers or {})})


app = create_app(collect=True)
"""The dashboard as the LangGraph server mounts it (``langgraph.json``'s ``http.app``), with the
served collector of deferred runs."""


__all__ = ["PREFIX", "Viewer", "app", "create_app"]
