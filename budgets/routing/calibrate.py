"""Fit the complexity score's weights and thresholds on the labelled set.

Run ``python -m budgetgraph.budgets.routing.calibrate`` to refit and print the constants of
:mod:`budgetgraph.budgets.routing.complexity` with the accuracy figures; paste the
constants there when the features or the labelled set change (a unit test
checks that the shipped constants are what this gives).

Method:

- **Model**: proportional-odds (ordinal logistic) regression over the three
  grades economy < standard < premium (McCullagh, "Regression models for
  ordinal data", JRSS B 1980): ``P(grade <= j) = sigmoid(cut_j - w.x)``, one
  weight vector and two cut points, fitted by Newton's method with an L2
  penalty on the weights (the log-likelihood is concave, so Newton converges
  in a few steps). The complexity score is ``P(grade >= standard)``.
- **Accuracy**: stratified 5-fold cross-validation with a fixed seed; each
  request is scored by a model that did not see it (out-of-fold).
- **Thresholds**: ``standard_at`` is the highest score threshold at which at
  least :data:`TARGET_RECALL` of the complex requests, scored out-of-fold,
  still reach the standard tier (a complex request sent to economy costs
  quality; a simple one sent to standard costs a little money);
  ``premium_at`` is the model's own standard|premium cut, expressed on the
  score's scale.
- **Baseline**: the design documents' features with hand weights, at its best
  threshold on the whole set (in-sample, so flattered).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from budgetgraph.budgets.routing.complexity import FEATURES, expected_grade, features
from budgetgraph.budgets.routing.data import LabelledRequest, load_labelled

TARGET_RECALL = 0.95
"""Share of complex requests that must reach standard or premium, out-of-fold."""

L2 = 0.5
"""Penalty on the squared weights (not on the cut points)."""

FOLDS = 5
SEED = 20261120


@dataclass(frozen=True)
class OrdinalModel:
    """A fitted proportional-odds model.

    Attributes:
        weights: Feature name -> weight (log-odds per unit).
        cuts: The simple|complex and standard|premium cut points (log-odds).
    """

    weights: Mapping[str, float]
    cuts: tuple[float, float]

    def linear(self, x: Mapping[str, float]) -> float:
        """The linear predictor ``w.x``."""
        return sum(weight * x[name] for name, weight in self.weights.items())

    def score(self, x: Mapping[str, float]) -> float:
        """The complexity score: the expected grade on a 0-1 scale."""
        return expected_grade(self.linear(x), self.cuts)

    @property
    def premium_at(self) -> float:
        """The standard|premium cut on the score's scale."""
        return expected_grade(self.cuts[1], self.cuts)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def fit(
    rows: Sequence[tuple[Mapping[str, float], int]],
    *,
    l2: float = L2,
    iterations: int = 50,
    names: Sequence[str] = FEATURES,
) -> OrdinalModel:
    """Fit the ordinal model by penalised Newton's method.

    Args:
        rows: (features, grade) pairs, grade 0, 1 or 2; every grade must occur.
        l2: Penalty on the squared weights.
        iterations: Newton steps at most (it usually converges in under 15).
        names: The features to fit, in order (default: the request scorer's).

    Returns:
        The fitted model.

    Raises:
        ValueError: A grade has no example.
    """
    if {g for _, g in rows} != {0, 1, 2}:
        raise ValueError("every grade (0, 1, 2) needs at least one example")
    d = len(names)
    xs = [[x[name] for name in names] for x, _ in rows]
    ys = [g for _, g in rows]
    u = [0.0] * d + [-1.0, 1.0]

    def objective(params: list[float]) -> float:
        if params[d] >= params[d + 1]:
            return -math.inf
        total = -0.5 * l2 * sum(w * w for w in params[:d])
        for x, y in zip(xs, ys, strict=True):
            p = _probability(params, x, y, d)
            if p <= 0:
                return -math.inf
            total += math.log(p)
        return total

    current = objective(u)
    for _ in range(iterations):
        gradient, hessian = _derivatives(u, xs, ys, d, l2)
        step = _solve(hessian, [-g for g in gradient])
        scale = 1.0
        while scale > 1e-6:
            candidate = [p + scale * s for p, s in zip(u, step, strict=True)]
            value = objective(candidate)
            if value > current:
                break
            scale /= 2
        else:
            break
        improvement = value - current
        u, current = candidate, value
        if improvement < 1e-9:
            break
    return OrdinalModel(weights=dict(zip(names, u[:d], strict=True)), cuts=(u[d], u[d + 1]))


def _probability(u: Sequence[float], x: Sequence[float], y: int, d: int) -> float:
    s = sum(w * v for w, v in zip(u[:d], x, strict=True))
    upper = _sigmoid(u[d + y] - s) if y < 2 else 1.0
    lower = _sigmoid(u[d + y - 1] - s) if y > 0 else 0.0
    return upper - lower


def _derivatives(
    u: Sequence[float], xs: Sequence[Sequence[float]], ys: Sequence[int], d: int, l2: float
) -> tuple[list[float], list[list[float]]]:
    """Gradient and Hessian of the penalised log-likelihood."""
    n = d + 2
    gradient = [0.0] * n
    hessian = [[0.0] * n for _ in range(n)]
    for x, y in zip(xs, ys, strict=True):
        s = sum(w * v for w, v in zip(u[:d], x, strict=True))
        vectors: list[tuple[list[float], float, float, float]] = []  # (direction, F, f, f')
        if y < 2:
            a = u[d + y] - s
            fa = _sigmoid(a)
            vectors.append((_direction(x, d, y), fa, fa * (1 - fa), fa * (1 - fa) * (1 - 2 * fa)))
        if y > 0:
            b = u[d + y - 1] - s
            fb = _sigmoid(b)
            vectors.append((_direction(x, d, y - 1), fb, fb * (1 - fb), fb * (1 - fb) * (1 - 2 * fb)))
        upper = vectors[0][1] if y < 2 else 1.0
        lower = vectors[-1][1] if y > 0 else 0.0
        p = max(upper - lower, 1e-300)
        # first and second derivatives of log(F(a) - F(b)) in a and b
        terms: list[tuple[list[float], float, float]] = []
        if y < 2:
            la = vectors[0][2] / p
            terms.append((vectors[0][0], la, vectors[0][3] / p - la * la))
        if y > 0:
            lb = -vectors[-1][2] / p
            terms.append((vectors[-1][0], lb, -vectors[-1][3] / p - lb * lb))
        for direction, first, second in terms:
            for i in range(n):
                gradient[i] += first * direction[i]
                if direction[i]:
                    row = hessian[i]
                    di = second * direction[i]
                    for j in range(n):
                        row[j] += di * direction[j]
        if len(terms) == 2:
            (da, la, _), (db, lb, _) = terms
            cross = -la * lb
            for i in range(n):
                for j in range(n):
                    hessian[i][j] += cross * (da[i] * db[j] + db[i] * da[j])
    for i in range(d):
        gradient[i] -= l2 * u[i]
        hessian[i][i] -= l2
    return gradient, hessian


def _direction(x: Sequence[float], d: int, cut: int) -> list[float]:
    """d(cut - w.x)/d(params)."""
    out = [-v for v in x] + [0.0, 0.0]
    out[d + cut] = 1.0
    return out


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` by Gaussian elimination with partial pivoting."""
    n = len(rhs)
    m = [row[:] + [rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("singular Hessian")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            if factor:
                for c in range(col, n + 1):
                    m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def folds(requests: Sequence[LabelledRequest], k: int = FOLDS, seed: int = SEED) -> list[list[int]]:
    """Stratified folds: indices of ``requests``, each grade spread evenly over ``k`` folds."""
    rng = random.Random(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for grade in (0, 1, 2):
        members = [i for i, r in enumerate(requests) if r.grade == grade]
        rng.shuffle(members)
        for position, index in enumerate(members):
            out[position % k].append(index)
    return out


@dataclass(frozen=True)
class Calibration:
    """The result of a calibration.

    Attributes:
        model: The model fitted on the whole set.
        standard_at: The standard-tier threshold (see the module docstring).
        premium_at: The premium-tier threshold.
        out_of_fold: Each request's score from the fold model that did not see it.
    """

    model: OrdinalModel
    standard_at: float
    premium_at: float
    out_of_fold: list[float]


def calibrate(requests: Sequence[LabelledRequest], *, target_recall: float = TARGET_RECALL) -> Calibration:
    """Fit the model and choose the thresholds (see the module docstring).

    Args:
        requests: The labelled set.
        target_recall: Share of complex requests that must reach standard or better.

    Returns:
        The calibration, with out-of-fold scores for reporting.
    """
    rows = [(features(r.text), r.grade) for r in requests]
    oof = [0.0] * len(requests)
    for fold in folds(requests):
        held = set(fold)
        model = fit([row for i, row in enumerate(rows) if i not in held])
        for i in fold:
            oof[i] = model.score(rows[i][0])
    full = fit(rows)
    complex_scores = sorted(s for s, r in zip(oof, requests, strict=True) if r.label == "complex")
    allowed_misses = math.floor(len(complex_scores) * (1 - target_recall))
    standard_at = math.floor(complex_scores[allowed_misses] * 100) / 100
    return Calibration(
        model=full,
        standard_at=standard_at,
        premium_at=round(full.premium_at, 2),
        out_of_fold=oof,
    )


def baseline_score(text: str) -> float:
    """The design documents' heuristic, with hand weights: 0 (simple) to 1 (complex).

    Length, analysis and comparison verbs, trade-off wording, code and many
    factors push up; "what is" questions pull down.
    """
    x = features(text)
    raw = (
        0.15 * (x["instruction_words"] + x["payload_words"])
        + 0.15 * x["analysis"]
        + 0.1 * x["comparison"]
        + 0.1 * x["tradeoff"]
        + 0.2 * max(x["code_block"], min(x["inline_code"], 1.0))
        + 0.05 * x["clauses"]
        - 0.3 * x["lookup"]
    )
    return max(0.0, min(1.0, raw / 2))


def accuracy(scores: Sequence[float], requests: Sequence[LabelledRequest], threshold: float) -> float:
    """Share of requests on the right side of ``threshold`` (complex at or above it)."""
    right = sum((s >= threshold) == (r.label == "complex") for s, r in zip(scores, requests, strict=True))
    return right / len(requests)


@dataclass(frozen=True)
class Figures:
    """Routing accuracy of scores against labels.

    Attributes:
        n: Requests.
        accuracy: Share on the right side of ``standard_at`` (simple below, complex at or above).
        complex_recall: Share of complex requests at or above ``standard_at``.
        simple_kept: Share of simple requests below it.
        three_way: Share given exactly their labelled tier.
    """

    n: int
    accuracy: float
    complex_recall: float
    simple_kept: float
    three_way: float


def figures(
    scores: Sequence[float], requests: Sequence[LabelledRequest], standard_at: float, premium_at: float
) -> Figures:
    """Measure ``scores`` of ``requests`` against their labels at the two thresholds."""
    complex_ = [s for s, r in zip(scores, requests, strict=True) if r.label == "complex"]
    simple = [s for s, r in zip(scores, requests, strict=True) if r.label == "simple"]
    grades = [2 if s >= premium_at else 1 if s >= standard_at else 0 for s in scores]
    return Figures(
        n=len(requests),
        accuracy=accuracy(scores, requests, standard_at),
        complex_recall=sum(s >= standard_at for s in complex_) / max(len(complex_), 1),
        simple_kept=sum(s < standard_at for s in simple) / max(len(simple), 1),
        three_way=sum(g == r.grade for g, r in zip(grades, requests, strict=True)) / len(requests),
    )


def main() -> None:
    """Refit on the packaged calibration split and print the figures and the constants."""
    everything = load_labelled()
    requests = [r for r in everything if r.split == "calibration"]
    holdout = [r for r in everything if r.split == "holdout"]
    result = calibrate(requests)
    model, std, prem = result.model, result.standard_at, result.premium_at

    def show(name: str, f: Figures) -> None:
        print(
            f"{name:<34} n={f.n:<4} accuracy {f.accuracy:.3f}  complex recall {f.complex_recall:.3f}  "
            f"simple kept at economy {f.simple_kept:.3f}  three-way {f.three_way:.3f}"
        )

    n_complex = sum(r.label == "complex" for r in requests)
    print(f"calibration split: {len(requests)} requests ({n_complex} complex); holdout: {len(holdout)}")
    print(f"thresholds: standard_at {std}, premium_at {prem}")
    show("calibration, out-of-fold (5-fold)", figures(result.out_of_fold, requests, std, prem))
    show(
        "calibration, in-sample",
        figures([model.score(features(r.text)) for r in requests], requests, std, prem),
    )
    show("holdout (unseen)", figures([model.score(features(r.text)) for r in holdout], holdout, std, prem))
    base = [baseline_score(r.text) for r in requests]
    best = max((accuracy(base, requests, t / 100), t / 100) for t in range(1, 100))
    base_holdout = accuracy([baseline_score(r.text) for r in holdout], holdout, best[1])
    print(
        f"baseline (design documents' features, hand weights): calibration {best[0]:.3f} at its best "
        f"threshold {best[1]} (in-sample), holdout {base_holdout:.3f}"
    )
    print()
    print("WEIGHTS: Mapping[str, float] = {")
    for name, weight in model.weights.items():
        print(f'    "{name}": {weight:.4f},')
    print("}")
    print(f"CUTS: tuple[float, float] = ({model.cuts[0]:.4f}, {model.cuts[1]:.4f})")
    print(f"STANDARD_AT = {std}")
    print(f"PREMIUM_AT = {prem}")


if __name__ == "__main__":
    main()
