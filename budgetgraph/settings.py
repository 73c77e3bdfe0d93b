"""budgetgraph's settings: every ``BUDGETGRAPH_*`` variable, read and checked in one place.

The command line and the environment are the same settings: each CLI option
names its variable (``--ledger`` / ``BUDGETGRAPH_LEDGER_URL``), the option
wins over the variable, and both are checked by :class:`Settings`. Python
callers (``build_graph``) and the served graph read the environment through
:func:`load_settings` when they are called, never at import.

=============================  =====================  ==============================================
variable                       option                 meaning
=============================  =====================  ==============================================
``BUDGETGRAPH_MODELS``         ``--models``           ``models.yaml`` (default: the packaged one)
``BUDGETGRAPH_BUDGETS``        ``--budgets``          ``budgets.yaml`` (default: the packaged one)
``BUDGETGRAPH_LEDGER_URL``     ``--ledger``           ``memory:``, ``sqlite:///PATH`` or ``redis://...``
``BUDGETGRAPH_CHECKPOINTER``   ``--checkpointer``     ``sqlite:///PATH``, ``postgresql://...``, ``memory:``
``BUDGETGRAPH_CACHE``          ``--cache/--no-cache`` the semantic cache on or off (default: the file)
``BUDGETGRAPH_CACHE_URL``      ``cache --store``      ``disk``, ``memory:`` or ``redis://...``
``BUDGETGRAPH_TRACE_STORE``    ``trace --store``      the local span store's path, or off
``BUDGETGRAPH_TENANT``         ``--tenant``           who pays for a new run (CLI and Python)
``BUDGETGRAPH_SERVING``        (none)                 the served graph's profiles and API keys file
``BUDGETGRAPH_ALLOWED_KEY_ENV`` (none)                more variables a tier's ``api_key_env`` may name
=============================  =====================  ==============================================

On and off are spelled one way everywhere: ``on``, ``true``, ``yes``, ``1``
(``t``, ``y``) and ``off``, ``false``, ``no``, ``0`` (``f``, ``n``), in any case. An empty variable counts as
unset. A bad value is a :class:`~budgetgraph.budgets.errors.ConfigError`
naming the variable and the option, with any password in a URL masked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "BUDGETGRAPH_"
STATE_DIR = ".budgetgraph"
"""Folder, under the working directory, of the embedded default stores."""

ON_WORDS = frozenset({"on", "true", "yes", "1", "t", "y"})
OFF_WORDS = frozenset({"off", "false", "no", "0", "f", "n"})
# The same words as click's and pydantic's booleans, so a switch reads the same
# whether the CLI, the settings object or a YAML-free caller parses it.

OPTIONS: dict[str, str] = {
    "models": "--models",
    "budgets": "--budgets",
    "ledger_url": "--ledger",
    "checkpointer": "--checkpointer",
    "cache": "--cache/--no-cache",
    "cache_url": "cache --store",
    "trace_store": "trace --store",
    "tenant": "--tenant",
}
"""The CLI option of each setting that has one."""


def env_name(field: str) -> str:
    """The variable of setting ``field`` (``ledger_url`` -> ``BUDGETGRAPH_LEDGER_URL``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def parse_switch(value: object) -> bool:
    """``on``/``off`` and their one set of spellings as a bool (a bool passes as it is).

    Raises:
        ValueError: Any other value.
    """
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ON_WORDS:
        return True
    if word in OFF_WORDS:
        return False
    raise ValueError(f"use on or off (also {', '.join(sorted((ON_WORDS | OFF_WORDS) - {'on', 'off'}))})")


Switch = Annotated[bool, BeforeValidator(parse_switch)]
"""A bool spelled on/off (see :data:`ON_WORDS` and :data:`OFF_WORDS`)."""

_PASSWORD = re.compile(r"(?<=:)[^:@/\s]+(?=@)")


def mask_url(url: str) -> str:
    """``url`` with any password (``:secret@``) replaced by ``***``; also for malformed URLs."""
    return _PASSWORD.sub("***", url)


def _check_url(value: str | None, schemes: tuple[str, ...], usage: str) -> str | None:
    """``value`` when it is one of ``schemes`` with a usable host and port; else ValueError."""
    if value is None:
        return None
    url = value.strip()
    if url in ("memory:", "disk") and url in schemes:
        return url
    if not url.startswith(tuple(s for s in schemes if "://" in s)):
        raise ValueError(f"`{mask_url(url)}`: use {usage}")
    if url.startswith("sqlite:///"):
        if not url.removeprefix("sqlite:///").strip("/"):
            raise ValueError(f"`{url}` names no file: use sqlite:///PATH")
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"`{mask_url(url)}`: {exc}") from None
    return url


class Settings(BaseSettings):
    """Every budgetgraph setting, from ``BUDGETGRAPH_*`` variables and CLI options.

    Values given to the constructor (the CLI's options) win over the
    environment. ``None`` means "not set": the packaged default applies.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    models: Path | None = None
    """``models.yaml`` to use; ``None``: the packaged one."""
    budgets: Path | None = None
    """``budgets.yaml`` to use; ``None``: the packaged one."""
    ledger_url: str | None = None
    """The spend ledger: ``memory:``, ``sqlite:///PATH`` or ``redis://...``; ``None``: SQLite
    under ``.budgetgraph/``."""
    checkpointer: str | None = None
    """``sqlite:///PATH``, ``postgresql://...`` or ``memory:``; ``None``: SQLite under ``.budgetgraph/``."""
    cache: Switch | None = None
    """The semantic cache on or off; ``None``: as ``budgets.yaml``'s ``cache.enabled`` says."""
    cache_url: str | None = None
    """The cache store: ``disk``, ``memory:`` or ``redis://...``; ``None``: ``cache.store`` of the file."""
    batch_queue: Path | None = None
    """The queue of deferred calls (``budgetgraph collect`` reads it); ``None``:
    ``.budgetgraph/batches.sqlite``."""
    trace_store: Path | Literal["off"] | None = None
    """The local span store's file, or ``off``; ``None``: ``.budgetgraph/traces.sqlite``."""
    tenant: str = Field(default="default", min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    """Who pays for a new run started from the CLI or Python (a served run's tenant is its caller's)."""
    serving: Path | None = None
    """The served graph's serving file: its profiles and its clients' API keys
    (:mod:`budgetgraph.graph.serving`); ``None``: one profile, ``default``, and no auth."""
    allowed_key_env: Annotated[tuple[str, ...], NoDecode] = ()
    """Variables a tier's ``api_key_env`` may name besides those ending in ``_API_KEY``
    (comma-separated in ``BUDGETGRAPH_ALLOWED_KEY_ENV``)."""

    @field_validator("allowed_key_env", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for name in value or ():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", str(name)):
                raise ValueError(f"`{str(name)[:40]}` is not a variable name")
        return tuple(value or ())

    @field_validator("ledger_url")
    @classmethod
    def _ledger(cls, value: str | None) -> str | None:
        return _check_url(
            value,
            ("memory:", "sqlite:///", "redis://", "rediss://", "unix://"),
            "memory:, sqlite:///PATH or redis://HOST:PORT/DB",
        )

    @field_validator("checkpointer")
    @classmethod
    def _checkpointer(cls, value: str | None) -> str | None:
        return _check_url(
            value,
            ("memory:", "sqlite:///", "postgresql://", "postgres://"),
            "sqlite:///PATH, postgresql://... or memory:",
        )

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        return _check_url(
            value, ("disk", "memory:", "redis://", "rediss://", "unix://"), "disk, memory: or redis://..."
        )

    @field_validator("trace_store", mode="before")
    @classmethod
    def _trace_store(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in OFF_WORDS:
                return "off"
            return text.removeprefix("sqlite:///") or None
        return value

    def trace_store_path(self, cwd: Path | None = None) -> Path | None:
        """The local span store's file (``None`` when it is off)."""
        if self.trace_store == "off":
            return None
        if isinstance(self.trace_store, Path):
            return self.trace_store
        return (cwd or Path.cwd()) / STATE_DIR / "traces.sqlite"


def load_settings(**given: Any) -> Settings:
    """The settings: ``given`` values (``None`` ones skipped) over the environment, read now.

    Raises:
        ConfigError: A value is invalid; one line per problem naming the variable and the option.
    """
    from budgetgraph.budgets.errors import ConfigError

    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(path=None, problems=[_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    option = OPTIONS.get(field)
    where = f"`{env_name(field)}`" + (f" / `{option}`" if option else "")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}"


__all__ = [
    "OFF_WORDS",
    "ON_WORDS",
    "OPTIONS",
    "STATE_DIR",
    "Settings",
    "Switch",
    "env_name",
    "load_settings",
    "mask_url",
    "parse_switch",
]
