"""The plugin interface and its registry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from budgetgraph.budgets.errors import ConfigError
from budgetgraph.budgets.request import CallRequest, CallResult

if TYPE_CHECKING:
    from budgetgraph.budgets.config import BudgetsConfig, ModelsConfig
    from budgetgraph.budgets.ledger import Ledger
    from budgetgraph.budgets.pricing import PriceBook
    from budgetgraph.settings import Settings

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "budgetgraph.plugins"
"""Entry-point group through which other distributions add plugin factories."""

CallNext = Callable[[CallRequest], CallResult]
"""The rest of the chain, down to the model."""


@runtime_checkable
class Plugin(Protocol):
    """A wrapper around model calls."""

    name: str
    """The name the plugin is registered under."""

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Handle ``request``: answer it, change it and call on, or refuse it."""
        ...


@dataclass(frozen=True)
class PluginContext:
    """What a plugin factory is given to build its plugin.

    Attributes:
        models: The resolved ``models.yaml``.
        budgets: The loaded ``budgets.yaml``.
        prices: The price book.
        ledger: Where spend is reserved, settled and recorded.
        settings: The process's settings (:mod:`budgetgraph.settings`), e.g. the cache's on/off.
    """

    models: ModelsConfig
    budgets: BudgetsConfig
    prices: PriceBook
    ledger: Ledger
    settings: Settings


PluginFactory = Callable[[PluginContext], Plugin]
"""Builds a plugin from the pipeline's configuration."""

_REGISTRY: dict[str, PluginFactory] = {}


def register(name: str, factory: PluginFactory, *, replace: bool = False) -> None:
    """Register ``factory`` under ``name``.

    Raises:
        ValueError: The name is empty or taken (unless ``replace``), or the
            factory is not callable.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"Plugin name `{name}` must be a non-empty identifier.")
    if not callable(factory):
        raise ValueError(f"Plugin `{name}`: the factory {factory!r} is not callable.")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"Plugin `{name}` is already registered.")
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """Return the names of every known plugin, entry points included, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def build_chain(names: Sequence[str], context: PluginContext, *, source: str) -> list[Plugin]:
    """Build the plugins named in ``names``, in order.

    Args:
        names: Plugin names, outermost first.
        context: Configuration handed to each factory.
        source: Where the names came from, for error messages.

    Raises:
        ConfigError: A name is unknown, or a factory made something that is
            not a plugin; every problem is listed.
    """
    _load_entry_points()
    problems: list[str] = []
    chain: list[Plugin] = []
    for name in names:
        factory = _REGISTRY.get(name)
        if factory is None:
            known = ", ".join(sorted(_REGISTRY))
            problems.append(f"unknown plugin `{name}`; known: {known}")
            continue
        plugin = factory(context)
        if not isinstance(plugin, Plugin) or not callable(getattr(plugin, "wrap", None)):
            problems.append(f"plugin `{name}`: its factory returned {plugin!r}, which has no `wrap`")
            continue
        chain.append(plugin)
    if problems:
        raise ConfigError(path=source, problems=problems)
    return chain


BUILTIN_MODULES: tuple[str, ...] = (
    "budgetgraph.budgets.plugins.router",
    "budgetgraph.budgets.plugins.limits",
    "budgetgraph.budgets.plugins.cache",
)
"""Modules whose import registers the built-in plugins."""

_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for module in BUILTIN_MODULES:
        import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            register(ep.name, ep.load())
        except Exception:  # a broken third-party plugin must not break the others
            logger.exception("Could not load plugin `%s` from entry point %s", ep.name, ep.value)
