"""The served collector: deferred runs collected and resumed in the LangGraph server's background.

``budgetgraph collect --wait`` is the collector of runs made from the CLI.
Served, the same loop is a task of the custom app (``langgraph.json``'s
``http.app``, :mod:`budgetgraph.graph.dashboard.app`), which langgraph-api
starts and stops with its own lifespan (:func:`collecting`). Every
``deferred.poll_interval_s`` seconds it:

1. runs one :class:`~budgetgraph.budgets.deferred.collector.Collector` pass
   (recover, submit the pools that are due, poll, store answers) in a worker
   thread, so the event loop never blocks; an endpoint error is logged and
   the next pass tries again;
2. for each thread whose batch answers are all in
   (:attr:`~budgetgraph.budgets.deferred.queue.Waiting.ready`), takes the
   queue's resume lease (one collector per thread, renewed while it resumes)
   and resumes the run **through the server's own API**: the run is a normal
   server run, checkpointed by the server's checkpointer, traced and
   authorized like any other, listed among the thread's runs.

**Who resumes.** The in-process SDK client (``get_client()`` with no URL)
reaches the server through an ASGI transport mounted at ``/noauth``, which
langgraph-api's auth middleware does not authenticate. The collector reads
the thread (its ``owner`` metadata, see :mod:`budgetgraph.graph.auth`) as the
server, then creates and joins the resume run **as the owner**: it sets
langgraph-api's auth context to the owner's tenant and the profile
permissions its clients hold in the serving file, as the server's cron
scheduler does for a cron's run. So the graph's authorization handlers keep
the run to the owner's thread, tag it with its owner, and the graph bills the
owner's tenant, as if the owner had resumed it. No API key is needed, and
none is kept: the serving file holds only digests. A thread whose owner no
longer has a client is left waiting, with a warning.

**What it runs on.** The default profile's files, as
:func:`~budgetgraph.graph.builder.make_graph` builds the graph: its
``models.yaml`` gives each tier's endpoint, its ``budgets.yaml`` the
``deferred`` section (``poll_interval_s``, ``window_s``, ``lease_s``...). The
queue holds tiers, not profiles: a request queued by another profile is sent
to the default profile's endpoint of its tier. The batch queue is the
settings' (``BUDGETGRAPH_BATCH_QUEUE``, default ``.budgetgraph/batches.sqlite``
in the server's working directory), the file the served graph queues into.

It is off, with one log line, when no tier of the default profile has an
endpoint, outside langgraph-api (``budgetgraph dashboard``: collect with
``budgetgraph collect --wait``), or when the files are invalid.

Importing this module reads nothing and starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from langgraph_sdk.schema import Command

from budgetgraph.budgets.config import DeferredSettings
from budgetgraph.budgets.deferred.collector import Collector
from budgetgraph.budgets.deferred.queue import BatchQueue, open_queue
from budgetgraph.graph.auth import OWNER_KEY
from budgetgraph.graph.builder import load_config
from budgetgraph.graph.collect import batch_waits, resume_value
from budgetgraph.graph.context import Context
from budgetgraph.graph.serving import DEFAULT_TENANT, PROFILE_PERMISSION, Serving, load_serving
from budgetgraph.lazy import lazy_module
from budgetgraph.settings import Settings, load_settings

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient

logger = logging.getLogger(__name__)

RESUMED_BY = "budgetgraph-collector"
"""The ``resumed_by`` metadata of the runs the served collector starts."""
STOP_GRACE_S = 10.0
"""On shutdown, how long the current pass may take to finish before it is cancelled (s)."""
CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(Context)) - {"tenant", "models", "budgets"}
"""The context keys a resume carries over from the run it continues (a served tenant is the caller)."""


@dataclass(frozen=True)
class Resumed:
    """A run the served collector resumed.

    Attributes:
        thread_id: The thread.
        run_id: The server's run that resumed it.
        status: The run's status once joined (``success``, ``error``, ``interrupted``...).
    """

    thread_id: str
    run_id: str
    status: str


class ServedCollector:
    """Collects batch answers and resumes waiting runs through the in-process LangGraph API.

    Args:
        queue: The batch queue the served graph queues into.
        collector: The collector of that queue (each tier's endpoint).
        serving: The serving file: the clients whose tenant a resumed run acts as.
        options: ``budgets.yaml``'s ``deferred`` section (``poll_interval_s``, ``lease_s``).
        client: The LangGraph client (default: the in-process one, made on first use).
    """

    def __init__(
        self,
        queue: BatchQueue,
        collector: Collector,
        serving: Serving,
        options: DeferredSettings,
        *,
        client: LangGraphClient | None = None,
    ) -> None:
        self.queue = queue
        self.collector = collector
        self.serving = serving
        self.options = options
        self.owner = f"served-{uuid.uuid4().hex}"
        self._client = client
        self._stopping = asyncio.Event()
        self._skipped: set[str] = set()  # threads it warned about once: held elsewhere, or no owner

    async def run(self) -> None:
        """Collect and resume every ``poll_interval_s`` seconds until :meth:`stop`."""
        logger.info(
            "budgetgraph: the served collector polls every %s s (batch queue %s)",
            self.options.poll_interval_s,
            self.queue.path,
        )
        while not self._stopping.is_set():
            await self.collect_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.options.poll_interval_s)

    def stop(self) -> None:
        """Ask :meth:`run` to end after the thread it is resuming."""
        self._stopping.set()

    async def collect_once(self) -> list[Resumed]:
        """One pass: submit and poll batches, then resume each thread whose answers are all in.

        Never raises (but for cancellation): an endpoint or server error is logged,
        and the next pass tries again.

        Returns:
            The runs resumed and joined in this pass.
        """
        try:
            await asyncio.to_thread(self.collector.collect)
        except openai.APIError as exc:
            logger.warning("budgetgraph: the batch endpoint failed (%s); trying again next pass", exc)
        except Exception:
            logger.exception("budgetgraph: the collector pass failed; trying again next pass")
        try:
            waiting = await asyncio.to_thread(self.queue.waiting)
        except Exception:
            logger.exception("budgetgraph: the batch queue could not be read; trying again next pass")
            return []
        resumed = []
        for thread in waiting:
            if self._stopping.is_set():
                break
            if not thread.ready or thread.thread_id in self._skipped:
                continue
            try:
                run = await self._resume_leased(thread.thread_id, thread.batch_ids)
            except Exception:
                logger.exception(
                    "budgetgraph: resuming thread `%s` failed; trying again next pass", thread.thread_id
                )
                continue
            if run is not None:
                resumed.append(run)
        return resumed

    async def aclose(self) -> None:
        """Close the LangGraph client and the batch queue."""
        if self._client is not None:
            await self._client.aclose()
        await asyncio.to_thread(self.queue.close)

    async def _resume_leased(self, thread_id: str, batch_ids: tuple[str, ...]) -> Resumed | None:
        """Resume ``thread_id`` while holding its lease, renewed every third of ``lease_s``."""
        lease_s = self.options.lease_s
        if not await asyncio.to_thread(self.queue.claim_resume, thread_id, self.owner, lease_s=lease_s):
            return None  # another collector resumes it

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                if not await asyncio.to_thread(
                    self.queue.renew_resume, thread_id, self.owner, lease_s=lease_s
                ):
                    logger.warning("budgetgraph: the resume lease of thread `%s` was taken over", thread_id)

        keeper = asyncio.create_task(renew(), name=f"budgetgraph-lease-{thread_id}")
        try:
            return await self._resume(thread_id, batch_ids)
        finally:
            keeper.cancel()
            await asyncio.shield(asyncio.to_thread(self.queue.release_resume, thread_id, self.owner))

    async def _resume(self, thread_id: str, batch_ids: tuple[str, ...]) -> Resumed | None:
        """Resume the run of ``thread_id`` as its owner and wait for it; ``None``: not now, or not here."""
        client = await self._sdk()
        try:
            thread = await client.threads.get(thread_id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            self._skip(
                thread_id,
                "waits for batch answers but this server holds no such thread: "
                "collect it where it ran (`budgetgraph collect`)",
            )
            return None
        if thread["status"] == "busy":
            return None  # its run is still going (it queued its call just now): next pass
        user = self._user_of((thread.get("metadata") or {}).get(OWNER_KEY))
        if user is None:
            self._skip(thread_id, "belongs to a tenant that has no client in the serving file any more")
            return None
        state = await client.threads.get_state(thread_id)
        interrupts = list(state.get("interrupts") or [])
        if len(batch_waits(i.get("value") for i in interrupts)) < len(interrupts):
            return None  # it waits for a human too: whoever answers resumes it
        if not interrupts and not state.get("next"):
            return None  # nothing left to run
        runs = await client.runs.list(thread_id, limit=1)
        last: Mapping[str, Any] = runs[0] if runs else {}
        assistant_id = last.get("assistant_id") or (thread.get("metadata") or {}).get("assistant_id")
        if not assistant_id:
            self._skip(thread_id, "has no assistant to resume its run with")
            return None
        command = resume_of(interrupts)
        context = carried_context(last)

        async def as_owner() -> Resumed | None:
            _act_as(user)  # in this task's own copy of the context only
            try:
                run = await client.runs.create(
                    thread_id,
                    str(assistant_id),
                    command=command,
                    context=context or None,
                    metadata={"resumed_by": RESUMED_BY, "batch_ids": list(batch_ids)},
                    multitask_strategy="reject",
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 409:
                    return None  # a client started a run on it meanwhile: next pass
                raise
            await client.runs.join(thread_id, run["run_id"])
            done = await client.runs.get(thread_id, run["run_id"])
            # Checkpointed now: the answers it took are used; those its new interrupts wait for are not.
            after = await client.threads.get_state(thread_id)
            waits = batch_waits(i.get("value") for i in after.get("interrupts") or [])
            still = [str(v["custom_id"]) for v in waits if v.get("custom_id")]
            if done["status"] == "error":
                still = []  # a failed run is its owner's to resume: the collector is done with it
            await asyncio.to_thread(self.queue.resumed, thread_id, still)
            return Resumed(thread_id, str(run["run_id"]), str(done["status"]))

        resumed = await asyncio.create_task(as_owner(), name=f"budgetgraph-resume-{thread_id}")
        if resumed is not None:
            level = logging.WARNING if resumed.status == "error" else logging.INFO
            logger.log(
                level,
                "budgetgraph: resumed thread `%s`: run %s, %s",
                thread_id,
                resumed.run_id,
                resumed.status,
            )
        return resumed

    async def _sdk(self) -> LangGraphClient:
        if self._client is None:
            from langgraph_sdk import get_client

            # No URL: the in-process server, through its ASGI app (its client setup reads files).
            self._client = await asyncio.to_thread(get_client, api_key=None)
        return self._client

    def _user_of(self, owner: Any) -> dict[str, Any] | None:
        """The user a resume of ``owner``'s thread acts as, shaped as ``authenticate`` returns it.

        Without clients, every caller is the tenant ``default`` with every profile.
        Otherwise the owner's tenant with the profiles of all its clients;
        ``None`` when no client has that tenant.
        """
        if not self.serving.auth_enabled:
            return {"identity": DEFAULT_TENANT, "permissions": [f"{PROFILE_PERMISSION}*"]}
        clients = [c for c in self.serving.clients if c.tenant == owner]
        if not clients:
            return None
        permissions = sorted({p for client in clients for p in client.permissions})
        if f"{PROFILE_PERMISSION}*" in permissions:
            permissions = [f"{PROFILE_PERMISSION}*"]
        return {"identity": str(owner), "permissions": permissions}

    def _skip(self, thread_id: str, why: str) -> None:
        if thread_id not in self._skipped:
            logger.warning("budgetgraph: thread `%s` %s", thread_id, why)
        self._skipped.add(thread_id)


def resume_of(interrupts: Sequence[Mapping[str, Any]]) -> Command | None:
    """The ``command`` that continues a run waiting for batch answers, as the server's API takes it.

    :func:`budgetgraph.graph.collect.resume_command` for a thread state of the
    LangGraph API: each waiting node gets :data:`~budgetgraph.graph.collect.COLLECTED`,
    by interrupt id when there are several (parallel nodes); ``None`` (no
    interrupt) continues from the last checkpoint.

    Args:
        interrupts: The thread state's ``interrupts`` (``{"id", "value"}`` each).
    """
    if not interrupts:
        return None
    return {"resume": resume_value([str(i["id"]) for i in interrupts])}


def carried_context(run: Mapping[str, Any]) -> dict[str, Any]:
    """The context of the run a resume continues: its profile, thresholds and ``deferred`` choice.

    Only the keys of :class:`~budgetgraph.graph.context.Context` a client may
    set are kept (a served run's tenant is its caller's, and files are refused).
    """
    kwargs = run.get("kwargs") or {}
    context = kwargs.get("context") if isinstance(kwargs, Mapping) else None
    if not isinstance(context, Mapping):
        return {}
    return {key: value for key, value in context.items() if key in CONTEXT_FIELDS and value is not None}


def _act_as(user: Mapping[str, Any]) -> None:
    """Make the current task's in-process API calls those of ``user``, as langgraph-api's auth would.

    langgraph-api keeps the authenticated user in a context variable its
    handlers read; ``/noauth`` requests leave it as the caller set it. Call it
    in a task of its own: it changes that task's copy of the context only.
    """
    from langgraph_api.auth.custom import normalize_user
    from langgraph_api.utils import set_auth_ctx
    from starlette.authentication import AuthCredentials

    set_auth_ctx(normalize_user(dict(user)), AuthCredentials(list(user["permissions"])))


def load_served_collector(settings: Settings | None = None) -> ServedCollector | None:
    """The served collector of the default profile's files, or ``None`` when no tier has an endpoint.

    Blocking (it reads the files): call it in a worker thread.

    Args:
        settings: The server's settings (default: read from the environment now).

    Raises:
        ConfigError: A setting, the serving file or a profile's file is invalid.
    """
    settings = settings if settings is not None else load_settings()
    serving = load_serving(settings)
    profile = serving.profiles[serving.default_profile]
    models, budgets = load_config(settings, models=profile.models, budgets=profile.budgets)
    if not models.any_configured:
        logger.info("budgetgraph: no model tier has an endpoint, so the served collector is off")
        return None
    queue = open_queue(settings.batch_queue)
    return ServedCollector(queue, Collector(queue, models, budgets.deferred), serving, budgets.deferred)


@contextlib.asynccontextmanager
async def collecting(settings: Settings | None = None) -> AsyncIterator[ServedCollector | None]:
    """Run the served collector in the background for the block: a custom app's lifespan.

    On exit it asks the collector to stop, gives the current pass
    :data:`STOP_GRACE_S` seconds, cancels it after that, and closes the queue.

    Args:
        settings: The server's settings (default: read from the environment).

    Yields:
        The collector, or ``None`` when it is off (see the module docstring).
    """
    if "langgraph_api.server" not in sys.modules:
        logger.info("budgetgraph: not served by langgraph-api, so the served collector is off")
        yield None
        return
    try:
        served = await asyncio.to_thread(load_served_collector, settings)
    except Exception:
        logger.exception("budgetgraph: the served collector is off: its files could not be loaded")
        served = None
    if served is None:
        yield None
        return
    task = asyncio.create_task(served.run(), name="budgetgraph-collector")
    try:
        yield served
    finally:
        served.stop()
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_S)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            logger.error("budgetgraph: the served collector ended with an error", exc_info=task.exception())
        await served.aclose()
        logger.info("budgetgraph: the served collector stopped")


__all__ = [
    "RESUMED_BY",
    "Resumed",
    "ServedCollector",
    "carried_context",
    "collecting",
    "load_served_collector",
    "resume_of",
]
