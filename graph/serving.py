"""Serving: the operator's profiles and clients, and who is calling a served run.

A served graph's clients are untrusted: what they send is never a path, a
URL, a variable name or a tenant. The operator declares, in a serving file
(``BUDGETGRAPH_SERVING``):

- **profiles**: named pairs of a ``models.yaml`` and a ``budgets.yaml``; a run's
  context picks one by name (``context={"profile": "lean"}``);
- **clients**: API keys (as SHA-256 digests, or the name of a variable holding
  the key), each mapped to a **tenant** and the profiles it may use; a key
  with ``approve_budgets: true`` may also approve going over a cap whose
  ``on_exceed`` is ``approve`` (for any other key such a cap stops the run;
  an approving key of the same tenant then continues it and is asked).

Example::

    profiles:
      standard: {models: models.yaml, budgets: budgets.yaml}   # relative to this file
      lean: {models: lean-models.yaml, budgets: lean-budgets.yaml}
    default_profile: standard
    clients:
      - tenant: acme
        key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        profiles: [standard, lean]
      - tenant: acme                   # acme's finance lead: may approve going over a cap
        key_env: ACME_APPROVER_API_KEY
        approve_budgets: true
      - tenant: globex
        key_env: GLOBEX_API_KEY        # the key itself, read from the server's environment
        profiles: [lean]

Without a serving file there is one profile, ``default`` (the settings'
``models`` and ``budgets``), and no clients: every caller is the tenant
``default`` (local ``langgraph dev``). :mod:`budgetgraph.graph.auth` turns the
API key of a request into the caller's identity (the tenant) and permissions
(``profile:NAME``, ``budget:approve``); the graph reads them from the runtime
(:func:`caller_of`), never from the run's context.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from budgetgraph.budgets.errors import BudgetgraphError, ConfigError
from budgetgraph.budgets.yamlfile import YamlDocument
from budgetgraph.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
"""The tenant of every caller when no client is declared (no auth)."""
DEFAULT_PROFILE = "default"
"""The profile of a server without a serving file: the settings' own files."""
PROFILE_PERMISSION = "profile:"
"""Prefix of the permissions naming the profiles a caller may use (``profile:*``: any)."""
APPROVE_PERMISSION = "budget:approve"
"""The permission of a client that may approve going over a cap (``approve_budgets``)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""What a profile or tenant name may be: a short identifier, never a path."""
_NAME = re.compile(NAME_PATTERN)


class ProfileError(BudgetgraphError, ValueError):
    """Raised when a run's context names a profile that is not declared, or not the caller's.

    The message lists only profile names, never a file.

    Attributes:
        profile: The name asked for (cut to 64 characters).
        known: The names the caller could have used.
    """

    def __init__(self, *, profile: str, known: Collection[str], declared: bool) -> None:
        self.profile = str(profile)[:64]
        self.known = sorted(known)
        listed = ", ".join(f"`{name}`" for name in self.known) or "none"
        if declared:
            message = f"Profile `{self.profile}` is not one this caller may use; allowed: {listed}."
        elif _NAME.match(self.profile):
            message = f"No profile `{self.profile}`; declared: {listed}."
        else:
            message = f"A profile is a name, not a path or URL; declared: {listed}."
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileFiles(_Strict):
    """One profile: its files, relative to the serving file (``None``: the packaged one)."""

    models: str | None = None
    """The profile's ``models.yaml``."""
    budgets: str | None = None
    """The profile's ``budgets.yaml``."""


class ClientEntry(_Strict):
    """One client: its API key, its tenant and the profiles it may use."""

    tenant: str = Field(pattern=NAME_PATTERN)
    """Who pays for the client's runs and owns its threads."""
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the API key, in lower-case hex (``printf %s KEY | sha256sum``)."""
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """A variable of the server's environment that holds the API key."""
    profiles: tuple[str, ...] | None = None
    """The profiles the client may name; ``None``: every declared profile."""
    approve_budgets: bool = False
    """Whether the client may approve going over a cap whose ``on_exceed`` is ``approve``."""

    @model_validator(mode="after")
    def _one_key(self) -> ClientEntry:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of `key_sha256` and `key_env`")
        return self


class ServingFile(_Strict):
    """The serving file, validated (see the module docstring)."""

    profiles: dict[str, ProfileFiles] = {}
    """Named profiles; none: one profile, ``default``, with the settings' files."""
    default_profile: str | None = None
    """The profile of a run whose context names none (default: the first declared)."""
    clients: tuple[ClientEntry, ...] = ()
    """The clients; none: no auth, every caller is the tenant ``default``."""

    @model_validator(mode="after")
    def _names(self) -> ServingFile:
        bad = [name for name in self.profiles if not _NAME.match(name)]
        if bad:
            raise ValueError(f"profile names must match {NAME_PATTERN}")
        known = set(self.profiles) or {DEFAULT_PROFILE}
        if self.default_profile is not None and self.default_profile not in known:
            raise ValueError(f"`default_profile` is not declared; declared: {', '.join(sorted(known))}")
        for client in self.clients:
            unknown = set(client.profiles or ()) - known
            if unknown:
                raise ValueError(
                    f"client of tenant `{client.tenant}` names undeclared profiles: "
                    f"{', '.join(sorted(unknown))}"
                )
        return self


@dataclass(frozen=True)
class Profile:
    """A declared profile with its files resolved (``None``: the packaged file)."""

    name: str
    models: Path | None
    budgets: Path | None


@dataclass(frozen=True)
class Client:
    """A client the server knows: its key's digest, tenant, profiles (``None``: any) and approvals."""

    tenant: str
    profiles: frozenset[str] | None
    digest: bytes
    approve_budgets: bool = False

    @property
    def permissions(self) -> list[str]:
        """The client's LangGraph permissions: ``profile:NAME`` (or ``profile:*``), ``budget:approve``."""
        found = (
            [f"{PROFILE_PERMISSION}*"]
            if self.profiles is None
            else [f"{PROFILE_PERMISSION}{name}" for name in sorted(self.profiles)]
        )
        return [*found, APPROVE_PERMISSION] if self.approve_budgets else found


@dataclass(frozen=True)
class Caller:
    """Who is calling a served run, as the server authenticated them.

    Attributes:
        tenant: The caller's identity: who pays and whose threads these are.
        profiles: The profiles the caller may name; ``None``: any declared profile.
        may_approve: Whether the caller may approve going over a cap
            (``approve_budgets``; a caller of the operator's own auth, which gives
            none of budgetgraph's permissions, may).
    """

    tenant: str
    profiles: frozenset[str] | None
    may_approve: bool = True


class Serving:
    """The operator's profiles and clients.

    Args:
        profiles: The declared profiles by name (at least one).
        default_profile: The profile of a run that names none.
        clients: The clients; empty: no auth.
        source: Where they were read from (for logs).
    """

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        default_profile: str,
        clients: tuple[Client, ...] = (),
        *,
        source: str = "<settings>",
    ) -> None:
        self.profiles = dict(profiles)
        self.default_profile = default_profile
        self.clients = clients
        self.source = source

    @property
    def auth_enabled(self) -> bool:
        """True when clients are declared: every request needs a known API key."""
        return bool(self.clients)

    def identify(self, key: str | None) -> Client | None:
        """The client whose API key is ``key`` (compared in constant time), or ``None``."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for client in self.clients:
            if hmac.compare_digest(client.digest, digest):
                found = client
        return found

    def profile(self, name: str | None, caller: Caller | None = None) -> Profile:
        """The profile a run asks for (``None``: the default one), if the caller may use it.

        Raises:
            ProfileError: ``name`` is not declared, or not one of the caller's profiles.
        """
        chosen = self.default_profile if name is None else name
        allowed = set(self.profiles)
        if caller is not None and caller.profiles is not None:
            allowed &= caller.profiles
        if chosen not in self.profiles:
            raise ProfileError(profile=chosen, known=allowed, declared=False)
        if chosen not in allowed:
            raise ProfileError(profile=chosen, known=allowed, declared=True)
        return self.profiles[chosen]


def load_serving(settings: Settings, env: Mapping[str, str] | None = None) -> Serving:
    """The serving configuration the settings name (``BUDGETGRAPH_SERVING``).

    Args:
        settings: The process's settings; without a serving file, one profile
            ``default`` with ``settings.models`` and ``settings.budgets``, and no clients.
        env: Variables the clients' ``key_env`` name (default: ``os.environ``).

    Raises:
        ConfigError: The file is invalid, a profile's file does not exist, or a
            ``key_env`` variable is unset.
    """
    if settings.serving is None:
        only = Profile(DEFAULT_PROFILE, settings.models, settings.budgets)
        return Serving({DEFAULT_PROFILE: only}, DEFAULT_PROFILE)
    env = os.environ if env is None else env
    doc = YamlDocument.read(settings.serving)
    parsed, problems = doc.validate(ServingFile, doc.data)
    if parsed is None:
        raise doc.fail(problems)
    folder = Path(settings.serving).resolve().parent

    def resolve(name: str | None) -> Path | None:
        return None if name is None else (folder / name)

    profiles = {
        name: Profile(name, resolve(files.models), resolve(files.budgets))
        for name, files in parsed.profiles.items()
    } or {DEFAULT_PROFILE: Profile(DEFAULT_PROFILE, settings.models, settings.budgets)}
    for profile in profiles.values():
        for kind, path in (("models", profile.models), ("budgets", profile.budgets)):
            if path is not None and not path.is_file():
                problems.append(doc.problem(("profiles", profile.name, kind), "no such file"))
    clients = []
    for index, entry in enumerate(parsed.clients):
        if entry.key_sha256 is not None:
            digest = bytes.fromhex(entry.key_sha256)
        else:
            key = env.get(entry.key_env or "", "")
            if not key:
                problems.append(doc.problem(("clients", index, "key_env"), f"`{entry.key_env}` is not set"))
                continue
            digest = hashlib.sha256(key.encode()).digest()
        allowed = frozenset(entry.profiles) if entry.profiles is not None else None
        clients.append(Client(entry.tenant, allowed, digest, entry.approve_budgets))
    if problems:
        raise doc.fail(problems)
    default = parsed.default_profile or next(iter(profiles))
    return Serving(profiles, default, tuple(clients), source=doc.path)


def caller_of(runtime: Any) -> Caller | None:
    """The authenticated caller of a served run, from the runtime the LangGraph server fills.

    Returns:
        ``None`` outside a LangGraph server (Python, the CLI): the run's context
        and settings decide. Served without an authenticated user: the tenant
        ``default`` with every profile.
    """
    info = getattr(runtime, "server_info", None)
    if info is None:
        return None
    user = getattr(info, "user", None)
    identity = getattr(user, "identity", None) if user is not None else None
    if not identity or not getattr(user, "is_authenticated", True):
        return Caller(DEFAULT_TENANT, None)
    permissions = [str(p) for p in (getattr(user, "permissions", None) or ())]
    names = {p.removeprefix(PROFILE_PERMISSION) for p in permissions if p.startswith(PROFILE_PERMISSION)}
    # No profile permission at all: an auth of the operator's own that does not restrict profiles.
    ours = bool(names) or APPROVE_PERMISSION in permissions
    return Caller(
        str(identity),
        None if not names or "*" in names else frozenset(names),
        may_approve=APPROVE_PERMISSION in permissions or not ours,
    )


__all__ = [
    "APPROVE_PERMISSION",
    "DEFAULT_PROFILE",
    "DEFAULT_TENANT",
    "Caller",
    "Client",
    "ConfigError",
    "Profile",
    "ProfileError",
    "Serving",
    "ServingFile",
    "caller_of",
    "load_serving",
]
