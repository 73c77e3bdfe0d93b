"""Fit the decision scorer on the labelled decisions and print its constants and agreement.

Offline tuning, kept beside the runtime it tunes (``budgets/routing/decision.py``):

    python bench/fit_decision_router.py                     # fit on train.jsonl, 5-fold figures
    python bench/fit_decision_router.py --holdout           # also score holdout.jsonl (frozen constants)

It fits the proportional-odds model of :mod:`budgetgraph.budgets.routing.decision`
on ``bench/data/decisions/train.jsonl``, prints ``WEIGHTS`` and ``CUTS`` to
paste into that module and the thresholds for ``router.decision`` in
``budgets.yaml``, and reports how often the band agrees with the label,
out-of-fold on the training set and, with ``--holdout``, on the holdout
scored with the constants *in the module* (the frozen scorer).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from budgetgraph.budgets.routing import decision
from budgetgraph.budgets.routing.calibrate import fit
from budgetgraph.budgets.routing.complexity import expected_grade

DATA = Path(__file__).resolve().parent / "data" / "decisions"
GRADES = {"economy": 0, "standard": 1, "premium": 2}
SEED = 20261206


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def measure(row: dict) -> dict[str, float]:
    return decision.features(row["task"], row.get("constraints") or [])


def thresholds(cuts: tuple[float, float]) -> tuple[float, float]:
    """The score at each cut: where the model's most likely grade changes (about 0.25 and 0.75)."""
    return expected_grade(cuts[0], cuts), expected_grade(cuts[1], cuts)


def packaged_bands():
    """The ``router.decision`` bands of the packaged budgets.yaml."""
    from budgetgraph.budgets import load_budgets
    from budgetgraph.budgets.routing.settings import RouterSettings
    from budgetgraph.graph.builder import NODE_NAMES

    return load_budgets(None, node_names=NODE_NAMES).section("router", RouterSettings).decision


def agreement(rows: list[dict], scores: list[float], bands) -> dict[str, float]:
    """Agreement of the node tiers the bands give with each decision's label."""
    plans = [{node: bands.of(node).tier(s) for node in ("cto", "coo", "reconcile")} for s in scores]
    labels = [r["tier"] for r in rows]
    premium = [p for p, t in zip(plans, labels, strict=True) if t == "premium"]
    economy = [p for p, t in zip(plans, labels, strict=True) if t == "economy"]
    standard = [p for p, t in zip(plans, labels, strict=True) if t == "standard"]
    at_least_standard = {"standard", "premium"}
    return {
        "premium_ok": sum(
            p["reconcile"] == "premium" and {p["cto"], p["coo"]} <= at_least_standard for p in premium
        )
        / max(len(premium), 1),
        "economy_ok": sum({p["cto"], p["coo"]} <= {"economy", "local"} for p in economy)
        / max(len(economy), 1),
        "standard_reconcile_premium": sum(p["reconcile"] == "premium" for p in standard)
        / max(len(standard), 1),
        "standard_specialists_economy": sum(p["cto"] == "economy" for p in standard) / max(len(standard), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--holdout", action="store_true", help="Also score holdout.jsonl with the frozen constants."
    )
    parser.add_argument("--l2", type=float, default=0.5)
    args = parser.parse_args()

    train = load("train.jsonl")
    rows = [(measure(r), GRADES[r["tier"]]) for r in train]
    model = fit(rows, l2=args.l2, names=decision.FEATURES)
    standard_at, premium_at = thresholds(model.cuts)
    print(f"train: {len(train)} decisions {dict(Counter(r['tier'] for r in train))}")
    print("WEIGHTS = {")
    for name in decision.FEATURES:
        print(f'    "{name}": {model.weights[name]:.4f},')
    print("}")
    print(f"CUTS = ({model.cuts[0]:.4f}, {model.cuts[1]:.4f})")
    print(f"thresholds: standard_at {standard_at:.3f}, premium_at {premium_at:.3f}")

    order = list(range(len(train)))
    random.Random(SEED).shuffle(order)
    folds = [order[i::5] for i in range(5)]
    scores = [0.0] * len(train)
    for held in folds:
        kept = [rows[i] for i in order if i not in set(held)]
        part = fit(kept, l2=args.l2, names=decision.FEATURES)
        for i in held:
            scores[i] = part.score(rows[i][0])
    bands = packaged_bands()
    cv = agreement(train, scores, bands)
    print("train, 5-fold out-of-fold:", {k: round(v, 3) for k, v in cv.items()})
    frozen = [decision.score_decision(r["task"], r.get("constraints") or []).score for r in train]
    print("train, frozen scorer:     ", {k: round(v, 3) for k, v in agreement(train, frozen, bands).items()})

    if args.holdout:
        holdout = load("holdout.jsonl")
        scored = [decision.score_decision(r["task"], r.get("constraints") or []).score for r in holdout]
        result = agreement(holdout, scored, bands)
        print(f"holdout ({len(holdout)}), frozen scorer:", {k: round(v, 3) for k, v in result.items()})


if __name__ == "__main__":
    main()
