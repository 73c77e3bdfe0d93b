"""A duplicate classifier fitted on labelled pairs: the guard's optional last check.

The guard's rules (:mod:`budgetgraph.budgets.cache.guard`) hold in any domain, but cosine
similarity alone cannot tell a paraphrase from a near miss on the same topic
("how do I learn Python?" / "how do I learn Python fast?"). Where labelled
pairs of the workload exist, a classifier fitted on them can: the
"similarity evaluation" stage of GPTCache. Its features are those of the
InferSent / SentEval pair classifiers (Conneau et al., 2017), ``u * v`` and
``|u - v|`` of the two fixed sentence embeddings, plus their cosine, and the
word-overlap features of the Quora duplicate-question classifiers
(:data:`LEXICAL`: shared and unshared content lemmas, names, numbers,
negation and the question word, read from the guard's own tokens), under a
logistic regression.

It runs after the guard's checks and takes the place of those that are rules
of thumb about which words of a request matter (another action, actor or
qualifier, rewording: :data:`~budgetgraph.budgets.cache.guard.VERIFIED`),
which the classifier answers from data: it may serve what they refused. The
checks for what always changes a decision (a number, a negation, a direction,
the other polarity) stand.

:func:`budgetgraph.budgets.cachetune.fit.fit` (offline tuning, beside this
package) fits that classifier (scikit-learn's ``LogisticRegression``) on the
pairs near the threshold, then picks the probability cutoff on a held-out
share of the pairs that shares no text with them: the highest precision that
keeps a given recall, among the pairs the checks that stand pass. This
module only loads and runs the result, a small JSON file; ``cache: verifier: FILE`` in ``budgets.yaml``
turns it on, ``budgetgraph cache calibrate`` writes it. A verifier belongs to
the embedder it was fitted with, and to the kind of requests it was fitted on:
one fitted on Quora questions refuses documentation paraphrases that the
guard alone serves, so it is off by default.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budgetgraph.budgets.cache.base import Vector
from budgetgraph.budgets.cache.lexicon import DISCOURSE
from budgetgraph.budgets.cache.text import TextFeatures, features

FORMAT = "budgetgraph.cache.verifier/3"
"""The ``format`` field of a verifier file.

Version 1 and 2 files had their cutoff picked among the candidates the guard
passed; a verifier now picks among what its checks on words refused too, so
they are refused, to be fitted again."""

EARLIER = ("budgetgraph.cache.verifier/1", "budgetgraph.cache.verifier/2")
"""Formats refused, to be fitted again: their cutoffs were picked among the candidates the guard
passed, and a verifier now also judges what the guard's checks on words refused."""

LEXICAL = (
    "content_jaccard",
    "only_query",
    "only_stored",
    "names_differ",
    "numbers_differ",
    "negation_differs",
    "question_word_differs",
    "sequence_ratio",
    "length_gap",
    "last_word_differs",
)
"""Word-overlap features of a pair, from the guard's tokens
(:func:`~budgetgraph.budgets.cache.text.features`), in this order:

- ``content_jaccard``: shared content lemmas over all content lemmas (1.0 when neither has any);
- ``only_query`` / ``only_stored``: ``log1p`` of the content lemmas in one request only;
- ``names_differ``, ``numbers_differ``, ``negation_differs``: 1.0 when the names, the numbers,
  or whether there is a negation differ, else 0.0;
- ``question_word_differs``: 1.0 when the requests open with different question words
  ("how" / "what"), else 0.0;
- ``sequence_ratio``: how much of the two lemma sequences aligns in order (``difflib``'s
  Ratcliff-Obershelp ratio, 0 to 1);
- ``length_gap``: ``|log((1 + content lemmas of one) / (1 + of the other))|``;
- ``last_word_differs``: 1.0 when the last content lemmas differ ("... in Python" / "... in Java").
"""

QUESTION_WORDS = frozenset("what how why when where who whom whose which".split())


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
        precision_before: Precision of the threshold and the guard's checks that stand with a
            verifier (the pool it picks from).
        recall_before: Recall of the same.
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
    """Logistic regression on ``[u * v, |u - v|, u . v]`` of two normalised embeddings and :data:`LEXICAL`.

    Attributes:
        weights: One weight per feature, shape ``(2 * dim + 1 + len(lexical),)``.
        bias: The intercept.
        cutoff: Lowest duplicate probability (0 to 1) at which a candidate is served.
        embedder: Name of the embedder whose vectors it reads (e.g. ``local:all-MiniLM-L6-v2``).
        threshold: The cosine threshold it was fitted at.
        source: What it was fitted on (file and pair counts), for the record.
        holdout: Its figures on the held-out pairs, or ``None`` when unknown.
        lexical: The word-overlap features it reads (:data:`LEXICAL`, or none for a version 2 file).
    """

    weights: np.ndarray
    bias: float
    cutoff: float
    embedder: str
    threshold: float
    source: dict[str, Any] = field(default_factory=dict)
    holdout: Holdout | None = None
    lexical: tuple[str, ...] = ()

    def probability(self, query: Vector, stored: Vector, texts: tuple[str, str] | None = None) -> float:
        """Probability (0 to 1) that the two requests are the same question.

        Args:
            query: The new request's normalised embedding, shape ``(dim,)``.
            stored: The stored request's normalised embedding, same shape.
            texts: The new and the stored request's normalised texts, for :attr:`lexical`.

        Raises:
            ValueError: The vectors do not have the dimension the verifier was fitted on, or
                it reads word-overlap features and ``texts`` is ``None``.
        """
        x = pair_features(
            np.asarray(query, dtype=np.float64)[None, :], np.asarray(stored, dtype=np.float64)[None, :]
        )
        if self.lexical:
            if texts is None:
                raise ValueError("this verifier reads the requests' words: pass their texts")
            x = np.hstack([x, lexical_features(features(texts[0]), features(texts[1]))[None, :]])
        if x.shape[1] != self.weights.shape[0]:
            dim = (self.weights.shape[0] - 1 - len(self.lexical)) // 2
            raise ValueError(f"verifier fitted on {dim}-dim vectors, got {np.asarray(query).shape[-1]}")
        return float(sigmoid(x @ self.weights + self.bias)[0])

    def accepts(
        self, query: Vector, stored: Vector, texts: tuple[str, str] | None = None
    ) -> tuple[bool, float]:
        """Whether the candidate may be served, and its duplicate probability.

        Args:
            query: The new request's normalised embedding, shape ``(dim,)``.
            stored: The stored request's normalised embedding, same shape.
            texts: The two requests' normalised texts (needed when :attr:`lexical` is set).

        Returns:
            ``(probability >= cutoff, probability)``.
        """
        p = self.probability(query, stored, texts)
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
            "lexical": list(self.lexical),
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
        if isinstance(document, dict) and document.get("format") in EARLIER:
            raise VerifierError(
                "fitted by an earlier budgetgraph, among the candidates the guard passed, while a verifier "
                "now also judges what its checks on words refused; fit it again with `budgetgraph cache "
                "calibrate`",
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
                lexical=tuple(str(n) for n in document.get("lexical") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"malformed verifier: {exc}", path=name) from exc
        if verifier.lexical != LEXICAL:
            raise VerifierError(f"malformed verifier: `lexical` must be {list(LEXICAL)}", path=name)
        vector_part = weights.shape[0] - len(verifier.lexical) if weights.ndim == 1 else 0
        if weights.ndim != 1 or vector_part % 2 != 1 or not np.isfinite(weights).all():
            raise VerifierError(
                "malformed verifier: `weights` must be 2 * dim + 1 (+ the lexical features) finite numbers",
                path=name,
            )
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


def lexical_features(query: TextFeatures, stored: TextFeatures) -> np.ndarray:
    """:data:`LEXICAL` of a pair of requests, shape ``(len(LEXICAL),)``, float64."""
    mine, theirs = query.content - DISCOURSE, stored.content - DISCOURSE
    union = mine | theirs
    opening = [next((t.lemma for t in f.tokens), "") for f in (query, stored)]
    asked = [o if o in QUESTION_WORDS else "" for o in opening]
    return np.array(
        [
            len(mine & theirs) / len(union) if union else 1.0,
            math.log1p(len(mine - theirs)),
            math.log1p(len(theirs - mine)),
            float(query.entities != stored.entities),
            float(sorted(query.numbers) != sorted(stored.numbers)),
            float((query.negations > 0) != (stored.negations > 0)),
            float(asked[0] != asked[1] and any(asked)),
            difflib.SequenceMatcher(None, query.sequence, stored.sequence, autojunk=False).ratio(),
            abs(math.log((1 + len(mine)) / (1 + len(theirs)))),
            float(_last_content(query) != _last_content(stored)),
        ],
        dtype=np.float64,
    )


def _last_content(f: TextFeatures) -> str:
    return next((t.lemma for t in reversed(f.tokens) if t.content), "")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


__all__ = [
    "FORMAT",
    "LEXICAL",
    "Holdout",
    "Verifier",
    "VerifierError",
    "lexical_features",
    "pair_features",
    "sigmoid",
]
