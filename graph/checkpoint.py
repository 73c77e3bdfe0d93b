"""Open a checkpointer from a URL: SQLite by default, PostgreSQL for shared use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from budgetgraph.budgets import ConfigError
from budgetgraph.settings import STATE_DIR, mask_url

DEFAULT_SQLITE = "checkpoints.sqlite"


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


@contextmanager
def open_checkpointer(url: str | None = None, *, create: bool = True) -> Iterator[BaseCheckpointSaver]:
    """Open the checkpointer named by ``url`` for the duration of the block.

    Args:
        url: ``None`` for SQLite under ``.budgetgraph/``; ``sqlite:///PATH``;
            ``postgresql://...`` (LangGraph's ``PostgresSaver``, tables created
            on first use); or ``memory:`` (nothing kept).
        create: Create a missing SQLite file; when False (commands that read
            runs already made), a missing file raises instead of being created.

    Raises:
        ConfigError: The URL's scheme is not one of these.
        NoCheckpointsError: ``create`` is False and the SQLite file does not exist.
    """
    if url is None or url.startswith("sqlite:///"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = default_checkpoint_path() if url is None else _sqlite_path(url)
        if not create and not path.exists():
            raise NoCheckpointsError(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with SqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
    elif url.startswith(("postgresql://", "postgres://")):
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(url) as saver:
            saver.setup()
            yield saver
    elif url == "memory:":
        yield InMemorySaver()
    else:
        raise ConfigError(
            path=None,
            problems=[f"checkpointer `{mask_url(url)}`: use sqlite:///PATH, postgresql://... or memory:"],
        )


def _sqlite_path(url: str) -> Path:
    """``sqlite:///rel/path`` is relative, ``sqlite:////abs/path`` absolute (SQLAlchemy's form)."""
    return Path(url.removeprefix("sqlite:///"))
