"""The cache with the real local embedder (all-MiniLM-L6-v2): paraphrases hit, near misses do not."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from budgetgraph.budgets.cache import DEFAULT_THRESHOLD, Guard, SemanticCache
from budgetgraph.budgets.cache.base import exact_key
from budgetgraph.budgets.cache.embedders import LocalEmbedder
from budgetgraph.budgets.cache.stores.memory import MemoryStore
from budgetgraph.budgets.cachetune.evaluate import Pair, evaluate
from budgetgraph.graph.cli_cache import cache_app
from tests.unit.budgets.cache.test_cache import namespace

DATA = Path(__file__).resolve().parents[5] / "shared" / "data" / "semantic-cache"


def cache_with(embedder: LocalEmbedder, stored: str, guard: bool = True) -> SemanticCache:
    cache = SemanticCache(MemoryStore(), embedder, guard=Guard(enabled=guard))
    cache.put(namespace(), key=exact_key(stored), text=stored, response={"answer": stored}, model="m")
    return cache


def ask(cache: SemanticCache, text: str):
    return cache.lookup(namespace(), key=exact_key(text), text=text, threshold=DEFAULT_THRESHOLD)


def test_a_paraphrase_is_served_from_the_cache(local_embedder: LocalEmbedder):
    cache = cache_with(local_embedder, "How do I reset my account password?")

    found = ask(cache, "How can I reset the password of my account?")

    assert found.outcome == "semantic" and found.similarity > 0.95
    assert found.entry.response == {"answer": "How do I reset my account password?"}


NEAR_MISSES = {
    "numbers": (
        "Should we migrate billing to microservices with 6 engineers before the PCI audit in 4 months?",
        "Should we migrate billing to microservices with 4 engineers before the PCI audit in 4 months?",
        "quantity: 4 vs 6",
    ),
    "negation": (
        "Why do customers like our new onboarding flow?",
        "Why don't customers like our new onboarding flow?",
        "negation: `don't` in the new request only",
    ),
    "entities": (
        "What is the cost of living in Austin compared to other cities in Texas?",
        "What is the cost of living in Dallas compared to other cities in Texas?",
        "actor: `Austin` vs `Dallas`",
    ),
}


@pytest.mark.parametrize("kind", list(NEAR_MISSES))
def test_the_guard_refuses_a_near_miss_that_cosine_alone_would_serve(
    local_embedder: LocalEmbedder, kind: str
):
    stored, query, reason = NEAR_MISSES[kind]

    guarded = ask(cache_with(local_embedder, stored), query)
    unguarded = ask(cache_with(local_embedder, stored, guard=False), query)

    assert guarded.similarity >= DEFAULT_THRESHOLD  # above the threshold: the guard refused it
    assert guarded.outcome == "miss" and guarded.refused and guarded.reason.startswith(reason)
    assert unguarded.outcome == "semantic"


def qqp_sample(n: int) -> list[dict]:
    with gzip.open(DATA / "qqp_pairs.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return random.Random(0).sample(rows, n)


needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"evaluation data not found at {DATA}")


@needs_data
def test_cache_eval_scores_a_fixed_paraphrase_sample(tmp_path: Path, local_embedder: LocalEmbedder):
    lines = (DATA / "paraphrase_pairs.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = CliRunner().invoke(cache_app, ["eval", "--pairs", str(pairs), "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report) == [
        "hits",
        "correct_hits",
        "false_hits",
        "misses",
        "precision",
        "recall",
        "refusals_by",
    ]
    assert report["hits"] + report["misses"] == 50
    assert report["correct_hits"] + report["false_hits"] == report["hits"]
    assert report["precision"] == round(report["correct_hits"] / report["hits"], 4)
    # The span guard refuses more reworded paraphrases than the old key-term rules did
    # (full file: hit rate 0.858 -> 0.766 at the same precision); the sample keeps 0.78.
    assert report["precision"] >= 0.95 and report["recall"] >= 0.75


@needs_data
def test_cache_eval_reads_gzipped_labelled_pairs_and_the_guard_cuts_false_hits(
    tmp_path: Path, local_embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
):
    sample = qqp_sample(80)
    path = tmp_path / "qqp.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in sample)
    pairs = [Pair(stored=r["text_a"], query=r["text_b"], label=r["label"]) for r in sample]
    embedder = Remembering(local_embedder)
    monkeypatch.setattr("budgetgraph.graph.cli_cache.build_embedder", lambda settings, env: embedder)

    cli = CliRunner().invoke(cache_app, ["eval", "--pairs", str(path), "--threshold", "0.8", "--json"])
    guarded = evaluate(pairs, embedder, threshold=0.8)
    cosine = evaluate(pairs, embedder, threshold=0.8, guard=Guard(enabled=False))

    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == guarded.summary()
    assert guarded.positives == sum(r["label"] for r in sample)
    assert guarded.false_hits < cosine.false_hits
    assert guarded.precision > cosine.precision

    # --sample draws the pairs as random.Random(seed).sample does, so a sample's figures can be checked.
    drawn = CliRunner().invoke(
        cache_app,
        ["eval", "--pairs", str(path), "--threshold", "0.8", "--sample", "30", "--seed", "7", "--json"],
    )
    expected = evaluate(random.Random(7).sample(pairs, 30), embedder, threshold=0.8).summary()
    assert json.loads(drawn.stdout) == expected and expected["hits"] + expected["misses"] == 30


class Remembering:
    """Embeds each text once (two evaluations of one sample share the vectors)."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner, self.name, self.seen = inner, inner.name, {}

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)

    def embed(self, texts):
        missing = [t for t in texts if t not in self.seen]
        if missing:
            self.seen.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.vstack([self.seen[t] for t in texts])


def test_cache_eval_rejects_a_bad_pairs_file_with_exit_code_2(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"origin": "a", "similar": "b"}\n{"text_a": "a"}\n', encoding="utf-8")

    result = CliRunner().invoke(cache_app, ["eval", "--pairs", str(path), "--json"])

    assert result.exit_code == 2
    error = json.loads(result.stdout.splitlines()[0])["error"]
    assert error["type"] == "BadInput" and error["message"].startswith(f"{path}:2: expected")
