"""How much cheaper is the ONNX embedder than sentence-transformers?

Both embed all-MiniLM-L6-v2 on the CPU: ``LocalEmbedder`` (ONNX Runtime, the
default) and ``SentenceTransformerEmbedder`` (torch, the baseline). Each runs in
a fresh subprocess, ``--repeat`` times, alternating, and reports:

- **start to first vector**: from launching ``python`` to the first vector of
  one 30-word request (interpreter, imports, model load, one embedding), timed
  by this process; also the floor, a process that only imports the module;
- **one request** (ms, median and p90): ``embed([text])`` for each of ``--n``
  different 30-word requests, back to back, and again ``--gap-ms`` apart (as
  in a run, where a model call sits between two embeddings and the CPU goes
  cold);
- **batch**: ``embed(texts)`` of the same ``--n`` requests in one call (ms a text);
- **RSS** after the first vector and the process's peak (``VmHWM``), MB, and
  whether torch or sentence_transformers was imported.

Figures are medians over the repeats; the last column is the
sentence-transformers figure over the ONNX one. Requests are 30-word windows of
``paraphrase_pairs.jsonl`` (``--data``), or of a fixed word list when it is absent.
If the ONNX export is missing it is made first, and its time is printed.

Usage: python bench/embedder_bench.py [--n 200] [--words 30] [--repeat 3] [--gap-ms 50]
       [--threads N] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = {"onnx": "LocalEmbedder", "st": "SentenceTransformerEmbedder"}
FALLBACK_WORDS = (
    "should we migrate billing to microservices with six engineers before the audit in four months "
    "what does the cost of a second region look like against our budget for the next quarter and who owns it"
).split()


def requests(data: Path, n: int, words: int) -> list[str]:
    """``n`` different requests of ``words`` words each."""
    path = data / "paraphrase_pairs.jsonl"
    if path.exists():
        stream = " ".join(
            json.loads(line)["origin"] for line in path.read_text(encoding="utf-8").splitlines() if line
        ).split()
    else:
        stream = FALLBACK_WORDS * (n + words)
    step = max(1, (len(stream) - words) // n)
    return [" ".join(stream[i * step : i * step + words]) for i in range(n)]


def _status(field: str) -> float:
    """A ``/proc/self/status`` figure in MB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, texts: list[str], gap_ms: float, threads: int | None) -> None:
    """One measured process: prints ``first`` at the first vector, then a JSON line of figures."""
    if kind == "import":
        import budgetgraph.budgets.cache.embedders  # noqa: F401

        print("first", flush=True)
        print(json.dumps({"rss_mb": _status("VmRSS"), "peak_mb": _status("VmHWM")}), flush=True)
        return
    from budgetgraph.budgets.cache import embedders

    cls = getattr(embedders, KINDS[kind])
    embedder = cls(threads=threads) if kind == "onnx" and threads else cls()
    embedder.embed([texts[0]])
    print("first", flush=True)
    rss = _status("VmRSS")
    back_to_back = []
    for text in texts:
        start = time.perf_counter()
        embedder.embed([text])
        back_to_back.append((time.perf_counter() - start) * 1000)
    spaced = []
    for text in texts[: min(len(texts), 50)]:
        time.sleep(gap_ms / 1000)
        start = time.perf_counter()
        embedder.embed([text])
        spaced.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    embedder.embed(texts)
    batch = (time.perf_counter() - start) * 1000 / len(texts)
    figures = {
        "rss_mb": rss,
        "peak_mb": _status("VmHWM"),
        "one_p50_ms": statistics.median(back_to_back),
        "one_p90_ms": statistics.quantiles(back_to_back, n=10)[-1],
        "spaced_p50_ms": statistics.median(spaced),
        "batch_ms": batch,
        "torch": "torch" in sys.modules,
        "sentence_transformers": "sentence_transformers" in sys.modules,
    }
    print(json.dumps(figures), flush=True)


def launch(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child; returns its figures plus ``first_s``, launch to first vector (s)."""
    command = [sys.executable, __file__, "--child", kind, "--n", str(args.n), "--words", str(args.words)]
    command += ["--gap-ms", str(args.gap_ms), "--data", str(args.data)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    first = process.stdout.readline()
    first_s = time.perf_counter() - start
    rest = process.stdout.read()
    if process.wait() != 0 or first.strip() != "first":
        raise SystemExit(f"the `{kind}` child failed (exit {process.returncode})")
    return {"first_s": first_s, **json.loads(rest.strip().splitlines()[-1])}


def ensure_export() -> None:
    """Export the ONNX model if it is missing, in a subprocess (it imports torch); print the time."""
    from budgetgraph.budgets.cache.onnx_export import onnx_path

    if onnx_path().exists():
        print(f"ONNX export present: {onnx_path()}")
        return
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "budgetgraph.budgets.cache.onnx_export"], check=True, cwd=ROOT)
    print(f"ONNX export made once, in {time.perf_counter() - start:.1f} s")


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Print the side-by-side table."""

    def median(kind: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[kind])

    rows = [
        ("start to first vector (s)", "first_s", "{:.2f}"),
        (f"one {args.words}-word request, back to back, p50 (ms)", "one_p50_ms", "{:.2f}"),
        (f"one {args.words}-word request, back to back, p90 (ms)", "one_p90_ms", "{:.2f}"),
        (f"one request, {args.gap_ms:g} ms apart, p50 (ms)", "spaced_p50_ms", "{:.2f}"),
        (f"batch of {args.n}, per text (ms)", "batch_ms", "{:.2f}"),
        ("RSS after first vector (MB)", "rss_mb", "{:.0f}"),
        ("peak RSS (MB)", "peak_mb", "{:.0f}"),
    ]
    print(f"\nall-MiniLM-L6-v2, {args.n} requests of {args.words} words, medians of {args.repeat} processes")
    head = f"{'':48} {'onnx':>10} {'sentence-tf':>12} {'st/onnx':>8}"
    print(head)
    print("-" * len(head))
    for label, key, fmt in rows:
        onnx, st = median("onnx", key), median("st", key)
        print(f"{label:48} {fmt.format(onnx):>10} {fmt.format(st):>12} {st / onnx:>7.2f}x")
    for kind in KINDS:
        imported = [name for name in ("torch", "sentence_transformers") if any(r[name] for r in runs[kind])]
        print(f"{kind}: imported {', '.join(imported) or 'neither torch nor sentence_transformers'}")
    print(
        f"floor (a process that only imports the embedders module): "
        f"{median('import', 'first_s'):.2f} s, {median('import', 'peak_mb'):.0f} MB peak"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="requests to embed")
    parser.add_argument("--words", type=int, default=30, help="words a request")
    parser.add_argument("--repeat", type=int, default=3, help="processes of each kind")
    parser.add_argument("--gap-ms", type=float, default=50.0, help="pause before each spaced request (ms)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "semantic-cache")
    parser.add_argument("--child", choices=[*KINDS, "import"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = requests(args.data, args.n, args.words)
    if args.child:
        child(args.child, texts, args.gap_ms, args.threads)
        return
    ensure_export()
    runs: dict[str, list[dict[str, Any]]] = {"onnx": [], "st": [], "import": []}
    for rep in range(args.repeat):
        for kind in ("onnx", "st", "import") if rep % 2 == 0 else ("st", "onnx", "import"):
            runs[kind].append(launch(kind, args))
            first = runs[kind][-1]["first_s"]
            print(f"  {kind} run {rep + 1}: first vector at {first:.2f} s", file=sys.stderr)
    report(runs, args)


if __name__ == "__main__":
    main()
