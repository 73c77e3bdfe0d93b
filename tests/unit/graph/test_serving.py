"""The serving file: profiles by name, API keys to tenants, and the caller of a served run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from budgetgraph.budgets import ConfigError
from budgetgraph.graph.serving import (
    DEFAULT_PROFILE,
    DEFAULT_TENANT,
    Caller,
    ProfileError,
    caller_of,
    load_serving,
)
from budgetgraph.settings import Settings


def serving_file(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "lean-models.yaml").write_text("default_tier: economy\n")
    (tmp_path / "tight.yaml").write_text("budgets: {}\n")
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    return Settings(serving=path)


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_without_a_serving_file_there_is_one_profile_and_no_auth(tmp_path: Path):
    serving = load_serving(Settings(models=tmp_path / "m.yaml"))

    assert list(serving.profiles) == [DEFAULT_PROFILE] and serving.default_profile == DEFAULT_PROFILE
    assert serving.profiles[DEFAULT_PROFILE].models == tmp_path / "m.yaml"
    assert not serving.auth_enabled and serving.identify("anything") is None


def test_profiles_resolve_next_to_the_file_and_keys_map_to_tenants(tmp_path: Path):
    settings = serving_file(
        tmp_path,
        f"""
profiles:
  standard: {{}}
  lean: {{models: lean-models.yaml, budgets: tight.yaml}}
default_profile: lean
clients:
  - {{tenant: acme, key_sha256: {sha("acme-key")}}}
  - {{tenant: globex, key_env: GLOBEX_API_KEY, profiles: [standard]}}
""",
    )

    serving = load_serving(settings, env={"GLOBEX_API_KEY": "globex-key"})

    assert serving.default_profile == "lean"
    assert serving.profiles["lean"].models == tmp_path.resolve() / "lean-models.yaml"
    assert serving.profiles["standard"].models is None
    acme, globex = serving.identify("acme-key"), serving.identify("globex-key")
    assert acme is not None and (acme.tenant, acme.permissions) == ("acme", ["profile:*"])
    assert globex is not None and (globex.tenant, globex.permissions) == ("globex", ["profile:standard"])
    assert serving.identify("acme-key ") is None and serving.identify(None) is None


def test_a_profile_is_chosen_by_name_within_what_the_caller_may_use(tmp_path: Path):
    settings = serving_file(tmp_path, "profiles: {standard: {}, lean: {models: lean-models.yaml}}\n")
    serving = load_serving(settings)
    globex = Caller("globex", frozenset({"standard"}))

    assert serving.profile(None).name == "standard"  # the first declared is the default
    assert serving.profile("lean").name == "lean"
    with pytest.raises(ProfileError, match=r"No profile `gold`; declared: `lean`, `standard`\."):
        serving.profile("gold")
    with pytest.raises(ProfileError, match=r"not one this caller may use; allowed: `standard`"):
        serving.profile("lean", globex)
    with pytest.raises(ProfileError) as path:
        serving.profile("/etc/shadow")
    assert "/etc" not in str(path.value) and "a name, not a path" in str(path.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("profiles: {lean: {models: missing.yaml}}\n", "`profiles.lean.models`: no such file"),
        ("profiles: {'../x': {}}\n", "profile names must match"),
        ("profiles: {a: {}}\ndefault_profile: b\n", "`default_profile` is not declared"),
        ("clients: [{tenant: acme}]\n", "exactly one of `key_sha256` and `key_env`"),
        ("clients: [{tenant: acme, key_sha256: nothex}]\n", "key_sha256"),
        ("clients: [{tenant: 'a/b', key_env: X_API_KEY}]\n", "tenant"),
        ("clients: [{tenant: acme, key_env: UNSET_API_KEY}]\n", "`UNSET_API_KEY` is not set"),
        ("clients: [{tenant: acme, key_env: A_API_KEY, profiles: [gold]}]\n", "undeclared profiles: gold"),
        ("profiles: {a: {modelz: x}}\n", "unknown"),
    ],
)
def test_a_bad_serving_file_is_a_config_error_naming_the_problem(tmp_path: Path, text: str, problem: str):
    settings = serving_file(tmp_path, text)

    with pytest.raises(ConfigError) as raised:
        load_serving(settings, env={"A_API_KEY": "k"})

    assert problem in str(raised.value)


def runtime(user: object | None, *, served: bool = True) -> SimpleNamespace:
    info = SimpleNamespace(assistant_id="a", graph_id="decision", user=user) if served else None
    return SimpleNamespace(server_info=info)


def test_the_caller_of_a_served_run_is_its_authenticated_user():
    acme = SimpleNamespace(identity="acme", permissions=["profile:lean"], is_authenticated=True)
    anyone = SimpleNamespace(identity="acme", permissions=["profile:*"], is_authenticated=True)
    foreign = SimpleNamespace(identity="u-17", permissions=["read"], is_authenticated=True)
    anonymous = SimpleNamespace(identity="", permissions=[], is_authenticated=False)

    assert caller_of(runtime(None, served=False)) is None  # Python or the CLI
    approver = SimpleNamespace(
        identity="acme", permissions=["profile:*", "budget:approve"], is_authenticated=True
    )
    assert caller_of(runtime(acme)) == Caller("acme", frozenset({"lean"}), may_approve=False)
    assert caller_of(runtime(anyone)) == Caller("acme", None, may_approve=False)
    assert caller_of(runtime(approver)) == Caller("acme", None, may_approve=True)
    assert caller_of(runtime(foreign)) == Caller("u-17", None)  # another auth, no profile rules
    assert caller_of(runtime(anonymous)) == Caller(DEFAULT_TENANT, None)
    assert caller_of(runtime(None)) == Caller(DEFAULT_TENANT, None)


@pytest.mark.parametrize(
    "context", [{"models": "/tmp/x.yaml"}, {"budgets": "/dev/null"}, {"profile": "../etc/shadow"}]
)
def test_a_context_takes_no_file_only_a_profile_name(context: dict[str, str]):
    from pydantic import ValidationError

    from budgetgraph.graph.context import Context

    with pytest.raises(ValidationError) as refused:
        Context(**context)

    assert "name a `profile`" in str(refused.value) or "string_pattern_mismatch" in str(refused.value)
