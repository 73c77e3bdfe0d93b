"""Pricing usage from genai-prices and models.yaml overrides."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from budgetgraph.budgets.config import PriceOverride
from budgetgraph.budgets.pricing import PriceBook


def test_listed_models_are_priced_from_genai_prices():
    price = PriceBook().price("gpt-4.1-mini", input_tokens=1_000_000, output_tokens=1_000_000)
    assert price.known and price.usd == Decimal("2.0")  # $0.40 in + $1.60 out per million


def test_cached_input_tokens_are_priced_at_the_cache_read_rate():
    full = PriceBook().price("gpt-4.1-mini", input_tokens=1000, output_tokens=0)
    cached = PriceBook().price("gpt-4.1-mini", input_tokens=1000, output_tokens=0, cache_read_tokens=1000)
    assert cached.usd == full.usd / 4  # $0.10 vs $0.40 per million


def test_an_override_wins_and_prices_cache_reads_as_input_unless_given():
    book = PriceBook({"gpt-4.1-mini": PriceOverride(input_per_mtok=Decimal(1), output_per_mtok=Decimal(3))})
    price = book.price(
        "gpt-4.1-mini", input_tokens=2_000_000, output_tokens=1_000_000, cache_read_tokens=500_000
    )
    assert price.usd == Decimal(5)


def test_an_unknown_model_costs_nothing_and_says_so():
    price = PriceBook().price("my-own-llama", input_tokens=10, output_tokens=10)
    assert not price.known and price.usd == 0 and price.micro_usd == 0


def test_micro_dollars_round_half_even():
    book = PriceBook({"m": PriceOverride(input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal(0))})
    assert book.price("m", input_tokens=1, output_tokens=0).micro_usd == 2
    assert book.price("m", input_tokens=3, output_tokens=0).micro_usd == 4


@pytest.mark.parametrize("model", ["gpt-4.1-mini-2025-04-14", "gpt-5", "o3", "gemini-2.5-pro"])
def test_every_price_after_the_first_equals_genai_prices_own_to_the_last_digit(model: str):
    # gpt-4.1-mini and gpt-5 are priced at flat rates, read once; o3's prices change with
    # the date and gemini-2.5-pro's with the prompt's size, so genai-prices prices every call.
    book, draw = PriceBook(), random.Random(7)
    for _ in range(300):
        inp = draw.randint(0, 400_000)
        out, cached = draw.randint(0, 30_000), draw.randint(0, inp)
        expected = calc_price(Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached), model)

        found = book.price(model, input_tokens=inp, output_tokens=out, cache_read_tokens=cached)

        assert found.usd == Decimal(expected.total_price) and found.known
