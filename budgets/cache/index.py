"""The vector index: inner product over L2-normalised vectors (so scores are cosines).

Small indexes are exact: the vectors in one numpy matrix, scanned with one
matrix-vector product (:class:`_Exact`). FAISS is imported only when an
index outgrows that: its libraries take about 16 MB of resident memory and
35 ms to import, which a run with a small cache never needs, and its exact
``IndexIDMap2(IndexFlatIP)`` was no faster (one 384-dimension query: 16 /
45 / 89 us against FAISS's 10 / 42 / 160 us at 10 / 1,000 / 4,096 vectors,
p50 on the 2-core benchmark machine). Past :attr:`FaissIndex.exact_limit`
vectors a flat scan costs more than a millisecond (about 0.9 ms at 10k
vectors of 384 dimensions on one core), so
the index becomes a FAISS inverted file with ``nlist`` about ``n / 256`` cells
trained by k-means on a sample of the vectors it holds, and ``nprobe`` cells
(about 2k vectors) scanned per lookup. The cells hold the vectors as float16
(``IndexIVFScalarQuantizer``, ``QT_fp16``): a lookup is memory-bound, and
half the bytes made it 1.5x faster at 100k vectors (0.42 -> 0.28 ms on the
2-core benchmark machine) with the same neighbours found; scores are then
within about 1e-3 of the cosine, and
:class:`~budgetgraph.budgets.cache.cache.SemanticCache` scores its candidates again on
their stored float32 vectors. IVF was chosen over HNSW because the cache
evicts all the time and IVF removes ids in place (HNSW cannot), and because
it retrains in seconds where an HNSW graph of 100k vectors takes minutes to
build. The index retrains when it has grown fourfold since its last training.

FAISS searches run on one thread: a single-query search is memory-bound, and
OpenMP threads only add scheduling delay under load.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from budgetgraph.budgets.cache.base import Matrix, Vector

if TYPE_CHECKING:
    import faiss

logger = logging.getLogger(__name__)

EXACT_MAGIC = b"budgetgraph-exact-index 1\n"
"""First line of the body of an exact index's snapshot (then ``np.save`` of the ids and of the
vectors); any other body is FAISS's own format."""

_faiss_threads_set = False


def _faiss() -> Any:
    """The ``faiss`` module, imported on first use and set to one OpenMP thread."""
    global _faiss_threads_set
    import faiss

    if not _faiss_threads_set:
        faiss.omp_set_num_threads(1)
        _faiss_threads_set = True
    return faiss


class _Exact:
    """Vectors by id in one growing numpy matrix; a search scans all of them.

    Rows are kept dense: removing an id moves the last row into its place.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._rows: dict[int, int] = {}

    def add(self, ids: list[int], vectors: Matrix) -> None:
        """Add ``vectors`` under ``ids`` (none of them present)."""
        end = self.n + len(ids)
        if end > len(self._ids):
            capacity = max(16, end, 2 * len(self._ids))
            grown = np.zeros((capacity, self.dim), dtype=np.float32)
            grown[: self.n] = self._vectors[: self.n]
            self._vectors = grown
            self._ids = np.resize(self._ids, capacity)
        self._vectors[self.n : end] = vectors
        self._ids[self.n : end] = ids
        self._rows.update((entry_id, self.n + k) for k, entry_id in enumerate(ids))
        self.n = end

    def remove(self, ids: list[int]) -> None:
        """Remove ``ids`` (all of them present)."""
        for entry_id in ids:
            row = self._rows.pop(entry_id)
            last = self.n - 1
            if row != last:
                moved = int(self._ids[last])
                self._ids[row] = moved
                self._vectors[row] = self._vectors[last]
                self._rows[moved] = row
            self.n = last

    def search(self, query: Vector, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids and scores of the ``k`` highest inner products with ``query``, highest first."""
        if k <= 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        scores = self._vectors[: self.n] @ query
        if k < self.n:
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        return self._ids[top], scores[top]

    def items(self) -> tuple[np.ndarray, Matrix]:
        """Copies of the ids and their vectors, row by row."""
        return self._ids[: self.n].copy(), self._vectors[: self.n].copy()

    def to_bytes(self) -> bytes:
        """The snapshot body: :data:`EXACT_MAGIC`, then ``np.save`` of the ids and of the vectors."""
        buffer = io.BytesIO()
        buffer.write(EXACT_MAGIC)
        ids, vectors = self.items()
        np.save(buffer, ids, allow_pickle=False)
        np.save(buffer, vectors, allow_pickle=False)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, body: bytes) -> _Exact:
        """Read :meth:`to_bytes`' output.

        Raises:
            ValueError: ``body`` is not one.
        """
        buffer = io.BytesIO(body)
        if buffer.read(len(EXACT_MAGIC)) != EXACT_MAGIC:
            raise ValueError("not an exact index")
        ids = np.load(buffer, allow_pickle=False)
        vectors = np.load(buffer, allow_pickle=False)
        if ids.ndim != 1 or vectors.ndim != 2 or len(ids) != len(vectors) or buffer.read(1):
            raise ValueError("the ids and vectors do not match")
        exact = cls(vectors.shape[1])
        exact.add([int(i) for i in ids], vectors.astype(np.float32, copy=False))
        return exact


class FaissIndex:
    """Vectors by entry id: add, remove, search the nearest, save and load.

    Args:
        dim: Vector dimension.
        exact_limit: Up to this many vectors the search is exact.
        cell_size: Vectors per IVF cell aimed at when training (``nlist = n / cell_size``).
        probe_vectors: Vectors an IVF search aims to scan (``nprobe = probe_vectors / cell_size``).

    Exact (:class:`_Exact`, numpy) up to ``exact_limit`` vectors, a FAISS
    ``IndexIVFScalarQuantizer`` past it; FAISS is imported then.

    Not thread-safe on its own; :class:`~budgetgraph.budgets.cache.cache.SemanticCache` locks around it.
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_limit: int = 4096,
        cell_size: int = 256,
        probe_vectors: int = 2048,
    ) -> None:
        self.dim = dim
        self.exact_limit = exact_limit
        self.cell_size = cell_size
        self.probe_vectors = probe_vectors
        self._index: _Exact | faiss.IndexIVF = _Exact(dim)
        self._ids: set[int] = set()
        self._trained_at = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._ids

    @property
    def kind(self) -> str:
        """``flat`` (exact) or ``ivf`` (approximate)."""
        return "flat" if self._trained_at == 0 else "ivf"

    def add(self, ids: list[int], vectors: Matrix) -> None:
        """Add ``vectors`` (shape ``(len(ids), dim)``) under ``ids``; ids already present are replaced.

        Raises:
            ValueError: The shapes do not match ``dim``.
        """
        if not ids:
            return
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if matrix.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got {matrix.shape[1]}")
        present = [i for i in ids if i in self._ids]
        if present:
            self.remove(present)
        last: dict[int, int] = {entry_id: row for row, entry_id in enumerate(ids)}  # a repeated id: the last
        if len(last) < len(ids):
            ids, matrix = list(last), matrix[list(last.values())]
        if isinstance(self._index, _Exact):
            self._index.add(ids, matrix)
        else:
            self._index.add_with_ids(matrix, np.asarray(ids, dtype=np.int64))
        self._ids.update(ids)
        self._maybe_retrain()

    def remove(self, ids: list[int]) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        known = list(dict.fromkeys(i for i in ids if i in self._ids))
        if not known:
            return
        if isinstance(self._index, _Exact):
            self._index.remove(known)
        else:
            self._index.remove_ids(np.asarray(known, dtype=np.int64))  # type: ignore[arg-type]  # SWIG wrapper
        self._ids.difference_update(known)
        if self._trained_at and len(self._ids) < self.exact_limit // 2:
            self._rebuild(flat=True)

    def clear(self) -> None:
        """Remove every vector."""
        self._index = _Exact(self.dim)
        self._ids.clear()
        self._trained_at = 0

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` ``(id, cosine)`` pairs, nearest first."""
        if not self._ids:
            return []
        k = min(k, len(self._ids))
        if isinstance(self._index, _Exact):
            found, scores = self._index.search(np.asarray(vector, dtype=np.float32).reshape(-1), k)
            return [(int(i), float(s)) for i, s in zip(found, scores, strict=True)]
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def save(self, path: Path, meta: Mapping[str, Any]) -> None:
        """Write the index and ``meta`` to ``path`` as one file, replaced atomically.

        The file is one line of JSON (``meta`` plus ``dim``) followed by the
        index: an exact one as :data:`EXACT_MAGIC` and two ``.npy`` arrays (ids,
        vectors), an inverted file in FAISS's own binary format. One file, so a
        reader never pairs an index with another writer's metadata.

        Raises:
            OSError: The file cannot be written.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({**meta, "dim": self.dim}, separators=(",", ":")).encode() + b"\n"
        if isinstance(self._index, _Exact):
            data = self._index.to_bytes()
        else:
            data = _faiss().serialize_index(self._index).tobytes()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(header + data)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, **options: int) -> tuple[FaissIndex, dict[str, Any]]:
        """Read a file written by :meth:`save` (FAISS is imported only for an inverted file).

        A FAISS exact index (``IndexIDMap2``), as earlier versions saved small
        indexes, is read into an exact one.

        Returns:
            The index and the ``meta`` saved with it (``dim`` included).

        Raises:
            OSError: The file cannot be read.
            ValueError: The file is not a snapshot written by :meth:`save`.
        """
        raw_file = path.read_bytes()
        head, newline, body = raw_file.partition(b"\n")
        try:
            meta = json.loads(head) if newline else None
            if not isinstance(meta, dict):
                raise ValueError("no metadata line")
            dim = int(meta["dim"])
            index = cls(dim, **options)
            if body.startswith(EXACT_MAGIC):
                exact = _Exact.from_bytes(body)
                _check_dim(path, exact.dim, dim)
                index._index, index._ids = exact, set(exact.items()[0].tolist())
                return index, meta
            faiss = _faiss()
            raw = faiss.deserialize_index(np.frombuffer(body, dtype=np.uint8))
            _check_dim(path, raw.d, dim)
            ids = _ids_of(raw)
            if isinstance(raw, faiss.IndexIVF):
                raw.nprobe = index._nprobe(raw.nlist)
                index._index, index._ids = raw, set(ids)
                index._trained_at = max(len(index._ids), index.exact_limit)
            elif ids:  # a FAISS exact index, as earlier versions saved small ones
                index.add(ids, np.vstack([raw.reconstruct(i) for i in ids]))
        except _DimensionError:
            raise
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read the index `{path}`: {exc}") from exc
        return index, meta

    def _maybe_retrain(self) -> None:
        n = len(self._ids)
        if self._trained_at == 0 and n > self.exact_limit:
            self._rebuild(flat=False)
        elif self._trained_at and n > 4 * self._trained_at:
            self._rebuild(flat=False)

    def _nprobe(self, nlist: int) -> int:
        return max(1, min(nlist, math.ceil(self.probe_vectors / self.cell_size)))

    def _rebuild(self, *, flat: bool) -> None:
        if isinstance(self._index, _Exact):
            ids, vectors = self._index.items()
        else:
            ids = np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))
            vectors = np.vstack([self._index.reconstruct(int(i)) for i in ids]).astype(np.float32)
        if flat:
            exact = _Exact(self.dim)
            exact.add(ids.tolist(), vectors)
            self._index = exact
            self._trained_at = 0
        else:
            faiss = _faiss()
            nlist = max(16, len(ids) // self.cell_size)
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
            ivf.cp.max_points_per_centroid = 32  # k-means on a sample: seconds, not minutes
            ivf.cp.niter = 10
            ivf.train(vectors)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            ivf.nprobe = self._nprobe(nlist)
            ivf.add_with_ids(vectors, ids)
            self._index = ivf
            self._trained_at = len(ids)
            logger.info("Cache index retrained: %d vectors in %d cells", len(ids), nlist)


class _DimensionError(ValueError):
    """A snapshot whose index has another dimension than its header says."""


def _check_dim(path: Path, found: int, expected: int) -> None:
    if found != expected:
        raise _DimensionError(f"the index `{path}` has dimension {found}, expected {expected}")


def _ids_of(index: faiss.Index) -> list[int]:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        return [int(i) for i in faiss.vector_to_array(index.id_map)]
    if isinstance(index, faiss.IndexIVF):
        invlists = index.invlists
        assert invlists is not None
        ids: list[int] = []
        for cell in range(index.nlist):
            size = invlists.list_size(cell)
            if size:
                ptr = invlists.get_ids(cell)
                ids.extend(int(i) for i in faiss.rev_swig_ptr(ptr, size))
        return ids
    raise ValueError(f"unsupported index type {type(index).__name__}")


__all__ = ["FaissIndex"]
