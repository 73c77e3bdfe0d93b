"""Price a call's usage, in USD, from genai-prices or a ``models.yaml`` override.

Sources, in order:

1. ``prices:`` in ``models.yaml`` (USD per million tokens), for self-hosted
   or unlisted models;
2. the genai-prices database (https://github.com/pydantic/genai-prices),
   from the snapshot shipped with the package: no network at run time.

A deferred call (sent through a provider's batch API) is priced at the
database's batch price (genai-prices' ``processing: batch`` condition) where
it lists one below the standard price, else at the standard price times the
provider's discount (``batch_discounts`` in ``models.yaml``; 0.5 for OpenAI,
from its Batch API price list).

Token conventions follow OpenAI's usage object, as LangChain's
``usage_metadata`` reports it: ``input_tokens`` includes cached input tokens,
``output_tokens`` includes reasoning tokens. Cached input is priced at the
cache-read rate; reasoning tokens at the output rate, as providers bill them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from genai_prices import Usage, calc_price
from genai_prices.types import ModelPrice, PriceCalculation

from budgetgraph.budgets.config import PriceOverride
from budgetgraph.budgets.request import MICRO

logger = logging.getLogger(__name__)

_PER_MTOK = Decimal(1_000_000)
_BATCH = {"processing": "batch"}

DEFAULT_BATCH_DISCOUNTS: Mapping[str, float] = {"openai": 0.5, "anthropic": 0.5}
"""Batch price as a fraction of the standard one, by provider: OpenAI's Batch API and
Anthropic's Message Batches both charge 50% (their price lists)."""


@dataclass(frozen=True)
class Price:
    """The price of one call.

    Attributes:
        usd: Exact cost (USD).
        micro_usd: Cost rounded half-even to integer micro-dollars.
        known: False when no price was found for the model (cost counted as 0).
    """

    usd: Decimal
    known: bool

    @property
    def micro_usd(self) -> int:
        """The cost in integer micro-dollars."""
        return int((self.usd * MICRO).to_integral_value(rounding=ROUND_HALF_EVEN))


class PriceBook:
    """Prices models from overrides, then genai-prices.

    Args:
        overrides: Model name -> override, from ``models.yaml``.
        batch_discounts: Provider -> the fraction of the standard price a batch
            request costs, where the database lists no batch price.
    """

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        batch_discounts: Mapping[str, float] | None = None,
    ) -> None:
        self._overrides = dict(overrides or {})
        discounts = batch_discounts if batch_discounts is not None else DEFAULT_BATCH_DISCOUNTS
        self._discounts = {k: Decimal(str(v)) for k, v in discounts.items()}
        self._rates: dict[tuple[str, str | None, bool], tuple[Decimal, Decimal] | None] = {}
        self._linear: dict[tuple[str, str | None, bool], _Linear | None] = {}

    def price(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        provider: str | None = None,
        batch: bool = False,
    ) -> Price:
        """Price one call.

        Args:
            model: The model name (the response's, else the request's).
            input_tokens: Input tokens, cached ones included.
            output_tokens: Output tokens, reasoning ones included.
            cache_read_tokens: Input tokens served from the provider's cache.
            provider: genai-prices provider id, or ``None`` to match by model.
            batch: Priced as a batch request (see the module docstring).

        Returns:
            The price; ``known=False`` and 0 USD when neither source lists the model.
        """
        standard = self._price(model, input_tokens, output_tokens, cache_read_tokens, provider, None)
        if not batch or not standard.known:
            return standard
        if model not in self._overrides:
            listed = self._price(model, input_tokens, output_tokens, cache_read_tokens, provider, _BATCH)
            if listed.usd < standard.usd:
                return listed
        return Price(usd=standard.usd * self.batch_discount(provider), known=True)

    def batch_discount(self, provider: str | None) -> Decimal:
        """The fraction of the standard price a batch request costs with ``provider`` (default OpenAI)."""
        return self._discounts.get(provider or "openai", Decimal(1))

    def _price(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        provider: str | None,
        context: Mapping[str, str] | None,
    ) -> Price:
        override = self._overrides.get(model)
        if override is not None:
            cached_rate = override.cache_read_per_mtok
            if cached_rate is None:
                cached_rate = override.input_per_mtok
            uncached = input_tokens - cache_read_tokens
            usd = (
                uncached * override.input_per_mtok
                + cache_read_tokens * cached_rate
                + output_tokens * override.output_per_mtok
            ) / _PER_MTOK
            return Price(usd=usd, known=True)
        key = (model, provider, context is not None)
        linear = self._linear.get(key)
        if linear is not None:
            return Price(usd=linear.usd(input_tokens, output_tokens, cache_read_tokens), known=True)
        try:
            calc = calc_price(
                Usage(
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cache_read_tokens,
                ),
                model,
                provider_id=provider,
                price_context=context,
            )
        except LookupError:
            _warn_unpriced(model)
            return Price(usd=Decimal(0), known=False)
        if key not in self._linear:
            self._linear[key] = _Linear.of(calc)
        return Price(usd=Decimal(calc.total_price), known=True)

    def rates(
        self, model: str, provider: str | None = None, *, batch: bool = False
    ) -> tuple[Decimal, Decimal] | None:
        """(input, output) USD per million tokens for ``model``, or ``None``; computed once per model."""
        key = (model, provider, batch)
        if key not in self._rates:
            self._rates[key] = self._rates_of(model, provider, batch)
        return self._rates[key]

    def _rates_of(self, model: str, provider: str | None, batch: bool) -> tuple[Decimal, Decimal] | None:
        million = 1_000_000
        inp = self.price(model, input_tokens=million, output_tokens=0, provider=provider, batch=batch)
        out = self.price(model, input_tokens=0, output_tokens=million, provider=provider, batch=batch)
        if not inp.known:
            return None
        return inp.usd, out.usd


@dataclass(frozen=True)
class _Linear:
    """A model's flat per-token rates (USD per million tokens), read from genai-prices once.

    genai-prices' own arithmetic takes about 110 us a call; a model priced at
    flat rates (one price, not tiered by prompt size nor varying by date) costs
    the same from these three numbers, exactly (Decimal).
    """

    input_mtok: Decimal
    cache_read_mtok: Decimal
    output_mtok: Decimal

    @classmethod
    def of(cls, calc: PriceCalculation) -> _Linear | None:
        """The flat rates of the model ``calc`` priced, or ``None`` when its price is not flat."""
        price = calc.model_price
        if not isinstance(calc.model.prices, ModelPrice):  # prices that change over time
            return None
        cache_read = price.cache_read_mtok if price.cache_read_mtok is not None else price.input_mtok
        rates = (price.input_mtok or Decimal(0), cache_read or Decimal(0), price.output_mtok or Decimal(0))
        if not all(type(rate) is Decimal for rate in rates):  # tiered by prompt size
            return None
        return cls(*rates)

    def usd(self, input_tokens: int, output_tokens: int, cache_read_tokens: int) -> Decimal:
        """The price of the tokens (USD)."""
        uncached = input_tokens - cache_read_tokens
        cached = cache_read_tokens * self.cache_read_mtok
        return (uncached * self.input_mtok + cached + output_tokens * self.output_mtok) / _PER_MTOK


@lru_cache(maxsize=256)
def _warn_unpriced(model: str) -> None:
    logger.warning(
        "No price for model %r in genai-prices or models.yaml `prices`; counting it as 0 USD.",
        model,
    )
