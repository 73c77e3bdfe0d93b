"""Which area a constraint belongs to: technical, operations or general.

The CTO reads technical constraints, the COO operations constraints, and both
read general ones; so an edit that touches only an operations constraint
re-runs the COO and not the CTO. A constraint may name its area with a prefix
(``tech:``, ``ops:``, ``general:``); otherwise its words decide, from the
keyword lists below, and a tie or no match is ``general``.
"""

from __future__ import annotations

import re
from typing import Literal

Area = Literal["technical", "operations", "general"]

_PREFIXES: dict[str, Area] = {
    "tech:": "technical",
    "technical:": "technical",
    "ops:": "operations",
    "operations:": "operations",
    "general:": "general",
}

_TECHNICAL = re.compile(
    r"\b(architect\w*|api|apis|latency|database|db|postgres\w*|cloud|aws|gcp|azure|kubernetes|k8s|"
    r"server\w*|infra\w*|code|codebase|monolith|microservices?|security|encrypt\w*|data|"
    r"deploy\w*|uptime|sla|scal\w*|performance|stack|framework|language|python|java|"
    r"technical|tech|region|network\w*|storage|backup\w*|migration)\b",
    re.I,
)
_OPERATIONS = re.compile(
    r"\b(audit\w*|compliance|pci|soc ?2|gdpr|hipaa|regulat\w*|hir\w*|headcount|staff\w*|team|"
    r"engineers|people|vendor\w*|contract\w*|budget|cost\w*|spend|timeline|deadline|quarter|"
    r"month\w*|weeks?|process\w*|support|office|training|on-?call|customers?|sales|legal|"
    r"finance|payroll|operations?|ops|launch)\b",
    re.I,
)


def classify(text: str) -> Area:
    """Return the area of a constraint's ``text`` (see the module docstring)."""
    lowered = text.strip().lower()
    for prefix, area in _PREFIXES.items():
        if lowered.startswith(prefix):
            return area
    technical = len(_TECHNICAL.findall(text))
    operations = len(_OPERATIONS.findall(text))
    if technical > operations:
        return "technical"
    if operations > technical:
        return "operations"
    return "general"
