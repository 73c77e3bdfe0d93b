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

:func:`fit` fits that classifier (scikit-learn's ``LogisticRegression``) on
the pairs near the threshold, then picks the probability cutoff on a held-out
share of the pairs that shares no text with them: the highest precision that
keeps a given recall, among the pairs the guard's other checks pass.
The result is a small JSON file; ``cache: verifier: FILE`` in ``budgets.yaml``
turns it on, ``budgetgraph cache calibrate`` writes it. A verifier belongs to
the embedder it was fitted with, and to the kind of requests it was fitted on:
one fitted on Quora questions refuses documentation paraphrases that the
guard alone serves, so it is off by default.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budgetgraph.budgets.cache.base import Embedder, Vector
from budgetgraph.budgets.cache.evaluate import Pair
from budgetgraph.budgets.cache.guard import Guard
from budgetgraph.budgets.cache.text import normalize

FORMAT = "budgetgraph.cache.verifier/2"
"""The ``format`` field of a verifier file.

Version 1 files had their cutoff picked behind the guard's key-term check,
which a verifier now replaces; they are refused, to be fitted again."""

FIT_MARGIN = 0.08
"""Pairs this far (cosine) below the threshold are fitted on too, so the classifier sees both sides of it."""


class FitError(ValueError):
    """Raised when labelled pairs cannot give a verifier.

    That is: too few pairs near the threshold, one label only, or a recall the
    threshold and the guard's other checks do not reach on the held-out pairs.
    """


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
        x = _features(
            np.asarray(query, dtype=np.float64)[None, :], np.asarray(stored, dtype=np.float64)[None, :]
        )
        if x.shape[1] != self.weights.shape[0]:
            raise ValueError(
                f"verifier fitted on {(self.weights.shape[0] - 1) // 2}-dim vectors, got {x.shape[1] // 2}"
            )
        return float(_sigmoid(x @ self.weights + self.bias)[0])

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


def fit(
    pairs: Sequence[Pair],
    embedder: Embedder,
    *,
    threshold: float,
    guard: Guard | None = None,
    min_recall: float = 0.4,
    holdout_share: float = 0.2,
    seed: int = 0,
    source: dict[str, Any] | None = None,
) -> Verifier:
    """Fit a verifier on labelled pairs and pick its cutoff on a held-out share of them.

    The pairs are shuffled (``seed``) and ``holdout_share`` of them held out;
    pairs sharing a text with a held-out pair are left out of the fit, so the
    cutoff is picked on requests the classifier has not seen. The classifier
    is fitted on the remaining pairs at cosine ``>= threshold - FIT_MARGIN``.

    Args:
        pairs: Labelled pairs of the workload (both labels needed).
        embedder: The cache's embedder; every distinct text is embedded once.
        threshold: The cosine threshold the verifier will run behind.
        guard: The guard it will run behind (default: the shipped one).
        min_recall: Recall (0 to 1, over the held-out pairs labelled 1) the
            cutoff must keep; the cutoff is the one with the best precision
            among those that keep it.
        holdout_share: Share of the pairs (0 to 1) held out for the cutoff.
        seed: Seed of the split (``random.Random``).
        source: What the pairs are, stored with the verifier.

    Returns:
        The verifier, with its held-out figures.

    Raises:
        FitError: No pairs; fewer than 20, or one label only, to fit on; or the
            threshold and the guard's other checks keep a held-out recall
            below ``min_recall``.
        Exception: Whatever the embedder raises (e.g. ``openai.APIError``).
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn comes with sentence-transformers
    from sklearn.preprocessing import StandardScaler

    if not pairs:
        raise FitError("no pairs to fit on")
    guard = guard or Guard()
    stored = [normalize(p.stored) for p in pairs]
    queries = [normalize(p.query) for p in pairs]
    labels = np.array([p.label for p in pairs], dtype=int)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    cut = int(len(order) * holdout_share)
    held = np.array(order[:cut], dtype=int)
    held_texts = {stored[i] for i in held} | {queries[i] for i in held}
    trained = np.array([i for i in order[cut:] if not {stored[i], queries[i]} & held_texts], dtype=int)
    texts = list(dict.fromkeys(stored + queries))
    matrix = np.asarray(embedder.embed(texts), dtype=np.float32)
    row = {text: i for i, text in enumerate(texts)}

    def features_of(ix: np.ndarray) -> np.ndarray:
        return _features(matrix[[row[stored[i]] for i in ix]], matrix[[row[queries[i]] for i in ix]])

    x_trained = features_of(trained)
    near = x_trained[:, -1] >= threshold - FIT_MARGIN
    fitted_labels = labels[trained][near]
    if int(near.sum()) < 20:
        raise FitError(
            f"{int(near.sum())} pairs at cosine >= {threshold - FIT_MARGIN:.2f} to fit on; need 20 or more"
        )
    if len(set(fitted_labels.tolist())) < 2:
        raise FitError(f"every pair to fit on is labelled {fitted_labels[0]}; need pairs of both labels")
    scaler = StandardScaler().fit(x_trained[near])
    model = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(x_trained[near]), fitted_labels)
    weights = (model.coef_[0] / scaler.scale_).astype(np.float64)
    bias = float(model.intercept_[0] - (model.coef_[0] * scaler.mean_ / scaler.scale_).sum())
    x_held = features_of(held)
    held_labels = labels[held]
    exact = np.array([stored[i] == queries[i] for i in held], dtype=bool)

    def passing(key_terms: bool) -> np.ndarray:
        verdicts = (
            guard.rules(queries[i], stored[i], float(x_held[j, -1]), threshold, key_terms=key_terms)
            for j, i in enumerate(held)
        )
        return exact | np.array([v.accepted for v in verdicts], dtype=bool)

    pool = passing(key_terms=False)
    probability = _sigmoid(x_held.astype(np.float64) @ weights + bias)
    cutoff = _cutoff(pool, exact, probability, held_labels, min_recall)
    if cutoff is None:
        raise FitError(
            f"the threshold and the guard's other checks keep a held-out recall of "
            f"{_scores(pool, held_labels)[1]:.3f}, below --min-recall {min_recall}; no cutoff can keep it"
        )
    before = _scores(passing(key_terms=True), held_labels)
    after = _scores(exact | (pool & (probability >= cutoff)), held_labels)
    holdout = Holdout(
        pairs=len(held),
        positives=int(held_labels.sum()),
        precision_before=round(before[0], 4),
        recall_before=round(before[1], 4),
        precision=round(after[0], 4),
        recall=round(after[1], 4),
    )
    return Verifier(
        weights=weights,
        bias=bias,
        cutoff=cutoff,
        embedder=embedder.name,
        threshold=threshold,
        source={
            **(source or {}),
            "pairs": len(pairs),
            "fitted_on": int(near.sum()),
            "held_out": int(len(held)),
        },
        holdout=holdout,
    )


def _cutoff(
    pool: np.ndarray, exact: np.ndarray, probability: np.ndarray, labels: np.ndarray, min_recall: float
) -> float | None:
    """The cutoff with the best held-out precision at recall >= ``min_recall``, or ``None`` if none keeps it.

    ``pool`` marks the pairs the guard's other checks pass (exact matches are
    served whatever the cutoff). Candidates are their probabilities rounded to
    0.001, and 0.0 (serve the whole pool); the lowest cutoff wins a tie.
    """
    best: tuple[float, float] | None = None
    for candidate in [0.0, *np.unique(np.round(probability[pool & ~exact], 3)).tolist()]:
        precision, recall = _scores(exact | (pool & (probability >= candidate)), labels)
        if recall >= min_recall and (best is None or precision > best[1]):
            best = (float(candidate), precision)
    return None if best is None else best[0]


def _scores(served: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of serving the pairs marked in ``served``; precision 1.0 when none is."""
    correct = int((served & (labels == 1)).sum())
    positives = int(labels.sum())
    return (correct / int(served.sum()) if served.any() else 1.0), (correct / positives if positives else 0.0)


def _features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[u * v, |u - v|, u . v]`` per row, shape ``(n, 2 * dim + 1)``."""
    return np.hstack([u * v, np.abs(u - v), np.einsum("ij,ij->i", u, v)[:, None]])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


__all__ = ["FORMAT", "FitError", "Holdout", "Verifier", "VerifierError", "fit"]
