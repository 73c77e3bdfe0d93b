"""Fit a verifier on labelled pairs: what ``budgetgraph cache calibrate`` runs.

The classifier and its file format are the runtime's
(:class:`~budgetgraph.budgets.cache.verifier.Verifier`); this module only
fits one, offline, on pairs read by :mod:`budgetgraph.budgets.cachetune.evaluate`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from budgetgraph.budgets.cache.base import Embedder
from budgetgraph.budgets.cache.guard import Guard
from budgetgraph.budgets.cache.text import features, normalize
from budgetgraph.budgets.cache.verifier import (
    LEXICAL,
    Holdout,
    Verifier,
    lexical_features,
    pair_features,
    sigmoid,
)
from budgetgraph.budgets.cachetune.evaluate import Pair

PENALTY_C = 0.1
"""Inverse L2 penalty of the logistic regression (scikit-learn's ``C``) on standardised features."""

FIT_MARGIN = 0.08
"""Pairs this far (cosine) below the threshold are fitted on too, so the classifier sees both sides of it."""


class FitError(ValueError):
    """Raised when labelled pairs cannot give a verifier.

    That is: too few pairs near the threshold, one label only, or a recall the
    threshold and the guard's checks that stand with a verifier do not reach on the held-out pairs.
    """


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
        vectors = pair_features(matrix[[row[queries[i]] for i in ix]], matrix[[row[stored[i]] for i in ix]])
        words = np.array(
            [lexical_features(features(queries[i]), features(stored[i])) for i in ix], dtype=np.float64
        ).reshape(len(ix), len(LEXICAL))
        return np.hstack([vectors, words])

    cosine = 2 * matrix.shape[1]  # the column of u . v
    x_trained = features_of(trained)
    near = x_trained[:, cosine] >= threshold - FIT_MARGIN
    fitted_labels = labels[trained][near]
    if int(near.sum()) < 20:
        raise FitError(
            f"{int(near.sum())} pairs at cosine >= {threshold - FIT_MARGIN:.2f} to fit on; need 20 or more"
        )
    if len(set(fitted_labels.tolist())) < 2:
        raise FitError(f"every pair to fit on is labelled {fitted_labels[0]}; need pairs of both labels")
    scaler = StandardScaler().fit(x_trained[near])
    model = LogisticRegression(C=PENALTY_C, max_iter=3000)
    model.fit(scaler.transform(x_trained[near]), fitted_labels)
    weights = (model.coef_[0] / scaler.scale_).astype(np.float64)
    bias = float(model.intercept_[0] - (model.coef_[0] * scaler.mean_ / scaler.scale_).sum())
    x_held = features_of(held)
    held_labels = labels[held]
    exact = np.array([stored[i] == queries[i] for i in held], dtype=bool)

    verdicts = (
        guard.rules_verdict(queries[i], stored[i], float(x_held[j, cosine]), threshold, embedder.embed)
        for j, i in enumerate(held)
    )
    pool = exact | np.array([guard.verifier_decides(v) for v in verdicts], dtype=bool)
    probability = sigmoid(x_held.astype(np.float64) @ weights + bias)
    cutoff = _cutoff(pool, exact, probability, held_labels, min_recall)
    if cutoff is None:
        raise FitError(
            f"the threshold and the guard's other checks keep a held-out recall of "
            f"{_scores(pool, held_labels)[1]:.3f}, below --min-recall {min_recall}; no cutoff can keep it"
        )
    before = _scores(pool, held_labels)
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
        lexical=LEXICAL,
    )


def _cutoff(
    pool: np.ndarray, exact: np.ndarray, probability: np.ndarray, labels: np.ndarray, min_recall: float
) -> float | None:
    """The cutoff with the best held-out precision at recall >= ``min_recall``, or ``None`` if none keeps it.

    ``pool`` marks the pairs the guard's checks that stand with a verifier pass (exact matches are
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


__all__ = ["FIT_MARGIN", "FitError", "fit"]
