"""Modules imported on first use, so that a command shows its first output before they load.

The OpenAI client (``openai``, ``httpx2``, ``langchain_openai``) takes 0.6-0.8 s to import,
a third of the CLI's start. Nothing needs it before the first model call, so the
modules that name it bind it with :func:`lazy_module`: the real import runs the first
time an attribute is read (an ``isinstance`` or ``except`` against its errors, a client
built). It uses :class:`importlib.util.LazyLoader`, the standard library's own.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, imported when one of its attributes is first read (at once if already imported).

    Raises:
        ModuleNotFoundError: ``name`` is not installed.
    """
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
