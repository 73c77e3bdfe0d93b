"""The ``router`` plugin: sends each request to a tier that can serve it.

A tier whose model has no endpoint configured (neither a base URL nor an API
key) cannot be called; its requests go to the ``local`` tier, the
deterministic no-model path, and the decision is recorded with its reason.
"""

from __future__ import annotations

from budgets.config import ModelsConfig
from budgets.plugins.base import CallNext, PluginContext, register
from budgets.request import CallRequest, CallResult


class RouterPlugin:
    """Chooses the tier that serves a request."""

    name = "router"

    def __init__(self, models: ModelsConfig) -> None:
        self._models = models

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Route ``request`` to a tier with a reachable model, else to ``local``."""
        tier = request.tier
        if tier != "local" and not self._models.endpoints[tier].configured:
            settings = self._models.endpoints[tier].settings
            request = request.evolve(tier="local").decide(
                self.name,
                "local",
                f"tier `{tier}` has no endpoint: neither {settings.base_url_env} "
                f"nor {settings.api_key_env} is set",
            )
        return call_next(request)


def _factory(context: PluginContext) -> RouterPlugin:
    return RouterPlugin(context.models)


register("router", _factory)
