"""Open a checkpointer from a URL: SQLite by default, PostgreSQL for shared use.

Every checkpointer opened here reads with :func:`~budgetgraph.graph.serde.strict_serde`:
a checkpoint holding a type outside the graph's allow-list is refused with
:class:`~budgetgraph.graph.serde.RefusedCheckpointError`, which names the
thread and checkpoint, instead of being rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, get_checkpoint_id
from langgraph.checkpoint.memory import InMemorySaver

from budgetgraph.budgets import BudgetgraphError, ConfigError
from budgetgraph.graph.serde import RefusedCheckpointError, strict_serde
from budgetgraph.settings import STATE_DIR, mask_url

DEFAULT_SQLITE = "checkpoints.sqlite"

SaverT = TypeVar("SaverT", bound=BaseCheckpointSaver[Any])


def default_checkpoint_path(cwd: Path | None = None) -> Path:
    """Return ``.budgetgraph/checkpoints.sqlite`` under ``cwd`` (default: the working directory)."""
    return (cwd or Path.cwd()) / STATE_DIR / DEFAULT_SQLITE


class NoCheckpointsError(LookupError):
    """Raised when a command that reads existing runs finds no SQLite checkpoint file.

    Attributes:
        path: The file that does not exist.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"No checkpoints at `{path}`: no run has been started there.")


class CheckpointStoreError(BudgetgraphError, OSError):
    """Raised when the disk refuses the SQLite checkpoint file: read-only, full, or no such folder.

    A file the failed open created is removed again.

    Attributes:
        path: The file or folder at fault.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"Cannot write the checkpoints at `{path}`: {reason}.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return mask_url(text[0]) if text else type(exc).__name__


@contextmanager
def open_checkpointer(url: str | None = None, *, create: bool = True) -> Iterator[BaseCheckpointSaver]:
    """Open the checkpointer named by ``url`` for the duration of the block.

    The checkpointer serializes with :func:`~budgetgraph.graph.serde.strict_serde`,
    and its reads (``get_tuple``, ``list``) raise
    :class:`~budgetgraph.graph.serde.RefusedCheckpointError` naming the thread
    (and the checkpoint where it is known) for a checkpoint holding a type that
    is not allowed.

    Args:
        url: ``None`` for SQLite under ``.budgetgraph/``; ``sqlite:///PATH``;
            ``postgresql://...`` (LangGraph's ``PostgresSaver``, tables created
            on first use); or ``memory:`` (nothing kept).
        create: Create a missing SQLite file; when False (commands that read
            runs already made), a missing file raises instead of being created.

    Raises:
        ConfigError: The URL's scheme is not one of these, the SQLite path is a
            folder, or PostgreSQL cannot be reached or has no such database
            (the message masks the password).
        NoCheckpointsError: ``create`` is False and the SQLite file does not exist.
        CheckpointStoreError: The disk refuses the SQLite file (read-only, full, not a folder).
    """
    if url is None or url.startswith("sqlite:///"):
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        path = default_checkpoint_path() if url is None else _sqlite_path(url)
        if path.is_dir():
            raise ConfigError(path=None, problems=[f"checkpointer `{url}`: `{path}` is a folder, not a file"])
        if not create and not path.exists():
            raise NoCheckpointsError(path)
        existed = path.exists()
        with ExitStack() as stack:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                saver = stack.enter_context(_strict(SqliteSaver).from_conn_string(str(path)))
                saver.setup()
            except (OSError, sqlite3.Error) as exc:
                stack.close()
                if not existed:  # nothing half-written is left behind
                    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
                        with contextlib.suppress(OSError):
                            path.with_name(name).unlink(missing_ok=True)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
                raise CheckpointStoreError(path, reason) from None
            yield saver
    elif url.startswith(("postgresql://", "postgres://")):
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver

        with ExitStack() as stack:
            try:
                saver = stack.enter_context(_strict(PostgresSaver, _NamedRows).from_conn_string(url))
                saver.setup()
            except psycopg.Error as exc:
                problem = f"checkpointer `{mask_url(url)}`: cannot use the database: {_first_line(exc)}"
                raise ConfigError(path=None, problems=[problem]) from None
            yield saver
    elif url == "memory:":
        yield _strict(InMemorySaver)()
    else:
        raise ConfigError(
            path=None,
            problems=[f"checkpointer `{mask_url(url)}`: use sqlite:///PATH, postgresql://... or memory:"],
        )


def _sqlite_path(url: str) -> Path:
    """``sqlite:///rel/path`` is relative, ``sqlite:////abs/path`` absolute (SQLAlchemy's form)."""
    return Path(url.removeprefix("sqlite:///"))


class _StrictReads:
    """Mixin for a LangGraph saver: strict serde by default, refusals named by thread and checkpoint.

    It only wraps the saver's public reads; what is refused is decided by the
    serializer (see :mod:`budgetgraph.graph.serde`).
    """

    def __init__(self, *args: Any, serde: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, serde=serde if serde is not None else strict_serde(), **kwargs)  # type: ignore[call-arg]

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The saver's ``get_tuple``; a refusal names the config's thread and checkpoint."""
        try:
            return super().get_tuple(config)  # type: ignore[misc]
        except RefusedCheckpointError as exc:
            raise exc.located(thread_id=_thread_id(config), checkpoint_id=get_checkpoint_id(config)) from None

    def list(self, config: RunnableConfig | None, **kwargs: Any) -> Iterator[CheckpointTuple]:
        """The saver's ``list``; a refusal names the config's thread."""
        try:
            yield from super().list(config, **kwargs)  # type: ignore[misc]
        except RefusedCheckpointError as exc:
            raise exc.located(thread_id=_thread_id(config)) from None


class _NamedRows:
    """Mixin for ``PostgresSaver``: a refusal names the row's thread and checkpoint, in reads of any shape.

    ``PostgresSaver`` loads every row it reads through ``_load_checkpoint_tuple``.
    """

    def _load_checkpoint_tuple(self, value: Any) -> CheckpointTuple:
        try:
            return super()._load_checkpoint_tuple(value)  # type: ignore[misc]
        except RefusedCheckpointError as exc:
            raise exc.located(thread_id=value["thread_id"], checkpoint_id=value["checkpoint_id"]) from None


@functools.cache
def _strict(saver: type[SaverT], *mixins: type) -> type[SaverT]:
    """Return ``saver``'s class with ``mixins`` and :class:`_StrictReads` mixed in (made once per class)."""
    return type(f"Strict{saver.__name__}", (*mixins, _StrictReads, saver), {"__module__": __name__})


def _thread_id(config: RunnableConfig | None) -> str | None:
    thread_id = (config or {}).get("configurable", {}).get("thread_id")
    return None if thread_id is None else str(thread_id)
