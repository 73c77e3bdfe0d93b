"""The ``budgetgraph`` command line.

Exit codes: 0 done, 3 paused for review, 2 bad input or configuration,
1 any other failure.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot
from pydantic import ValidationError

from budgetgraph.budgets import BudgetgraphError, ConfigError
from budgetgraph.budgets.deferred.collector import Collector
from budgetgraph.budgets.deferred.queue import open_queue
from budgetgraph.budgets.ledger import open_ledger
from budgetgraph.budgets.ledger.base import default_ledger_path
from budgetgraph.budgets.plugins.limits import MAX_RAISE
from budgetgraph.budgets.report import unsettled_attempts
from budgetgraph.graph.builder import EmptyTaskError, build_graph, load_config
from budgetgraph.graph.checkpoint import CheckpointStoreError, NoCheckpointsError, open_checkpointer
from budgetgraph.graph.cli_cache import cache_app
from budgetgraph.graph.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_PAUSED,
    EXIT_WAITING,
    BudgetsOpt,
    CacheOpt,
    CheckpointerOpt,
    JsonOpt,
    LedgerOpt,
    ModelsOpt,
    TenantOpt,
    ThresholdOpt,
    config_message,
    err,
    fail,
    print_error,
    settings_for,
    stdout_console,
)
from budgetgraph.graph.cli_plan import plan_command
from budgetgraph.graph.cli_report import dashboard_command, report_command
from budgetgraph.graph.cli_trace import trace_command
from budgetgraph.graph.collect import resume_command, resume_context, waits_only_for_batches
from budgetgraph.graph.console import render_history, render_report
from budgetgraph.graph.context import Context
from budgetgraph.graph.progress import STREAM_MODES, show_progress
from budgetgraph.graph.report import run_report
from budgetgraph.graph.serde import RefusedCheckpointError
from budgetgraph.graph.threads import checkpoint_history, copy_checkpoint, edit_summary
from budgetgraph.lazy import lazy_module
from budgetgraph.settings import Settings
from budgetgraph.tracing import RunSpan, configure_telemetry, run_span, shutdown_telemetry

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

_EXIT_BY_STATUS = {
    "done": EXIT_DONE,
    "paused": EXIT_PAUSED,
    "waiting": EXIT_WAITING,
    "failed": EXIT_FAILED,
}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"budgetgraph {_distribution_version()}")
        raise typer.Exit(EXIT_DONE)


def _distribution_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("budgetgraph")
    except PackageNotFoundError:
        return "0+unknown (not installed)"


app = typer.Typer(
    name="budgetgraph",
    help="Run a cost-aware multi-agent review of a business decision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run a cost-aware multi-agent review of a business decision."""


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Show no progress on stderr while the run works.")
]


class _BadInput(Exception):
    """A problem with what the user asked for (exit code 2)."""


class _NoSuchRun(Exception):
    """A thread waits in the batch queue but has no run in the checkpointer (``collect`` skips it)."""


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="The decision to review.")],
    constraint: Annotated[
        list[str] | None, typer.Option("--constraint", "-c", help="A constraint; repeatable.")
    ] = None,
    thread: Annotated[str | None, typer.Option("--thread", help="Thread id (default: a new UUID).")] = None,
    tenant: TenantOpt = None,
    review_threshold: ThresholdOpt = 4,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    deferred: Annotated[
        bool,
        typer.Option(
            "--deferred",
            help="Send the model calls through the provider's batch API at batch prices (about "
            "half); the run waits (exit code 4) until `budgetgraph collect` resumes it.",
        ),
    ] = False,
) -> None:
    """Plan, analyse (CTO and COO in parallel), reconcile and review a decision."""
    thread_id = thread or str(uuid.uuid4())
    if not task.strip():
        fail("The task is empty: give the decision to review.", as_json)

    def start(graph: CompiledStateGraph, config: RunnableConfig) -> Any:
        if graph.get_state(config).values:
            raise _BadInput(f"Thread `{thread_id}` already has a run; use `budgetgraph resume {thread_id}`.")
        started = {"task": task, "constraints": list(constraint or [])}
        return {**started, "deferred": True} if deferred else started

    settings = _run_settings(as_json, models, budgets, checkpointer, ledger, cache, tenant)
    context = _context(settings, review_threshold, as_json)
    _drive(start, thread_id, context, settings, as_json, new_run=True, quiet=quiet)


@app.command()
def resume(
    thread: Annotated[str, typer.Argument(help="The thread of the run to continue.")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the paused review.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the paused review.")] = False,
    replan: Annotated[
        str | None,
        typer.Option("--replan", metavar="NOTE", help="Send the run back to the planner with this note."),
    ] = None,
    note: Annotated[
        str | None, typer.Option("--note", help="A note kept with --approve or --reject.")
    ] = None,
    raise_cap: Annotated[
        float | None,
        typer.Option(
            "--raise-cap",
            help="With --approve on a budget pause: raise the cap by this much (USD or tokens, "
            "the cap's unit); default: what the call needs.",
        ),
    ] = None,
    tenant: TenantOpt = None,
    review_threshold: ThresholdOpt = 4,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Continue a run that paused for review or for a budget, or that failed."""
    chosen = [
        name
        for name, on in (("--approve", approve), ("--reject", reject), ("--replan", replan is not None))
        if on
    ]
    if len(chosen) > 1:
        fail(f"Give one of --approve, --reject or --replan, not {' and '.join(chosen)}.", as_json)
    if raise_cap is not None:
        if not approve:
            fail("--raise-cap goes with --approve.", as_json)
        if not math.isfinite(raise_cap) or not 0 < raise_cap <= float(MAX_RAISE["micro_usd"]):
            fail(
                f"--raise-cap must be a positive finite number (USD or tokens), at most "
                f"{MAX_RAISE['micro_usd']} USD; got {raise_cap}.",
                as_json,
            )

    def start(graph: CompiledStateGraph, config: RunnableConfig) -> Any:
        snapshot = graph.get_state(config)
        if not snapshot.values:
            raise _BadInput(f"No run has thread `{thread}`.")
        if waits_only_for_batches(snapshot):
            if chosen:
                raise _BadInput(
                    f"The run waits for batch answers, not for review, so {chosen[0]} does not apply."
                )
            return resume_command(snapshot)  # answers not in yet: it waits again (exit code 4)
        if snapshot.interrupts:
            if not chosen:
                raise _BadInput("The run is paused: give --approve, --reject or --replan NOTE.")
            action = "approve" if approve else "reject" if reject else "replan"
            kinds = {i.value.get("kind") for i in snapshot.interrupts if isinstance(i.value, dict)}
            if action == "replan" and "budget" in kinds:
                raise _BadInput("The run is paused for a budget approval: give --approve or --reject.")
            answer: dict[str, Any] = {"action": action, "note": replan if action == "replan" else note}
            if raise_cap is not None:
                answer["raise_by"] = raise_cap
            if len(snapshot.interrupts) == 1:
                return Command(resume=answer)
            return Command(resume={i.id: answer for i in snapshot.interrupts})
        if chosen:
            raise _BadInput(f"The run is not paused for review, so {chosen[0]} does not apply.")
        return None  # continue from the last checkpoint: re-runs only what had not finished

    settings = _run_settings(as_json, models, budgets, checkpointer, ledger, cache, tenant)
    context = _context(settings, review_threshold, as_json)
    _drive(start, thread, context, settings, as_json, quiet=quiet)


def _drive(
    start: Any,
    thread_id: str,
    context: Context,
    settings: Settings,
    as_json: bool,
    *,
    new_run: bool = False,
    settings_from: str | None = None,
    extend: Any = None,
    quiet: bool = False,
) -> None:
    """Run ``start``'s input (see :func:`_execute`), print the report, and exit with the run's status."""
    try:
        report = _execute(
            start,
            thread_id,
            context,
            settings,
            as_json,
            new_run=new_run,
            settings_from=settings_from,
            extend=extend,
            quiet=quiet,
        )
        _emit(report, as_json)
    finally:
        shutdown_telemetry()
    raise typer.Exit(_EXIT_BY_STATUS[report["status"]])


def _execute(
    start: Any,
    thread_id: str,
    context: Context | Callable[[StateSnapshot], Context],
    settings: Settings,
    as_json: bool,
    *,
    new_run: bool = False,
    settings_from: str | None = None,
    extend: Any = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Check the configuration, open the stores, build the graph, run ``start``'s input; return the report.

    The YAML files are read and checked before any store is opened, so a
    refused command writes nothing; a command on an existing run
    (``new_run=False``) does not create a missing SQLite checkpoint file.
    A run goes on with the ``models.yaml`` and ``budgets.yaml`` it started with
    (its thread's, or ``settings_from``'s for a fork), unless the command gives
    others (option or variable); the nodes that then run record the override in
    the run's ``run_settings``.
    ``start(graph, config)`` checks the request and returns the input (``None``
    continues from the last checkpoint); ``context`` may be a function of the
    run's snapshot (a collected run resumes as it was started); ``extend(report, state)`` may add to
    the report. The run is traced (a run span over the graph's node spans,
    see ``tracing``); telemetry is set up from the ``OTEL_*`` variables once
    the request is accepted, and shut down after the report is out, within
    the export timeout. While the graph works, each node's start and end go
    to stderr (:mod:`budgetgraph.graph.progress`), unless ``quiet``.
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    with ExitStack() as stack:
        try:
            if new_run:  # every file is checked before a store is opened or created
                models, budgets = load_config(settings)
                saver = stack.enter_context(open_checkpointer(settings.checkpointer))
            else:  # an existing run's file is opened, never created, to read its settings
                saver = stack.enter_context(open_checkpointer(settings.checkpointer, create=False))
                settings = _kept_settings(settings, saver, settings_from or thread_id)
                models, budgets = load_config(settings)
            ledger = open_ledger(settings.ledger_url)
            stack.callback(ledger.close)
            graph = build_graph(
                checkpointer=saver, models=models, budgets=budgets, ledger=ledger, settings=settings
            )
            graph_input = start(graph, config)
        except ConfigError as exc:
            fail(config_message(exc), as_json)
        except NoCheckpointsError as exc:
            fail(f"No run has thread `{thread_id}`. {exc}", as_json)
        except _BadInput as exc:
            fail(str(exc), as_json)
        except (RefusedCheckpointError, CheckpointStoreError) as exc:
            fail(str(exc), as_json, EXIT_FAILED)
        configure_telemetry()
        error: BaseException | None = None
        snapshot = graph.get_state(config)
        if not isinstance(context, Context):
            context = context(snapshot)
        run: RunSpan | None = None
        if graph_input is not None or snapshot.next:
            run = stack.enter_context(run_span(thread_id, workflow=graph.name))
            try:
                # durability="sync": every step is on disk before the next starts, so a
                # crash at any point resumes from the last finished step.
                with show_progress(quiet=quiet) as progress:
                    for part in graph.stream(
                        graph_input,
                        config,
                        context=context,
                        durability="sync",
                        stream_mode=STREAM_MODES,
                        version="v2",
                    ):
                        progress(part)
            except EmptyTaskError as exc:
                run.finish("failed", exc)
                fail(str(exc), as_json)
            except Exception as exc:  # reported as a failed run, resumable
                logging.getLogger(__name__).debug("run failed", exc_info=True)
                error = exc
        final = graph.get_state(config)
        report = run_report(thread_id, final, error=error)
        if run is not None:
            run.finish(report["status"], error)
        if extend is not None:
            extend(report, final.values)
    return report


@app.command()
def edit(
    thread: Annotated[str, typer.Argument(help="The thread of a finished run.")],
    add_constraint: Annotated[
        list[str] | None, typer.Option("--add-constraint", help="A constraint to add; repeatable.")
    ] = None,
    remove_constraint: Annotated[
        list[str] | None,
        typer.Option("--remove-constraint", metavar="ID", help="A constraint id to remove; repeatable."),
    ] = None,
    tenant: TenantOpt = None,
    review_threshold: ThresholdOpt = 4,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Change a finished run's constraints and re-run only the nodes they affect."""
    before: dict[str, Any] = {}
    if not add_constraint and not remove_constraint:
        fail("Give --add-constraint TEXT or --remove-constraint ID.", as_json)

    def start(graph: CompiledStateGraph, config: RunnableConfig) -> Any:
        snapshot = graph.get_state(config)
        if not snapshot.values:
            raise _BadInput(f"No run has thread `{thread}`.")
        if snapshot.next:
            raise _BadInput(f"The run is not finished; `budgetgraph resume {thread}` first.")
        known = {c["id"] for c in snapshot.values.get("constraints", [])}
        unknown = [cid for cid in remove_constraint or [] if cid not in known]
        if unknown:
            raise _BadInput(
                f"No constraint {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}."
            )
        before["runs"] = list(snapshot.values.get("node_runs", []))
        removals = [{"id": cid, "remove": True} for cid in remove_constraint or []]
        return {"constraints": [*removals, *(add_constraint or [])]}

    def extend(report: dict[str, Any], values: dict[str, Any]) -> None:
        report.update(
            edit_summary(before["runs"], values.get("node_runs", []), pending=report.get("next") or [])
        )

    settings = _run_settings(as_json, models, budgets, checkpointer, ledger, cache, tenant)
    context = _context(settings, review_threshold, as_json)
    _drive(start, thread, context, settings, as_json, extend=extend, quiet=quiet)


@app.command()
def history(
    thread: Annotated[str, typer.Argument(help="The run's thread.")],
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a run's checkpoints, newest first, with the node that wrote each and the spend so far.

    Attempts of the run that may have been billed and were never settled (a
    timeout, a crash) follow, each at its reservation: an upper bound.
    """
    settings = settings_for(
        as_json, models=models, budgets=budgets, checkpointer=checkpointer, ledger_url=ledger
    )
    with ExitStack() as stack:
        try:
            models_config, budgets_config = load_config(settings)
            saver = stack.enter_context(open_checkpointer(settings.checkpointer, create=False))
            graph = build_graph(
                checkpointer=saver,
                models=models_config,
                budgets=budgets_config,
                ledger="memory:",
                settings=settings,
            )
        except ConfigError as exc:
            fail(config_message(exc), as_json)
        except NoCheckpointsError as exc:
            fail(f"No run has thread `{thread}`. {exc}", as_json)
        except CheckpointStoreError as exc:
            fail(str(exc), as_json, EXIT_FAILED)
        try:
            rows = checkpoint_history(graph, thread)
        except RefusedCheckpointError as exc:
            fail(str(exc), as_json, EXIT_FAILED)
    if not rows:
        fail(f"No run has thread `{thread}`.", as_json)
    unsettled = _unsettled(settings, thread)
    deferred = _deferred_of(settings, thread)
    if as_json:
        document = {"thread_id": thread, "checkpoints": rows, "unsettled": unsettled, "deferred": deferred}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render_history(stdout_console(), thread, rows, unsettled)
        if deferred["waiting"]:
            batches = ", ".join(deferred["batch_ids"]) or "none yet (queued)"
            stdout_console().print(
                f"Waiting for batch answers: {deferred['pending']} pending; batches {batches}"
            )


def _deferred_of(settings: Settings, thread: str) -> dict[str, Any]:
    """Whether the run waits for batch answers, and every batch that held one of its calls."""
    queue = open_queue(settings.batch_queue)
    if not Path(queue.path).is_file():  # never created: no run of this directory was deferred
        return {"waiting": False, "pending": 0, "batch_ids": []}
    try:
        waiting = queue.waiting(thread)
        return {
            "waiting": bool(waiting),
            "pending": sum(w.pending for w in waiting),
            "batch_ids": queue.batch_ids(thread),
        }
    finally:
        queue.close()


def _unsettled(settings: Settings, thread: str) -> list[dict[str, Any]]:
    """The run's unsettled attempts; none when the SQLite ledger does not exist (it is not created)."""
    url = settings.ledger_url
    if url is None or url.startswith("sqlite:///"):
        path = default_ledger_path() if url is None else Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return []
    book = open_ledger(url)
    try:
        return unsettled_attempts(book, thread_id=thread)
    finally:
        book.close()


@app.command()
def fork(
    thread: Annotated[str, typer.Argument(help="The thread to fork.")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="The checkpoint id to continue from.")],
    new_thread: Annotated[
        str | None, typer.Option("--thread", help="The new thread's id (default: a new UUID).")
    ] = None,
    tenant: TenantOpt = None,
    review_threshold: ThresholdOpt = 4,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Continue a run from one of its earlier checkpoints, in a new thread."""
    target = new_thread or str(uuid.uuid4())

    def start(graph: CompiledStateGraph, config: RunnableConfig) -> Any:
        if graph.get_state(config).values:
            raise _BadInput(f"Thread `{target}` already has a run.")
        try:
            copy_checkpoint(graph, thread, checkpoint, target)
        except LookupError as exc:
            raise _BadInput(str(exc)) from exc
        return None

    settings = _run_settings(as_json, models, budgets, checkpointer, ledger, cache, tenant)
    context = _context(settings, review_threshold, as_json)
    _drive(start, target, context, settings, as_json, settings_from=thread, quiet=quiet)


def _run_settings(
    as_json: bool,
    models: Path | None,
    budgets: Path | None,
    checkpointer: str | None,
    ledger: str | None,
    cache: bool | None,
    tenant: str | None,
) -> Settings:
    """The settings of a command that runs the graph (run, resume, edit, fork)."""
    return settings_for(
        as_json,
        models=models,
        budgets=budgets,
        checkpointer=checkpointer,
        ledger_url=ledger,
        cache=cache,
        tenant=tenant,
    )


def _kept_settings(settings: Settings, saver: BaseCheckpointSaver, thread_id: str) -> Settings:
    """``settings`` with the files the run of ``thread_id`` started with, where none is given."""
    found = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    recorded = (found.checkpoint["channel_values"].get("run_settings") or {}) if found else {}
    kept = {
        key: Path(recorded[key])
        for key in ("models", "budgets")
        if getattr(settings, key) is None and recorded.get(key)
    }
    return settings.model_copy(update=kept) if kept else settings


def _context(settings: Settings, review_threshold: int, as_json: bool) -> Context:
    try:
        return Context(tenant=settings.tenant, review_threshold=review_threshold)
    except ValidationError as exc:
        problems = "; ".join(f"`{'.'.join(map(str, e['loc']))}`: {e['msg']}" for e in exc.errors())
        fail(f"Invalid run settings: {problems}", as_json)


@app.command()
def collect(
    wait: Annotated[
        bool, typer.Option("--wait", help="Keep collecting until no run waits for batch answers.")
    ] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Submit every queued request now, without waiting for others (`deferred.window_s`)."
        ),
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            min=0.01,
            help="Seconds between polls with --wait (default: `deferred.poll_interval_s`).",
        ),
    ] = None,
    models: ModelsOpt = None,
    budgets: BudgetsOpt = None,
    checkpointer: CheckpointerOpt = None,
    ledger: LedgerOpt = None,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Submit queued batch requests, poll pending batches, and resume each run whose answers are all in.

    Runs started with ``--deferred`` (or nodes in ``budgets.yaml``'s ``deferred.nodes``) wait
    for batch answers. Prints each resumed run's report (``--json``: ``{"runs": [...]}``, each
    the document ``run --json`` prints). Exit code 0 when no run waits any more, 4 when some
    still do. Several collectors may run at once: each run is resumed by one of them.
    """
    settings = _run_settings(as_json, models, budgets, checkpointer, ledger, cache, None)
    try:
        models_config, budgets_config = load_config(settings)
    except ConfigError as exc:
        fail(config_message(exc), as_json)
    options = budgets_config.deferred
    queue = open_queue(settings.batch_queue)
    collector = Collector(queue, models_config, options)
    owner = uuid.uuid4().hex
    reports: list[dict[str, Any]] = []
    elsewhere: set[str] = set()  # waiting threads whose runs this checkpointer does not hold
    try:
        while True:
            try:
                collector.collect(force=now)
            except openai.APIError as exc:
                if not wait:
                    fail(f"The batch endpoint failed: {exc}", as_json, EXIT_FAILED)
                logging.getLogger(__name__).warning("The batch endpoint failed (%s); trying again", exc)
            for waiting in queue.waiting():
                if not waiting.ready:
                    continue
                with queue.resuming(waiting.thread_id, owner, lease_s=options.lease_s) as mine:
                    if not mine:
                        continue  # another collector resumes it
                    if not any(w.ready for w in queue.waiting(waiting.thread_id)):
                        continue  # another collector resumed it since we looked
                    try:
                        report = _resume_waiting(waiting.thread_id, settings, as_json, quiet)
                        # Checkpointed: the answers it took are used, those it waits for are not. A run
                        # that failed is the user's to resume: the collector is done with it.
                        failed = report["status"] == "failed"
                        still = [] if failed else [b["custom_id"] for b in report["batches"]]
                        queue.resumed(waiting.thread_id, still)
                        reports.append(report)
                    except _NoSuchRun:
                        if waiting.thread_id not in elsewhere:
                            logging.getLogger(__name__).warning(
                                "Thread `%s` waits for batch answers but has no run in this checkpointer;"
                                " collect with the checkpointer it ran with",
                                waiting.thread_id,
                            )
                        elsewhere.add(waiting.thread_id)
            still = [w for w in queue.waiting() if w.thread_id not in elsewhere]
            if not wait or not still:
                break
            time.sleep(options.poll_interval_s if interval is None else interval)
    finally:
        shutdown_telemetry()
        queue.close()
    if as_json:
        sys.stdout.write(json.dumps({"runs": reports}, indent=2, default=str) + "\n")
    else:
        for report in reports:
            render_report(stdout_console(), report)
        runs = len({r["thread_id"] for r in reports})
        err.print(f"{len(reports)} resume(s) of {runs} run(s); {len(still)} run(s) still wait for answers.")
    raise typer.Exit(EXIT_WAITING if still else EXIT_DONE)


def _resume_waiting(thread: str, settings: Settings, as_json: bool, quiet: bool) -> dict[str, Any]:
    """Resume the run of ``thread``, whose batch answers are all in; return its report."""

    def start(graph: CompiledStateGraph, config: RunnableConfig) -> Any:
        snapshot = graph.get_state(config)
        if not snapshot.values:
            raise _NoSuchRun(thread)
        return resume_command(snapshot)

    def context_of(snapshot: StateSnapshot) -> Context:
        # As the run was started: its tenant, review threshold and profile (not the collector's).
        started = resume_context(snapshot)
        return Context(
            tenant=started.get("tenant", settings.tenant),
            review_threshold=started.get("review_threshold", 4),
            profile=started.get("profile"),
        )

    return _execute(start, thread, context_of, settings, as_json, quiet=quiet)


def _emit(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        render_report(stdout_console(), report)


app.command(name="plan")(plan_command)
app.command(name="report")(report_command)
app.command(name="dashboard")(dashboard_command)
app.command(name="trace")(trace_command)
app.add_typer(cache_app, name="cache")


def main() -> None:
    """Entry point of the ``budgetgraph`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # LangGraph's own warning about a blocked type advises allowing it; our refusal says what happened.
    logging.getLogger("langgraph.checkpoint.serde.jsonplus").setLevel(logging.ERROR)
    try:
        code = app(standalone_mode=False)
    except BudgetgraphError as exc:  # anything not reported as a run
        print_error(exc)
        sys.exit(EXIT_FAILED)
    except typer.Abort:  # Ctrl-C at a prompt
        print_error("Aborted.")
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        if not _usage_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `budgetgraph` alone, or a group: its help
            app()
        # A bad option or argument: one line naming it (Click's own box runs to six), exit 2.
        ctx = getattr(exc, "ctx", None)
        where = getattr(ctx, "command_path", None) or "budgetgraph"
        print_error(f"{where}: {exc.format_message()}")  # type: ignore[attr-defined]
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(code if isinstance(code, int) else EXIT_DONE)


def _usage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Click's usage error (an unknown option, a bad value, a missing argument).

    Typer raises the usage errors of the Click it vendors, which it does not export: a usage
    error is told by its exit status (2) and its ``format_message``.
    """
    status = getattr(exc, "exit_code", None)
    return status == EXIT_BAD_INPUT and callable(getattr(exc, "format_message", None))
