"""A duplicate classifier fitted on labelled pairs: the guard's optional last check.

The guard's rules (:mod:`budgetgraph.budgets.cache.guard`) hold in any domain, but cosine
similarity alone cannot tell a paraphrase from a near miss on the same topic
("how do I learn Python?" / "how do I learn Python fast?"). Where labelled
pairs of the workload exist, a classifier fitted on them can: the
"similarity evaluation" stage of GPTCache. Its features are those of the
InferSent / SentEval pair classifiers (Conneau et al., 2017), ``u * v`` and
``|u - v|`` of the two fixed sentence embeddings, plus their cosine, under a
logistic regression.

It runs after the guard's checks and takes the place of one of them, the
key-term check for short requests, a rule of thumb about the same question
(which words matter) that the classifier answers from data.

:func:`budgetgraph.budgets.cachetune.fit.fit` (offline tuning, beside this
package) fits that classifier (scikit-learn's ``LogisticRegression``) on the
pairs near the threshold, then picks the probability cutoff on a held-out
share of the pairs that shares no text with them: the highest precision that
keeps a given recall, among the pairs the guard's other checks pass. This
module only loads and runs the result, a small JSON file; ``cache: verifier: FILE`` in ``budgets.yaml``
turns it on, ``budgetgraph cache calibrate`` writes it. A verifier belongs to
the embedder it was fitted with, and to the kind of requests it was fitted on:
one fitted on Quora questions refuses documentation paraphrases that the
guard alone serves, so it is off by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budgetgraph.budgets.cache.base import Vector

FORMAT = "budgetgraph.cache.verifier/2"
"""The ``format`` field of a verifier file.

Version 1 files had their cutoff picked behind the guard's key-term check,
which a verifier now replaces; they are refused, to be fitted again."""


class VerifierError(ValueError):
    """Raised when a verifier file is missing, malformed, or belongs to another embedder.

    Attributes:
        path: The file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Holdout:
    """How the fitted verifier did on the held-out pairs, each pair scored on its own.

    Attributes:
        pairs: Held-out pairs.
        positives: Those labelled 1.
        precision_before: Precision with the threshold and the guard alone (no verifier).
        recall_before: Recall with the threshold and the guard alone (no verifier).
        precision: Precision with the verifier as well.
        recall: Recall with the verifier as well.
    """

    pairs: int
    positives: int
    precision_before: float
    recall_before: float
    precision: float
    recall: float


@dataclass(frozen=True, eq=False)
class Verifier:
    """Logistic regression on ``[u * v, |u - v|, u . v]`` of two normalised embeddings.

    Attributes:
        weights: One weight per feature, shape ``(2 * dim + 1,)``.
        bias: The intercept.
        cutoff: Lowest duplicate probability (0 to 1) at which a candidate is served.
        embedder: Name of the embedder whose vectors it reads (e.g. ``local:all-MiniLM-L6-v2``).
        threshold: The cosine threshold it was fitted at.
        source: What it was fitted on (file and pair counts), for the record.
        holdout: Its figures on the held-out pairs, or ``None`` when unknown.
    """

    weights: np.ndarray
    bias: float
    cutoff: float
    embedder: str
    threshold: float
    source: dict[str, Any] = field(default_factory=dict)
    holdout: Holdout | None = None

    def probability(self, query: Vector, stored: Vector) -> float:
        """Probability (0 to 1) that the two requests are the same question.

        Args:
            query: The new request's normalised embedding, shape ``(dim,)``.
            stored: The stored request's normalised embedding, same shape.

        Raises:
            ValueError: The vectors do not have the dimension the verifier was fitted on.
        """
        x = pair_features(
            np.asarray(query, dtype=np.float64)[None, :], np.asarray(stored, dtype=np.float64)[None, :]
        )
        if x.shape[1] != self.weights.shape[0]:
            raise ValueError(
                f"verifier fitted on {(self.weights.shape[0] - 1) // 2}-dim vectors, got {x.shape[1] // 2}"
            )
        return float(sigmoid(x @ self.weights + self.bias)[0])

    def accepts(self, query: Vector, stored: Vector) -> tuple[bool, float]:
        """Whether the candidate may be served, and its duplicate probability.

        Args:
            query: The new request's normalised embedding, shape ``(dim,)``.
            stored: The stored request's normalised embedding, same shape.

        Returns:
            ``(probability >= cutoff, probability)``.
        """
        p = self.probability(query, stored)
        return p >= self.cutoff, p

    def save(self, path: str | Path) -> None:
        """Write the verifier as JSON (weights as a list of floats; never pickle).

        Raises:
            OSError: The file cannot be written.
        """
        document = {
            "format": FORMAT,
            "embedder": self.embedder,
            "threshold": self.threshold,
            "cutoff": self.cutoff,
            "bias": self.bias,
            "weights": [float(w) for w in self.weights],
            "source": self.source,
            "holdout": None if self.holdout is None else self.holdout.__dict__,
        }
        Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, *, embedder: str | None = None) -> Verifier:
        """Read a verifier written by :meth:`save`.

        Args:
            path: The JSON file.
            embedder: The embedder it will be used with; a verifier fitted
                with another one is refused.

        Raises:
            VerifierError: The file is missing, is not a verifier, or names another embedder.
        """
        name = str(path)
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise VerifierError(f"cannot read the verifier: {exc.strerror or exc}", path=name) from exc
        except UnicodeDecodeError as exc:
            raise VerifierError(f"not UTF-8 text: {exc.reason}", path=name) from exc
        except json.JSONDecodeError as exc:
            raise VerifierError(f"not JSON: {exc.msg}", path=name) from exc
        if isinstance(document, dict) and document.get("format") == "budgetgraph.cache.verifier/1":
            raise VerifierError(
                "fitted by an earlier budgetgraph, behind the guard's key-term check that a verifier now "
                "replaces; fit it again with `budgetgraph cache calibrate`",
                path=name,
            )
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise VerifierError(f"not a verifier file (expected format `{FORMAT}`)", path=name)
        try:
            weights = np.asarray(document["weights"], dtype=np.float64)
            holdout = document.get("holdout")
            verifier = cls(
                weights=weights,
                bias=float(document["bias"]),
                cutoff=float(document["cutoff"]),
                embedder=str(document["embedder"]),
                threshold=float(document["threshold"]),
                source=dict(document.get("source") or {}),
                holdout=None if holdout is None else Holdout(**holdout),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"malformed verifier: {exc}", path=name) from exc
        if weights.ndim != 1 or weights.shape[0] % 2 != 1 or not np.isfinite(weights).all():
            raise VerifierError("malformed verifier: `weights` must be 2 * dim + 1 finite numbers", path=name)
        if not 0.0 <= verifier.cutoff <= 1.0 or not np.isfinite(verifier.bias):
            raise VerifierError("malformed verifier: `cutoff` must be 0 to 1 and `bias` finite", path=name)
        if embedder is not None and verifier.embedder != embedder:
            raise VerifierError(
                f"fitted with embedder `{verifier.embedder}`, the cache uses `{embedder}`", path=name
            )
        return verifier


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[u * v, |u - v|, u . v]`` per row, shape ``(n, 2 * dim + 1)``."""
    return np.hstack([u * v, np.abs(u - v), np.einsum("ij,ij->i", u, v)[:, None]])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


__all__ = ["FORMAT", "Holdout", "Verifier", "VerifierError", "pair_features", "sigmoid"]
