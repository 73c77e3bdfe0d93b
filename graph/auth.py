"""LangGraph custom authentication for the served graph: API keys to tenants, owned threads.

``langgraph.json`` names :data:`auth` (``"auth": {"path": ...}``), so the
LangGraph server runs :func:`authenticate` on every request (HTTP API, MCP and
A2A alike) and the authorization handlers below on every resource:

- the API key (``x-api-key`` header, as the LangGraph SDK sends it, or
  ``Authorization: Bearer KEY``) names a client of the serving file
  (:mod:`budgetgraph.graph.serving`); its tenant becomes the user's identity
  and its profiles the user's permissions (``profile:NAME``). An unknown or
  missing key is a 401.
- threads, runs, crons and assistants are owned: each is tagged with its
  creator's tenant (metadata ``owner``) and every read, search, update, run
  or delete is filtered to the caller's own. One tenant cannot see, resume
  or fork another's threads, nor hand its own to another: metadata naming
  another ``owner`` is refused (403). The server's own assistants (metadata
  ``created_by: system``, one per graph) are readable by every tenant; a
  tenant's assistants are its own, so they never show among another
  tenant's MCP tools or A2A agents, and no client may claim ``created_by``.
- with clients declared, a client cannot write a thread's state
  (``threads.update_state`` and its bulk form, 403): the plan, the spend rows
  and the run's settings are the graph's, and a state written as the planner
  would run the specialists on tiers no plan chose, past the planner's
  budget check. A run changes through its input, a review's answer or a
  re-plan note. Without clients the caller is the operator and may.
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


SYSTEM_KEY, SYSTEM = "created_by", "system"
"""Metadata the LangGraph server gives the assistants it creates itself (one per graph)."""


def _claims(ctx: Auth.types.AuthContext, value: dict[str, Any], *, assistant: bool = False) -> None:
    """Refuse metadata that names another owner, or (an assistant's) claims the server created it.

    Raises:
        Auth.exceptions.HTTPException: 403, naming the key.
    """
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        return
    if OWNER_KEY in metadata and metadata[OWNER_KEY] != ctx.user.identity:
        raise Auth.exceptions.HTTPException(
            status_code=403,
            detail=f"Forbidden: metadata `{OWNER_KEY}` is set by the server to the caller's tenant.",
        )
    if assistant and SYSTEM_KEY in metadata:
        raise Auth.exceptions.HTTPException(
            status_code=403, detail=f"Forbidden: metadata `{SYSTEM_KEY}` is the server's."
        )


def _tag(ctx: Auth.types.AuthContext, value: dict[str, Any], *, assistant: bool = False) -> dict[str, str]:
    """Tag a new resource with its owner, and keep the caller to its own.

    Raises:
        Auth.exceptions.HTTPException: 403, the metadata names another owner (see :func:`_claims`).
    """
    _claims(ctx, value, assistant=assistant)
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
        value["metadata"] = metadata
    metadata[OWNER_KEY] = ctx.user.identity
    return {OWNER_KEY: ctx.user.identity}


def _owned_update(
    ctx: Auth.types.AuthContext, value: dict[str, Any], *, assistant: bool = False
) -> dict[str, str]:
    """An update of the caller's own resource that keeps it the caller's."""
    _claims(ctx, value, assistant=assistant)
    return {OWNER_KEY: ctx.user.identity}


@auth.on.threads.create
async def _create_thread(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.threads.create_run
async def _create_run(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.threads.update
async def _update_thread(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    # A metadata patch and a run's cancellation carry metadata; a state write (update_state,
    # its bulk form) carries none.
    if "metadata" not in value and "action" not in value and (await _current()).auth_enabled:
        raise Auth.exceptions.HTTPException(
            status_code=403,
            detail="Forbidden: a served client cannot write a thread's state; start a run, answer "
            "its review or send a re-plan note instead.",
        )
    return _owned_update(ctx, value)


@auth.on.threads
async def _own_threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.crons.create
async def _create_cron(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _tag(ctx, value)


@auth.on.crons.update
async def _update_cron(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _owned_update(ctx, value)


@auth.on.crons
async def _own_crons(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.assistants.create
async def _create_assistant(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    _tag(ctx, value, assistant=True)


def _own_or_system(ctx: Auth.types.AuthContext) -> dict[str, Any]:
    return {"$or": [{OWNER_KEY: ctx.user.identity}, {SYSTEM_KEY: SYSTEM}]}


@auth.on.assistants.read
async def _read_assistant(ctx: Auth.types.AuthContext, value: Any) -> dict[str, Any]:
    return _own_or_system(ctx)


@auth.on.assistants.search
async def _search_assistants(ctx: Auth.types.AuthContext, value: Any) -> dict[str, Any]:
    return _own_or_system(ctx)


@auth.on.assistants.update
async def _update_assistant(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> dict[str, str]:
    return _owned_update(ctx, value, assistant=True)


@auth.on.assistants
async def _own_assistants(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    return {OWNER_KEY: ctx.user.identity}


@auth.on.store
async def _own_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = (ctx.user.identity, *namespace)


__all__ = ["OWNER_KEY", "SYSTEM", "SYSTEM_KEY", "auth", "authenticate"]
