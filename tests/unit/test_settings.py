"""The settings object: every BUDGETGRAPH_* variable read and checked in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetgraph.budgets import ConfigError
from budgetgraph.settings import OFF_WORDS, ON_WORDS, Settings, load_settings, mask_url


def test_every_variable_reads_into_the_one_settings_object(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    values = {
        "BUDGETGRAPH_MODELS": str(tmp_path / "m.yaml"),
        "BUDGETGRAPH_BUDGETS": str(tmp_path / "b.yaml"),
        "BUDGETGRAPH_LEDGER_URL": "redis://127.0.0.1:6379/3",
        "BUDGETGRAPH_CHECKPOINTER": "postgresql://u@127.0.0.1:5432/db",
        "BUDGETGRAPH_CACHE": "off",
        "BUDGETGRAPH_CACHE_URL": "memory:",
        "BUDGETGRAPH_TRACE_STORE": str(tmp_path / "t.sqlite"),
        "BUDGETGRAPH_TENANT": "acme",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.models == tmp_path / "m.yaml" and settings.budgets == tmp_path / "b.yaml"
    assert settings.ledger_url == "redis://127.0.0.1:6379/3"
    assert settings.checkpointer == "postgresql://u@127.0.0.1:5432/db"
    assert settings.cache is False and settings.cache_url == "memory:"
    assert settings.trace_store_path() == tmp_path / "t.sqlite"
    assert settings.tenant == "acme"


def test_options_win_over_variables_and_none_means_not_given(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BUDGETGRAPH_LEDGER_URL", "memory:")
    monkeypatch.setenv("BUDGETGRAPH_TENANT", "acme")

    settings = load_settings(ledger_url="sqlite:///x.sqlite", tenant=None)

    assert settings.ledger_url == "sqlite:///x.sqlite" and settings.tenant == "acme"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BUDGETGRAPH_CACHE", "")
    monkeypatch.setenv("BUDGETGRAPH_MODELS", "")

    settings = load_settings()

    assert settings.cache is None and settings.models is None


@pytest.mark.parametrize("word", sorted(ON_WORDS | OFF_WORDS))
def test_on_and_off_have_one_spelling_for_every_switch(word: str):
    expected = word in ON_WORDS

    assert Settings(cache=word.upper()).cache is expected
    if not expected:
        assert Settings(trace_store=word).trace_store_path() is None


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BUDGETGRAPH_CACHE", "sometimes", "`BUDGETGRAPH_CACHE` / `--cache/--no-cache`: use on or off"),
        ("BUDGETGRAPH_LEDGER_URL", "redis://127.0.0.1:notaport/0", "`BUDGETGRAPH_LEDGER_URL` / `--ledger`"),
        ("BUDGETGRAPH_LEDGER_URL", "postgres://x", "use memory:, sqlite:///PATH or redis://"),
        ("BUDGETGRAPH_CHECKPOINTER", "sqlite:///", "names no file"),
        ("BUDGETGRAPH_CHECKPOINTER", "postgresq://u@h/db", "`BUDGETGRAPH_CHECKPOINTER` / `--checkpointer`"),
        ("BUDGETGRAPH_CACHE_URL", "s3://bucket", "`BUDGETGRAPH_CACHE_URL` / `cache --store`"),
        ("BUDGETGRAPH_TENANT", " " * 0 + "x" * 201, "`BUDGETGRAPH_TENANT` / `--tenant`"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_option(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert len(raised.value.problems) == 1 and named in raised.value.problems[0]
    assert "\n" not in raised.value.problems[0]


@pytest.mark.parametrize(
    "url",
    ["postgresq://user:SECRET@127.0.0.1/db", "rediss//:SECRET@127.0.0.1:6379/0", "redis://:SECRET@h:x/0"],
)
def test_a_password_in_a_refused_url_is_masked(monkeypatch: pytest.MonkeyPatch, url: str):
    monkeypatch.setenv("BUDGETGRAPH_LEDGER_URL", url)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert "SECRET" not in str(raised.value) and "***" in str(raised.value)
    assert mask_url(url).count("***") == 1
