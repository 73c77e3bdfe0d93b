"""The verifier: a duplicate classifier fitted on labelled pairs, run after the guard."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from budgetgraph.budgets.cache import Guard, SemanticCache
from budgetgraph.budgets.cache.base import Matrix, exact_key
from budgetgraph.budgets.cache.config import CacheSettings, build_cache, load_verifier
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cache.text import features
from budgetgraph.budgets.cache.verifier import LEXICAL, Verifier, VerifierError, lexical_features
from budgetgraph.budgets.cachetune.evaluate import Pair, evaluate, outside_sample
from budgetgraph.budgets.cachetune.fit import FitError, _cutoff, fit
from budgetgraph.graph.cli_cache import cache_app
from tests.unit.budgets.cache.test_cache import namespace


def request(kind: str, i: int) -> str:
    """Text of request ``i`` of a kind: one word the guard's rules find nothing in (``sxbc`` for s12)."""
    return kind + "x" + "".join(chr(ord("a") + int(d)) for d in str(i))


class PlantedEmbedder:
    """Vectors where a duplicate and a near miss are equally close to the stored request.

    Each stored request (kind ``s``) has a random unit vector. Its duplicate
    (``d``) moves it in the first ``dim - 2`` coordinates; its near miss
    (``n``) moves it by the same amount along the last two, which stand for
    what changes the answer. All are at cosine 0.91 from the stored request,
    so cosine cannot tell them apart; the coordinates can.
    """

    name = "test:planted"

    def __init__(self, pairs: int = 400, dim: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vectors: dict[str, np.ndarray] = {}
        for i in range(pairs):
            base = rng.normal(size=dim)
            base /= np.linalg.norm(base)
            self.vectors[request("s", i)] = base
            for name, start, stop in ((request("d", i), 0, dim - 2), (request("n", i), dim - 2, dim)):
                step = np.zeros(dim)
                step[start:stop] = rng.normal(size=stop - start)
                moved = base + 0.45 * step / np.linalg.norm(step)
                self.vectors[name] = moved / np.linalg.norm(moved)

    def fits(self, text: str) -> bool:
        return True

    def embed(self, texts: Sequence[str]) -> Matrix:
        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)

    def pairs(self, count: int) -> list[Pair]:
        """``count`` stored requests, each with its duplicate (label 1) and its near miss (label 0)."""
        return [
            Pair(request("s", i), request(kind, i), int(kind == "d")) for i in range(count) for kind in "dn"
        ]


@pytest.fixture(scope="module")
def planted() -> PlantedEmbedder:
    return PlantedEmbedder()


@pytest.fixture(scope="module")
def fitted(planted: PlantedEmbedder) -> Verifier:
    return fit(planted.pairs(300), planted, threshold=0.8, min_recall=0.8)


def test_a_verifier_learns_what_cosine_cannot_tell_apart(fitted: Verifier):
    held = fitted.holdout

    assert held is not None and held.pairs == 120  # a fifth of the 600 pairs
    assert held.precision_before < 0.6  # near misses clear the threshold as often as duplicates
    assert held.precision >= 0.95 and held.recall >= 0.8
    assert fitted.embedder == "test:planted" and fitted.threshold == 0.8


def test_a_cache_with_a_verifier_serves_the_duplicate_and_refuses_the_near_miss(
    planted: PlantedEmbedder, fitted: Verifier
):
    # requests 300-399 were not fitted on
    unseen = range(300, 400)
    served = {"d": 0, "n": 0}
    for i in unseen:
        for kind in "dn":
            cache = SemanticCache(MemoryStore(), planted, guard=Guard(verifier=fitted))
            stored, asked = request("s", i), request(kind, i)
            cache.put(namespace(), key=exact_key(stored), text=stored, response={"a": stored}, model="m")
            found = cache.lookup(namespace(), key=exact_key(asked), text=asked, threshold=0.8)
            served[kind] += found.outcome == "semantic"
            if found.outcome == "miss" and found.refused:
                assert found.reason.startswith("verifier: duplicate probability")

    assert served["d"] >= 80 and served["n"] <= 5


def test_the_verifier_runs_only_after_the_rules_and_only_with_vectors(
    fitted: Verifier, planted: PlantedEmbedder
):
    guard = Guard(verifier=fitted)
    near_miss, stored = request("n", 350), request("s", 350)
    vectors = (planted.vectors[near_miss], planted.vectors[stored])

    refused = guard.judge(near_miss, stored, 0.91, 0.8, vectors, embed=planted.embed)
    skipped = guard.judge(near_miss, stored, 0.91, 0.8, embed=planted.embed)
    numbers = guard.judge(f"top 5 {near_miss}", f"top 7 {stored}", 0.99, 0.8, vectors)
    cosine_only = Guard(enabled=False, verifier=fitted).judge(near_miss, stored, 0.91, 0.8, vectors)

    assert not refused.accepted and refused.reason.startswith("verifier:")
    assert skipped.accepted
    assert numbers.reason.startswith("quantity")
    assert cosine_only.accepted  # the guard off (cache eval --no-guard) is cosine alone


def test_a_verifier_file_round_trips_and_is_refused_for_another_embedder(tmp_path: Path, fitted: Verifier):
    path = tmp_path / "verifier.json"
    fitted.save(path)
    loaded = Verifier.load(path, embedder="test:planted")
    u, v = np.eye(16)[0], np.eye(16)[1]

    texts = ("How do I reset my password?", "How can I reset my password?")

    assert loaded.cutoff == fitted.cutoff and loaded.holdout == fitted.holdout
    assert loaded.lexical == fitted.lexical == LEXICAL
    assert loaded.probability(u, v, texts) == pytest.approx(fitted.probability(u, v, texts))
    with pytest.raises(ValueError, match="pass their texts"):
        loaded.probability(u, v)
    with pytest.raises(VerifierError, match="fitted with embedder `test:planted`"):
        Verifier.load(path, embedder="local:all-MiniLM-L6-v2")
    (tmp_path / "other.json").write_text(json.dumps({"weights": [1.0]}), encoding="utf-8")
    with pytest.raises(VerifierError, match="not a verifier file"):
        Verifier.load(tmp_path / "other.json")


def test_the_cache_section_names_a_verifier_and_it_must_fit_the_embedder(
    tmp_path: Path, fitted: Verifier, planted: PlantedEmbedder
):
    fitted.save(tmp_path / "verifier.json")
    settings = CacheSettings(store="memory:", verifier="verifier.json")

    cache = build_cache(settings, cwd=tmp_path, embedder=planted)

    assert cache.guard.verifier is not None and cache.guard.verifier.cutoff == fitted.cutoff
    with pytest.raises(VerifierError, match="fitted with embedder `test:planted`, the cache uses `local:"):
        load_verifier(settings, cwd=tmp_path)
    with pytest.raises(VerifierError, match="cannot read the verifier"):
        load_verifier(settings.model_copy(update={"verifier": "missing.json"}), cwd=tmp_path)


def test_cache_calibrate_writes_a_verifier_that_cache_eval_uses(
    tmp_path: Path, planted: PlantedEmbedder, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "pairs.jsonl"
    rows = [{"text_a": p.stored, "text_b": p.query, "label": p.label} for p in planted.pairs(400)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr("budgetgraph.graph.cli_cache.build_embedder", lambda settings, env: planted)
    out = tmp_path / "v.json"

    calibrated = CliRunner().invoke(
        cache_app,
        ["calibrate", "--pairs", str(path), "--out", str(out), "--threshold", "0.8", "--min-recall", "0.8"]
        + ["--exclude-sample", "200", "--json"],
    )
    scored = CliRunner().invoke(
        cache_app,
        ["eval", "--pairs", str(path), "--sample", "200", "--threshold", "0.8", "--pairwise"]
        + ["--verifier", str(out), "--json"],
    )

    assert calibrated.exit_code == 0, calibrated.output
    report = json.loads(calibrated.stdout)
    # the pairs `cache eval --sample 200` scores, and the pairs sharing a text with them, are left out
    drawn = random.Random(0).sample([Pair(r["text_a"], r["text_b"], r["label"]) for r in rows], 200)
    seen = {p.stored for p in drawn}
    assert report["source"]["pairs"] == sum(r["text_a"] not in seen for r in rows) < 800 - 200
    assert report["source"]["excluded"] == "cache eval --sample 200 --seed 0"
    assert report["holdout"]["precision"] >= 0.95
    assert scored.exit_code == 0, scored.output
    verifier = Verifier.load(out)
    expected = evaluate(drawn, planted, threshold=0.8, guard=Guard(verifier=verifier), pairwise=True)
    assert json.loads(scored.stdout) == expected.summary()
    assert expected.precision >= 0.95


def test_cache_calibrate_needs_both_labels_and_says_so_with_exit_code_2(
    tmp_path: Path, planted: PlantedEmbedder, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "paraphrases.jsonl"
    duplicates = [p for p in planted.pairs(100) if p.label == 1]
    lines = "".join(json.dumps({"origin": p.stored, "similar": p.query}) + "\n" for p in duplicates)
    path.write_text(lines, encoding="utf-8")
    monkeypatch.setattr("budgetgraph.graph.cli_cache.build_embedder", lambda settings, env: planted)

    result = CliRunner().invoke(
        cache_app, ["calibrate", "--pairs", str(path), "--out", str(tmp_path / "v.json")]
    )

    assert result.exit_code == 2
    assert "every pair to fit on is labelled 1; need pairs of both labels" in result.output
    assert not (tmp_path / "v.json").exists()


def test_fit_refuses_a_recall_the_guard_alone_does_not_reach(planted: PlantedEmbedder):
    # every duplicate clears the threshold here, so the guard alone keeps a recall of 1.0 ...
    fit(planted.pairs(100), planted, threshold=0.8, min_recall=1.0)
    # ... and above 0.912 (the planted pairs' cosine) it keeps none
    with pytest.raises(FitError, match="keep a held-out recall of 0.000, below --min-recall 0.4"):
        fit(planted.pairs(100), planted, threshold=0.95)


def test_the_held_out_pairs_share_no_text_with_the_pairs_fitted_on(planted: PlantedEmbedder):
    # each stored request is in two pairs (its duplicate and its near miss): a fitted pair
    # whose stored request is also held out would leak, so it is left out of the fit
    fitted = fit(planted.pairs(300), planted, threshold=0.8, min_recall=0.8)
    held = fitted.source["held_out"]

    assert held == 120
    assert fitted.source["fitted_on"] < 600 - held


def test_the_cutoff_is_the_best_precision_that_keeps_the_recall():
    pool = np.array([True, True, True, True, False])
    exact = np.zeros(5, dtype=bool)
    probability = np.array([0.9, 0.8, 0.3, 0.2, 0.95])
    labels = np.array([1, 1, 0, 1, 1])

    # 0.8 serves the two pairs at 0.9 and 0.8: precision 1.0 at recall 0.5; 0.9 would drop to 0.25
    assert _cutoff(pool, exact, probability, labels, min_recall=0.5) == 0.8
    # the whole pool (cutoff 0.0) keeps 3 of the 4 duplicates, and nothing above it does
    assert _cutoff(pool, exact, probability, labels, min_recall=0.75) == 0.0
    assert _cutoff(pool, exact, probability, labels, min_recall=0.8) is None


def test_with_a_verifier_the_short_request_key_term_check_is_the_verifier_s(
    fitted: Verifier, planted: PlantedEmbedder
):
    # "fast" is added, but it is no restricting phrase: the rules serve the pair, the verifier decides
    asked, stored = "how do i learn python fast", "how do i learn python"
    duplicate = (planted.vectors[request("d", 350)], planted.vectors[request("s", 350)])
    near_miss = (planted.vectors[request("n", 350)], planted.vectors[request("s", 350)])
    guard = Guard(verifier=fitted)

    without = Guard().judge(asked, stored, 0.88, 0.8)
    served = guard.judge(asked, stored, 0.88, 0.8, duplicate)
    refused = guard.judge(asked, stored, 0.88, 0.8, near_miss)

    assert without.accepted
    assert served.accepted and "verifier" in served.reason
    assert not refused.accepted and refused.reason.startswith("verifier:") and refused.category == "verifier"
    assert guard.judge(asked, stored, 0.88, 0.8).accepted  # no vectors, no verifier


def test_fit_reports_the_guard_alone_beside_the_verifier(planted: PlantedEmbedder):
    verifier = fit(planted.pairs(300), planted, threshold=0.8, min_recall=0.8)
    held = verifier.holdout

    assert held is not None
    assert held.recall_before >= held.recall  # the verifier picks from what the checks that stand pass
    assert held.precision >= held.precision_before


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{"format": "budgetgraph.cache.verifier/3", "weights": 5}', "malformed verifier"),
        (b'{"format": "budgetgraph.cache.verifier/1"}', "fit it again"),
        (
            json.dumps(
                {
                    "format": "budgetgraph.cache.verifier/3",
                    "embedder": "e",
                    "threshold": 0.8,
                    "cutoff": "nan",
                    "bias": 0,
                    "weights": [1.0] * (3 + len(LEXICAL)),
                    "lexical": list(LEXICAL),
                }
            ).encode(),
            "`cutoff` must be 0 to 1",
        ),
        (
            b'{"format": "budgetgraph.cache.verifier/3", "embedder": "e", "threshold": 0.8, "cutoff": 0.5,'
            b' "bias": 0, "weights": [1, 2, 3]}',
            "`lexical` must be",
        ),
    ],
)
def test_a_malformed_verifier_file_is_a_verifier_error(tmp_path: Path, document: bytes, problem: str):
    path = tmp_path / "v.json"
    path.write_bytes(document)

    with pytest.raises(VerifierError, match=problem):
        Verifier.load(path)


def test_a_verifier_without_the_guard_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="`verifier` runs after the guard"):
        CacheSettings(guard=False, verifier="v.json")

    result = CliRunner().invoke(
        cache_app, ["eval", "--pairs", "x.jsonl", "--no-guard", "--verifier", "v.json"]
    )
    assert result.exit_code == 2 and "a verifier runs after the guard" in result.output


def test_outside_sample_leaves_out_the_draw_and_every_pair_sharing_a_text_with_it():
    pairs = [Pair(f"a{i}", f"b{i}", 1) for i in range(20)]
    pairs += [Pair("x", "b3", 0), Pair("b5", "y", 0), Pair("A0", "z", 1), Pair("p", "q", 0)]
    drawn = random.Random(0).sample(pairs, 10)
    texts = {t.lower() for p in drawn for t in (p.stored, p.query)}

    left = outside_sample(pairs, 10, 0)

    assert left == [p for p in pairs if p not in drawn and not {p.stored.lower(), p.query.lower()} & texts]
    assert all(p not in left for p in drawn) and len(left) < len(pairs) - 10
    assert outside_sample(pairs, len(pairs), 0) == []


def test_the_word_overlap_features_of_a_pair():
    found = lexical_features(
        features("How do I move 3 servers to Azure?"), features("What does it cost to move 4 servers to AWS?")
    )
    named = dict(zip(LEXICAL, found.tolist(), strict=True))

    assert named["content_jaccard"] == pytest.approx(2 / 5)  # move, server of move, server, azure, cost, aws
    assert named["only_query"] == pytest.approx(np.log1p(1)) and named["only_stored"] == pytest.approx(
        np.log1p(2)
    )
    assert named["names_differ"] == named["numbers_differ"] == named["question_word_differs"] == 1.0
    assert named["negation_differs"] == 0.0


def test_a_version_2_file_is_refused_to_be_fitted_again(tmp_path: Path):
    path = tmp_path / "v2.json"
    document = {"format": "budgetgraph.cache.verifier/2", "embedder": "e", "threshold": 0.8, "cutoff": 0.5}
    path.write_text(json.dumps({**document, "bias": -6.0, "weights": [0.0] * 33}), encoding="utf-8")

    with pytest.raises(VerifierError, match="fit it again"):
        Verifier.load(path)


def test_a_confirmation_band_asks_under_its_high_end_even_under_its_low_end():
    from budgetgraph.budgets.cache.config import ConfirmSettings

    band = ConfirmSettings(band=(0.78, 0.9))

    assert band.asks(0.8) and band.asks(0.55)  # 0.55: abbreviations written out, under the threshold
    assert not band.asks(0.9) and not band.asks(0.97)
