"""LangGraph custom authentication for the served graph: API keys to tenants, owned threads.

``langgraph.json`` names :data:`auth` (``"auth": {"path": ...}``), so the
LangGraph server runs :func:`authenticate` on every request (HTTP API, MCP and
A2A alike) and the authorization handlers below on every resource:

- the API key (``x-api-key`` header, as the LangGraph SDK sends it, or
  ``Authorization: Bearer KEY``) names a client of the serving file
  (:mod:`budgetgraph.graph.serving`); its tenant becomes the user's identity
  and its profiles the user's permissions (``profile:NAME``). An unknown or
  missing key is a 401.
- threads, runs and crons are owned: each is tagged with its creator's
  tenant (metadata ``owner``) and every read, search, update, run or delete
  is filtered to the caller's own. One tenant cannot see, resume or fork
  another's threads.
- assistants may be read by every tenant (they hold a profile name and
  thresholds, no data); only their owner may change or delete them.
- store items live under the caller's tenant as the first namespace label.

With no clients declared (no serving file, or one without ``clients``)
every request is the tenant ``default`` with every profile, as a local
``langgraph dev`` expects; the graph logs that once.

Nothing is read at import: the serving file is loaded on the first request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from langgraph_sdk import Auth

from budgetgraph.graph.serving import DEFAULT_TENANT, PROFILE_PERMISSION, Serving, load_serving
from budgetgraph.settings import load_settings

logger = logging.getLogger(__name__)

OWNER_KEY = "owner"
"""Metadata key holding the tenant that owns a thread, run, cron or assistant."""

auth = Auth()
"""The server's authentication and authorization (``langgraph.json``'s ``auth.path``)."""

_serving: Serving | None = None
_lock = threading.Lock()


def _load() -> Serving:
    global _serving
    with _lock:
        if _serving is None:
            loaded = load_serving(load_settings())
            if not loaded.auth_enabled:
                logger.warning(
                    "budgetgraph auth: no clients declared; every request is tenant `%s`", DEFAULT_TENANT
                )
            _serving = loaded
    return _serving


async def _current() -> Serving:
    return _serving if _serving is not None else await asyncio.to_thread(_load)


def _key_of(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"x-api-key")
    if raw is None:
        authorization = headers.get(b"authorization", b"")
        scheme, _, token = authorization.partition(b" ")
        raw = token.strip() if scheme.lower() == b"bearer" else None
    return raw.decode("utf-8", "replace").strip() if raw else None


@auth.authenticate
async def authenticate(headers: dict[bytes, bytes]) -> Auth.types.MinimalUserDict:
    """The caller's identity (tenant) and permissions (profiles) from its API key.

    Raises:
        Auth.exceptions.HTTPException: 401 when clients are declared and the key is missing or unknown.
    """
    serving = await _current()
    if not serving.auth_enabled:
        return {"identity": DEFAULT_TENANT, "permissions": [f"{PROFILE_PERMISSION}*"]}
    client = serving.identify(_key_of(headers))
    if client is None:
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="Unauthorized: send a valid API key (x-api-key or Authorization: Bearer)."
        )
    return {"identity": client.tenant, "permissions": client.permissions}


def _tag(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    """Tag a new resource with its owner, and keep the caller to its own."""
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
        value["metadata"] = metadata
    metadata[OWNER_KEY] = ctx.user.identity
    return {OWNER_KEY: ctx.user.identity}


@auth.on.threads.create
async def _create_thread(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.threads.create_run
async def _create_run(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.threads
async def _own_threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.crons.create
async def _create_cron(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.crons
async def _own_crons(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.assistants.create
async def _create_assistant(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    _tag(ctx, value)


@auth.on.assistants.read
async def _read_assistant(ctx: Auth.types.AuthContext, value: Any) -> None:
    return None


@auth.on.assistants.search
async def _search_assistants(ctx: Auth.types.AuthContext, value: Any) -> None:
    return None


@auth.on.assistants
async def _own_assistants(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.store
async def _own_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = (ctx.user.identity, *namespace)


__all__ = ["OWNER_KEY", "auth", "authenticate"]
