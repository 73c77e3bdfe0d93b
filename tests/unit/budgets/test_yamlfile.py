"""Reading a YAML file as hostile input: bounded, strict, and silent about what it holds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from budgetgraph.budgets import ConfigError
from budgetgraph.budgets.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_NODES, YamlDocument

SHADOW = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"


def billion_laughs() -> str:
    """Nine levels of nine aliases each: a few hundred bytes that expand to 9^9 strings."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
    return text


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        YamlDocument.read(path)
    assert len(str(info.value).splitlines()) == 1 + len(info.value.problems)  # no traceback, no snippet
    return info.value.problems


def test_a_billion_laughs_file_is_refused_in_well_under_100_ms(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text(billion_laughs())

    started = time.perf_counter()
    (problem,) = problems_of(path)
    elapsed = time.perf_counter() - started

    assert len(billion_laughs()) < 400
    assert elapsed < 0.1
    assert problem.startswith(f"{path}:") and f"more than {MAX_NODES} values" in problem


def test_aliases_within_the_limit_still_load_and_merge_keys_too():
    document = YamlDocument.parse(
        "caps: &caps {max_tokens: 100, max_cost_usd: 1}\n"
        "budgets:\n"
        "  cto: *caps\n"
        "  coo:\n"
        "    <<: *caps\n"
        "    max_tokens: 50\n",
        path="budgets.yaml",
    )

    assert document.data["budgets"] == {
        "cto": {"max_tokens": 100, "max_cost_usd": 1},
        "coo": {"max_tokens": 50, "max_cost_usd": 1},
    }
    assert document.line_of(("budgets", "coo", "max_tokens")) == 6


def test_an_alias_to_the_node_that_holds_it_is_refused():
    with pytest.raises(ConfigError, match="alias refers to the mapping or sequence that holds it"):
        YamlDocument.parse("a: &loop [1, *loop]\n", path="budgets.yaml")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_after_reading_one_mebibyte():
    started = time.perf_counter()
    (problem,) = problems_of(Path("/dev/zero"))

    assert time.perf_counter() - started < 1.0
    assert problem == "/dev/zero: larger than 1 MiB: not a configuration file"


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text("budgets: {}\n" + "#" * MAX_BYTES)

    (problem,) = problems_of(path)

    assert "larger than 1 MiB" in problem


def test_five_thousand_nested_brackets_are_a_clean_error(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text("[" * 5000 + "]" * 5000)

    (problem,) = problems_of(path)

    assert problem == f"{path}:1: nested deeper than {MAX_DEPTH} levels"


def test_aliases_cannot_nest_past_the_depth_limit_one_anchor_at_a_time():
    text, inner = "", "1"
    for level in range(10):  # each anchor is 30 levels deep and holds the one before it
        text += f"a{level}: &a{level} {'[' * 30}{inner}{']' * 30}\n"
        inner = f"*a{level}"

    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
        YamlDocument.parse(text, path="budgets.yaml")


def test_a_key_given_twice_names_both_lines(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  cto_agent: {max_tokens: 1}\n  coo_agent: {}\n  cto_agent: {max_tokens: 9}\n")

    (problem,) = problems_of(path)

    assert problem == f"{path}:4: `budgets`: `cto_agent` given at line 2 and at line 4"


def test_keys_that_differ_in_spelling_but_not_in_value_are_given_twice():
    with pytest.raises(ConfigError) as info:
        YamlDocument.parse("prices:\n  1: a\n  1.0: b\n", path="models.yaml")
    assert info.value.problems == ["models.yaml:3: `prices`: a key given at line 2 and at line 3"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", id="binary"),
        pytest.param("budgets:\n  cto: {max_tokens: 5}\n".encode("utf-16"), id="utf-16 with a BOM"),
        pytest.param("budgets:\n  cto: {max_tokens: 5}\n".encode("utf-16-le"), id="utf-16 without a BOM"),
        pytest.param(b"budgets: {}\nsecret: \x00\x01hunter2\n", id="utf-8 with control characters"),
    ],
)
def test_a_file_that_is_not_utf8_text_is_one_line_without_its_content(tmp_path: Path, raw: bytes):
    path = tmp_path / "budgets.yaml"
    path.write_bytes(raw)

    (problem,) = problems_of(path)

    assert problem.startswith(f"{path}: not UTF-8 text")
    assert "hunter2" not in problem and "PNG" not in problem and "max_tokens" not in problem


def test_a_shadow_file_has_no_line_of_it_in_the_error(tmp_path: Path):
    path = tmp_path / "shadow"
    path.write_text(SHADOW)
    document = YamlDocument.read(path)

    message = document.problem(("root:*:19000:0:99999:7::",), "unknown key")

    assert message == f"{path}:1: an unknown key at line 1"


@pytest.mark.parametrize(
    "text",
    [
        "a: *hunter2\n",  # an undefined alias
        "a: !hunter2 x\n",  # an unknown tag
        "a: &hunter2 1\nb: &hunter2 2\n",  # a duplicate anchor
        "a: 1\n\thunter2: 2\n",  # a tab
        "a: [hunter2\n",  # an unclosed flow sequence
        "a: 'hunter2\n",  # an unclosed quote
    ],
)
def test_a_yaml_syntax_error_gives_the_line_but_not_the_text(tmp_path: Path, text: str):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)

    (problem,) = problems_of(path)

    assert problem.startswith(f"{path}:") and "hunter2" not in problem


@pytest.mark.parametrize(
    "text", ["a: 2020-13-45\n", "a: " + "1" * 5000 + "\n"], ids=["a 13th month", "5000 digits"]
)
def test_a_value_python_cannot_hold_is_a_clean_error(tmp_path: Path, text: str):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)

    (problem,) = problems_of(path)

    assert problem == f"{path}:1: a number or date that cannot be read"


def test_a_key_that_is_not_a_plain_name_is_described_by_its_line():
    document = YamlDocument.parse("tenants:\n  'acme corp; drop': {daily: 1}\n", path="budgets.yaml")

    message = document.problem(("tenants", "acme corp; drop", "daily"), "expected a mapping")

    assert message == "budgets.yaml:2: the key at line 2 under `tenants`: expected a mapping"


def test_a_missing_file_and_a_directory_are_one_line_each(tmp_path: Path):
    assert problems_of(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory"
    ]
    assert problems_of(tmp_path) == [f"{tmp_path}: cannot read the file: Is a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_says_so(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets: {}\n")
    path.chmod(0)

    assert problems_of(path) == [f"{path}: cannot read the file: Permission denied"]
