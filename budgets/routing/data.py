"""The labelled requests the complexity score is calibrated and benchmarked on.

``labelled_requests.jsonl`` ships inside this package: one JSON object per
line with ``id``, ``text``, ``label`` (``simple`` or ``complex``), ``tier``
(the cheapest tier that serves it well: ``economy`` for simple requests,
``standard`` or ``premium`` for complex ones), ``domain`` (``tech``,
``business``, ``ops`` or ``general``) and ``split``: ``calibration`` for the
requests the features were designed on and the weights fitted on, ``holdout``
for requests written after the features and weights were frozen, to measure
accuracy on text neither has seen. The requests were written for this
project: realistic questions from engineering, business and operations work,
and general ones, with cases that trip a naive score on purpose (long but
simple: a paragraph to translate; short but complex: "Build or buy our billing
system?"; a "what is" that is really a design question).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from budgetgraph.budgets.config import Tier

DATA_FILE = "labelled_requests.jsonl"
"""The labelled set's file name, inside ``budgets.routing``."""

Label = Literal["simple", "complex"]
Split = Literal["calibration", "holdout"]
GRADES: tuple[Tier, ...] = ("economy", "standard", "premium")
"""The grades of the ordinal model, lowest first."""


@dataclass(frozen=True)
class LabelledRequest:
    """One labelled request.

    Attributes:
        id: Stable id (``r001`` ...).
        text: What the user asked.
        label: ``simple`` or ``complex``.
        tier: The cheapest tier that serves it well.
        domain: ``tech``, ``business``, ``ops`` or ``general``.
        split: ``calibration`` or ``holdout`` (see the module docstring).
    """

    id: str
    text: str
    label: Label
    tier: Tier
    domain: str
    split: Split = "calibration"

    @property
    def grade(self) -> int:
        """0 for economy, 1 for standard, 2 for premium."""
        return GRADES.index(self.tier)


def load_labelled(path: str | Path | None = None) -> list[LabelledRequest]:
    """Read the labelled set.

    Args:
        path: A JSONL file of the same shape (default: the packaged set).

    Returns:
        The requests, in file order.

    Raises:
        ValueError: A line is not a JSON object of the documented shape; the
            message names the line.
    """
    if path is None:
        text = resources.files("budgetgraph.budgets.routing").joinpath(DATA_FILE).read_text(encoding="utf-8")
        source = f"<packaged {DATA_FILE}>"
    else:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    out: list[LabelledRequest] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            request = LabelledRequest(
                id=str(row["id"]),
                text=str(row["text"]),
                label=row["label"],
                tier=row["tier"],
                domain=str(row.get("domain", "general")),
                split=row.get("split", "calibration"),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: not a labelled request: {exc}") from exc
        if request.split not in ("calibration", "holdout"):
            raise ValueError(f"{source}:{number}: unknown split `{request.split}`")
        if request.label not in ("simple", "complex") or request.tier not in GRADES:
            raise ValueError(f"{source}:{number}: unknown label `{request.label}` or tier `{request.tier}`")
        if (request.label == "simple") != (request.tier == "economy"):
            raise ValueError(f"{source}:{number}: a simple request is economy, a complex one is not")
        out.append(request)
    return out


__all__ = ["DATA_FILE", "GRADES", "LabelledRequest", "load_labelled"]
