"""The vector index: FAISS inner product over L2-normalised vectors (so scores are cosines).

Small indexes are exact (``IndexIDMap2`` over ``IndexFlatIP``). Past
:attr:`FaissIndex.exact_limit` vectors a flat scan costs more than a
millisecond (about 0.9 ms at 10k vectors of 384 dimensions on one core), so
the index becomes an inverted file with ``nlist`` about ``n / 256`` cells
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

import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from budgetgraph.budgets.cache.base import Matrix, Vector

logger = logging.getLogger(__name__)

_faiss_threads_set = False


def _single_threaded() -> None:
    global _faiss_threads_set
    if not _faiss_threads_set:
        faiss.omp_set_num_threads(1)
        _faiss_threads_set = True


class FaissIndex:
    """Vectors by entry id: add, remove, search the nearest, save and load.

    Args:
        dim: Vector dimension.
        exact_limit: Up to this many vectors the search is exact.
        cell_size: Vectors per IVF cell aimed at when training (``nlist = n / cell_size``).
        probe_vectors: Vectors an IVF search aims to scan (``nprobe = probe_vectors / cell_size``).

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
        _single_threaded()
        self.dim = dim
        self.exact_limit = exact_limit
        self.cell_size = cell_size
        self.probe_vectors = probe_vectors
        self._index: faiss.Index = self._flat()
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
        self._index.add_with_ids(matrix, np.asarray(ids, dtype=np.int64))
        self._ids.update(ids)
        self._maybe_retrain()

    def remove(self, ids: list[int]) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        known = [i for i in ids if i in self._ids]
        if not known:
            return
        self._index.remove_ids(np.asarray(known, dtype=np.int64))  # type: ignore[arg-type]  # SWIG wrapper
        self._ids.difference_update(known)
        if self._trained_at and len(self._ids) < self.exact_limit // 2:
            self._rebuild(flat=True)

    def clear(self) -> None:
        """Remove every vector."""
        self._index = self._flat()
        self._ids.clear()
        self._trained_at = 0

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` ``(id, cosine)`` pairs, nearest first."""
        if not self._ids:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, min(k, len(self._ids)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def save(self, path: Path, meta: Mapping[str, Any]) -> None:
        """Write the index and ``meta`` to ``path`` as one file, replaced atomically.

        The file is one line of JSON (``meta`` plus ``dim``) followed by the
        index in FAISS's own binary format, so a reader never pairs an index
        with another writer's metadata.

        Raises:
            OSError: The file cannot be written.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({**meta, "dim": self.dim}, separators=(",", ":")).encode() + b"\n"
        data = faiss.serialize_index(self._index)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(header + data.tobytes())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, **options: int) -> tuple[FaissIndex, dict[str, Any]]:
        """Read a file written by :meth:`save`.

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
            raw = faiss.deserialize_index(np.frombuffer(body, dtype=np.uint8))
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read the index `{path}`: {exc}") from exc
        if raw.d != dim:
            raise ValueError(f"the index `{path}` has dimension {raw.d}, expected {dim}")
        index = cls(dim, **options)
        index._index = raw
        index._ids = set(_ids_of(raw))
        if isinstance(raw, faiss.IndexIVF):
            raw.nprobe = index._nprobe(raw.nlist)
            index._trained_at = max(len(index._ids), index.exact_limit)
        return index, meta

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _maybe_retrain(self) -> None:
        n = len(self._ids)
        if self._trained_at == 0 and n > self.exact_limit:
            self._rebuild(flat=False)
        elif self._trained_at and n > 4 * self._trained_at:
            self._rebuild(flat=False)

    def _nprobe(self, nlist: int) -> int:
        return max(1, min(nlist, math.ceil(self.probe_vectors / self.cell_size)))

    def _rebuild(self, *, flat: bool) -> None:
        ids = np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))
        vectors = np.vstack([self._index.reconstruct(int(i)) for i in ids]).astype(np.float32)
        if flat:
            index = self._flat()
            self._trained_at = 0
        else:
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
            index = ivf
            self._trained_at = len(ids)
            logger.info("Cache index retrained: %d vectors in %d cells", len(ids), nlist)
        index.add_with_ids(vectors, ids)
        self._index = index


def _ids_of(index: faiss.Index) -> list[int]:
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
