"""The FAISS index: exact while small, an inverted file when large, ids removable, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from budgetgraph.budgets.cache.index import FaissIndex


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_returns_the_nearest_ids_with_their_cosines():
    x = unit_vectors(50)
    index = FaissIndex(16)
    index.add(list(range(100, 150)), x)

    (best, score), *_ = index.search(x[7], 3)

    assert best == 107 and score == pytest.approx(1.0, abs=1e-5)
    assert len(index.search(x[7], 3)) == 3 and index.kind == "flat"


def test_removed_and_replaced_ids_are_not_found_again():
    x = unit_vectors(10)
    index = FaissIndex(16)
    index.add(list(range(10)), x)

    index.remove([3, 42])
    index.add([4], x[5:6])  # id 4 now holds vector 5

    assert 3 not in index and len(index) == 9
    assert all(i != 3 for i, _ in index.search(x[3], 9))
    assert index.search(x[5], 2)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert {i for i, _ in index.search(x[5], 2)} == {4, 5}


def test_a_large_index_becomes_an_inverted_file_and_still_finds_its_vectors():
    x = unit_vectors(3000, seed=1)
    index = FaissIndex(16, exact_limit=500, cell_size=64, probe_vectors=3000)
    index.add(list(range(3000)), x)

    assert index.kind == "ivf"
    assert all(index.search(x[i], 1)[0][0] == i for i in range(0, 3000, 97))
    index.remove(list(range(2800)))
    assert index.kind == "flat" and len(index) == 200  # shrank below half the limit: exact again


def test_the_index_is_saved_and_loaded_with_its_ids(tmp_path: Path):
    x = unit_vectors(800, seed=2)
    for limit in (10_000, 100):  # flat, then IVF
        index = FaissIndex(16, exact_limit=limit, cell_size=32, probe_vectors=800)
        index.add(list(range(1000, 1800)), x)
        path = tmp_path / f"{limit}.faiss"
        index.save(path, {"cursor": "c-7"})

        loaded, meta = FaissIndex.load(path, exact_limit=limit, cell_size=32, probe_vectors=800)

        assert meta == {"cursor": "c-7", "dim": 16}
        assert loaded.kind == index.kind and len(loaded) == 800
        assert loaded.search(x[5], 1)[0][0] == 1005
        loaded.remove([1005])
        assert loaded.search(x[5], 1)[0][0] != 1005


def test_a_file_that_is_not_a_snapshot_or_disagrees_with_its_header_fails_to_load(tmp_path: Path):
    index = FaissIndex(16)
    index.add([1], unit_vectors(1))
    index.save(tmp_path / "i.faiss", {})
    body = (tmp_path / "i.faiss").read_bytes().partition(b"\n")[2]
    (tmp_path / "wrong-dim.faiss").write_bytes(b'{"dim":32}\n' + body)
    (tmp_path / "bare.faiss").write_bytes(body)

    with pytest.raises(ValueError, match="dimension 16, expected 32"):
        FaissIndex.load(tmp_path / "wrong-dim.faiss")
    with pytest.raises(ValueError, match="cannot read"):
        FaissIndex.load(tmp_path / "bare.faiss")
    assert not list(tmp_path.glob("*.tmp"))
