"""The ONNX embedder: sentence-transformers' vectors without torch, from a file exported once.

Nothing here imports torch in the test process: the export and the
sentence-transformers reference each run in a child process, and only
``test_onnx_vectors_match_sentence_transformers_to_a_cosine_of_0_999`` needs
torch at all (it is skipped where sentence-transformers is not installed).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budgetgraph.budgets.cache import onnx_export
from budgetgraph.budgets.cache.embedders import LocalEmbedder, SentenceTransformerEmbedder
from budgetgraph.budgets.cache.onnx_export import ExportError, export, onnx_path, packaged_model_dir

DATA = Path(__file__).resolve().parents[5] / "shared" / "data" / "semantic-cache"
HEAVY = ("torch", "sentence_transformers", "transformers")

# Run in a child: embed with LocalEmbedder, report what was imported (an import hook sees
# even a failed attempt) and the vector.
EMBED_AND_REPORT = """
import importlib.abc, json, sys
attempted = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            attempted.append(name)
        return None
sys.meta_path.insert(0, Watch())
from budgetgraph.budgets.cache.embedders import LocalEmbedder
vector = LocalEmbedder(onnx_dir=sys.argv[1]).embed([sys.argv[2]])[0]
print(json.dumps({{
    "attempted": sorted(set(attempted)),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}),
    "onnxruntime": "onnxruntime" in sys.modules,
    "vector": vector.tolist(),
}}))
""".format(heavy=set(HEAVY))


def run_child(onnx_dir: Path, text: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", EMBED_AND_REPORT, str(onnx_dir), text],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def first_use(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A first embedding in a fresh process with no ONNX file: it exports (once a session)."""
    onnx_dir = tmp_path_factory.mktemp("onnx")
    return onnx_dir, run_child(onnx_dir, "How do I reset my account password?")


@pytest.fixture(scope="session")
def onnx_dir(first_use: tuple[Path, dict[str, Any]]) -> Path:
    """A folder holding the export of the packaged model."""
    return first_use[0]


def sample_texts() -> list[str]:
    """A fixed sample (seed 0): paraphrase and QQP texts where the data is, and edge cases."""
    texts = [
        "",
        "   leading and trailing spaces   ",
        "What is the cost of living in Austin compared to other cities in Texas?",
        "Café, naïve façade — résumé; 東京 の 天気 は？ 🙂",
        "UPPER case and lower CASE",
        " ".join(["budget"] * 300),  # over 256 word pieces: truncated as sentence-transformers does
    ]
    if (DATA / "paraphrase_pairs.jsonl").exists():
        rows = [json.loads(line) for line in (DATA / "paraphrase_pairs.jsonl").open(encoding="utf-8")]
        texts += [t for row in random.Random(0).sample(rows, 10) for t in (row["origin"], row["similar"])]
    if (DATA / "qqp_pairs.jsonl.gz").exists():
        with gzip.open(DATA / "qqp_pairs.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for _, line in zip(range(5000), handle, strict=False)]
        texts += [t for row in random.Random(0).sample(rows, 10) for t in (row["text_a"], row["text_b"])]
    return texts


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="needs sentence-transformers (torch)"
)
def test_onnx_vectors_match_sentence_transformers_to_a_cosine_of_0_999(onnx_dir: Path, tmp_path: Path):
    texts = sample_texts()
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    reference = (
        "import json, sys, numpy as np\n"
        "from budgetgraph.budgets.cache.embedders import SentenceTransformerEmbedder\n"
        "texts = json.load(open(sys.argv[1], encoding='utf-8'))\n"
        "np.save(sys.argv[2], SentenceTransformerEmbedder().embed(texts))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", reference, str(tmp_path / "texts.json"), str(tmp_path / "st.npy")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    expected = np.load(tmp_path / "st.npy")
    got = LocalEmbedder(onnx_dir=onnx_dir).embed(texts)

    assert got.shape == expected.shape == (len(texts), 384) and got.dtype == np.float32
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= 0.999, [texts[i][:60] for i in np.flatnonzero(cosines < 0.999)]
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_first_use_without_the_file_exports_it_in_a_child_and_never_imports_torch_itself(
    first_use: tuple[Path, dict[str, Any]],
):
    onnx_dir, report = first_use

    assert [p.name for p in onnx_dir.iterdir()] == [onnx_path(onnx_dir=onnx_dir).name]
    assert report["attempted"] == [] and report["loaded"] == []
    assert report["onnxruntime"] and len(report["vector"]) == 384


def test_a_run_with_the_onnx_file_present_never_imports_torch_or_sentence_transformers(onnx_dir: Path):
    path = onnx_path(onnx_dir=onnx_dir)
    before = path.stat().st_mtime_ns
    text = "Should we migrate billing to microservices before the audit?"

    report = run_child(onnx_dir, text)

    assert report["attempted"] == [] and report["loaded"] == []
    assert report["onnxruntime"]
    assert path.stat().st_mtime_ns == before
    here = LocalEmbedder(onnx_dir=onnx_dir).embed([text])[0]
    assert float(np.dot(here, np.asarray(report["vector"], dtype=np.float32))) > 0.99999


def test_a_second_export_reuses_the_file_without_exporting_again(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    path = onnx_path(onnx_dir=onnx_dir)
    before = path.stat().st_mtime_ns

    def refuse(model_dir: Path, target: Path) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "_export_to", refuse)

    assert export(onnx_dir=onnx_dir) == path
    assert onnx_export.export_in_subprocess(onnx_dir=onnx_dir) == path
    assert path.stat().st_mtime_ns == before


def a_model_copy(folder: Path, weights: bytes) -> Path:
    """The packaged model's configuration with other weights (a new package version, say)."""
    source = packaged_model_dir()
    (folder / "1_Pooling").mkdir(parents=True)
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "tokenizer.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def fake_export(model_dir: Path, target: Path) -> None:
    target.write_bytes(b"onnx of " + (model_dir / "model.safetensors").read_bytes())


def test_export_is_keyed_by_the_weights_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(onnx_export, "_export_to", fake_export)
    old = a_model_copy(tmp_path / "v1" / "minilm", b"old weights")
    new = a_model_copy(tmp_path / "v2" / "minilm", b"new weights")

    first, second = export(old, tmp_path / "onnx"), export(new, tmp_path / "onnx")

    assert first != second
    digest = hashlib.sha256(b"old weights").hexdigest()[:16]
    assert first.name == f"minilm-{digest}.r{onnx_export.RECIPE}.onnx"
    assert second.read_bytes() == b"onnx of new weights" and first.read_bytes() == b"onnx of old weights"


def test_the_packaged_weights_hash_read_from_the_install_record_is_the_files(monkeypatch: pytest.MonkeyPatch):
    folder = packaged_model_dir()
    with (folder / "model.safetensors").open("rb") as handle:
        computed = hashlib.file_digest(handle, "sha256").hexdigest()

    assert onnx_export.weights_sha256(folder) == computed
    monkeypatch.setattr(onnx_export, "_recorded_sha256", lambda path: None)
    assert onnx_export.weights_sha256(folder) == computed


def test_a_failed_export_leaves_neither_the_file_nor_a_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def half_then_fail(model_dir: Path, target: Path) -> None:
        target.write_bytes(b"half a model")
        raise ExportError("the export disagrees with torch")

    monkeypatch.setattr(onnx_export, "_export_to", half_then_fail)
    model = a_model_copy(tmp_path / "minilm", b"weights")

    with pytest.raises(ExportError, match="disagrees"):
        export(model, tmp_path / "onnx")

    assert list((tmp_path / "onnx").iterdir()) == []


def test_concurrent_exports_end_with_one_complete_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    started = threading.Barrier(4)

    def slow_export(model_dir: Path, target: Path) -> None:
        started.wait(timeout=10)
        with target.open("wb") as handle:
            for _ in range(64):
                handle.write(b"x" * 4096)
                handle.flush()

    monkeypatch.setattr(onnx_export, "_export_to", slow_export)
    model = a_model_copy(tmp_path / "minilm", b"weights")
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(export(model, tmp_path / "onnx"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(set(paths)) == 1 and len(paths) == 4
    assert os.listdir(tmp_path / "onnx") == [paths[0].name]
    assert paths[0].stat().st_size == 64 * 4096


def test_a_model_that_does_not_mean_pool_is_refused_by_name(tmp_path: Path):
    model = a_model_copy(tmp_path / "cls-model", b"weights")
    (model / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}), encoding="utf-8"
    )

    with pytest.raises(ExportError, match=r"`.*cls-model` pools with \['pooling_mode_cls_token'\]"):
        export(model, tmp_path / "onnx")
    with pytest.raises(ExportError, match="mean pooling only"):
        LocalEmbedder(model, onnx_dir=tmp_path / "onnx").embed(["text"])


def test_texts_come_back_in_their_order_whatever_the_batching(onnx_dir: Path):
    texts = [" ".join(["word"] * n) + f" number {n}" for n in (3, 40, 1, 17, 80, 5, 2)]
    one_by_one = np.vstack([LocalEmbedder(onnx_dir=onnx_dir).embed([t]) for t in texts])

    batched = LocalEmbedder(onnx_dir=onnx_dir, batch_size=3).embed(texts)

    assert np.allclose(batched, one_by_one, atol=1e-5)
    assert LocalEmbedder(onnx_dir=onnx_dir).embed([]).shape == (0, 384)


def test_a_text_embedded_again_by_any_embedder_of_the_model_reuses_its_vector(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    runs: list[list[str]] = []
    forward = LocalEmbedder._forward
    monkeypatch.setattr(
        LocalEmbedder, "_forward", lambda self, texts: runs.append(list(texts)) or forward(self, texts)
    )
    text = "Should we move our billing service to microservices this year? (reused vector)"

    first = LocalEmbedder(onnx_dir=onnx_dir).embed([text])
    again = LocalEmbedder(onnx_dir=onnx_dir).embed([text])  # the router's, then the cache's
    batch = LocalEmbedder(onnx_dir=onnx_dir).embed([text, "another text"])

    assert runs == [[text], [text, "another text"]]  # batches always run the model
    assert np.array_equal(first, again) and np.allclose(batch[0], first[0], atol=1e-5)
    again[0, 0] = 9.0  # a caller's copy: the kept vector stays as it was
    assert np.array_equal(LocalEmbedder(onnx_dir=onnx_dir).embed([text]), first)


def test_embedders_of_one_file_share_one_session_opened_once_under_concurrency(onnx_dir: Path):
    embedders = [LocalEmbedder(onnx_dir=onnx_dir, threads=1) for _ in range(4)]
    threads = [threading.Thread(target=e.embed, args=(["concurrent first use"],)) for e in embedders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    sessions = {id(e._loaded()[0]) for e in embedders}
    assert len(sessions) == 1


def test_both_local_embedders_share_the_cache_namespace_name():
    assert LocalEmbedder().name == SentenceTransformerEmbedder().name == "local:all-MiniLM-L6-v2"
    assert LocalEmbedder(onnx_dir="/elsewhere").name == "local:all-MiniLM-L6-v2"


def test_fits_counts_word_pieces_without_opening_the_model(tmp_path: Path):
    embedder = LocalEmbedder(onnx_dir=tmp_path / "never-written")

    assert embedder.fits("a short request")
    assert not embedder.fits(" ".join(["budget"] * 300))
    assert not (tmp_path / "never-written").exists()
