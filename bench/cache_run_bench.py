"""A whole `budgetgraph run` with the semantic cache on against the same run with it off.

Each run is its own process (the installed ``budgetgraph`` command) against
one local OpenAI-compatible server that answers at once, with the packaged
models and budgets, the SQLite checkpointer, ledger and span store in a
temporary working directory, as a user's run would have them. Three kinds of
run alternate, a repetition each in turn, on the same decision (a new one per
repetition, from ``bench/data/decisions/train.jsonl``):

* ``off``: ``--no-cache``, in a fresh working directory.
* ``on, empty``: ``--cache`` in a fresh working directory: every call misses,
  so the run opens the store, embeds each request, searches and stores it.
* ``on, filled``: ``--cache`` in one working directory kept across the
  repetitions, its cache filled first with the answers to other decisions:
  every call misses its exact key and searches stored neighbours, and the
  guard judges those above the threshold.

For each kind: the wall-clock time from start to exit and the process's peak
resident memory (``wait4``'s ``ru_maxrss``), as medians over the repetitions,
and the ratio to ``off`` taken run by run within a repetition. One more run of
each kind under ``python -X importtime`` tells whether ``torch``,
``transformers`` or ``sentence_transformers`` were imported.

    python bench/cache_run_bench.py              # 7 repetitions after one warm-up
    python bench/cache_run_bench.py --runs 3 --fill 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

DECISIONS = ROOT / "bench" / "data" / "decisions" / "train.jsonl"
HEAVY = ("torch", "transformers", "sentence_transformers")
"""Top-level modules a run must not import (the embedder runs through ONNX Runtime)."""
WATCHED = (*HEAVY, "onnxruntime", "faiss", "tokenizers", "lemminflect")
"""Modules whose import the report lists."""
KINDS = ("off", "on, empty", "on, filled")


@dataclass
class Kind:
    """The runs of one kind: wall-clock seconds, peak resident MB and exit codes."""

    name: str
    wall_s: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)


def decisions(count: int) -> list[str]:
    """The first ``count`` tasks of :data:`DECISIONS`."""
    lines = DECISIONS.read_text(encoding="utf-8").splitlines()
    tasks = [json.loads(line)["task"] for line in lines if line.strip()]
    if len(tasks) < count:
        raise SystemExit(f"{DECISIONS} holds {len(tasks)} decisions; {count} are needed")
    return tasks[:count]


def child_env(base_url: str) -> dict[str, str]:
    """This process's variables without model endpoints or budgetgraph settings, then the server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_", "OTEL_"))}
    env.update(
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="bench",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
    )
    return env


def run(
    command: list[str], *, cwd: Path, env: dict[str, str], stderr: Path | None = None
) -> tuple[float, float, int]:
    """Run ``command`` to its end: wall-clock seconds, peak resident MB and its exit code."""
    err = stderr.open("wb") if stderr is not None else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    finally:
        if stderr is not None:
            err.close()  # type: ignore[union-attr]
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, child.returncode  # ru_maxrss is in KiB on Linux


def imported(importtime: str) -> set[str]:
    """Top-level modules named in ``python -X importtime`` output."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", importtime, flags=re.M)
    return {name.split(".")[0] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="repetitions of each kind, counted")
    parser.add_argument("--warmup", type=int, default=1, help="repetitions run first and not counted")
    parser.add_argument("--fill", type=int, default=10, help="decisions answered into the filled cache first")
    args = parser.parse_args()
    command = [str(Path(sys.executable).parent / "budgetgraph"), "run"]
    total = args.fill + args.warmup + args.runs
    tasks = decisions(total + 1)
    fill, measured, probe = tasks[: args.fill], tasks[args.fill : total], tasks[total]
    kinds = {name: Kind(name) for name in KINDS}
    flags = {"off": ["--no-cache"], "on, empty": ["--cache"], "on, filled": ["--cache"]}

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as server:
        env = child_env(server.base_url)
        filled = Path(tmp) / "filled"
        filled.mkdir()
        for task in fill:
            _, _, code = run([*command, task, "--cache"], cwd=filled, env=env)
            if code not in (0, 3):
                raise SystemExit(f"filling the cache: `budgetgraph run` exited {code}")

        def place(name: str, label: str) -> Path:
            if name == "on, filled":
                return filled
            return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=tmp))

        for i, task in enumerate(measured):
            for name, kind in kinds.items():
                wall, peak, code = run([*command, task, *flags[name]], cwd=place(name, f"r{i}"), env=env)
                if i >= args.warmup:
                    kind.wall_s.append(wall)
                    kind.peak_mb.append(peak)
                    kind.codes.append(code)

        imports: dict[str, set[str]] = {}
        for name in KINDS:
            log = Path(tmp) / f"importtime-{name.replace(', ', '-')}.txt"
            probe_command = [sys.executable, "-X", "importtime", *command, probe, *flags[name]]
            run(probe_command, cwd=place(name, "probe"), env=env, stderr=log)
            imports[name] = imported(log.read_text(encoding="utf-8", errors="replace"))
        requests = len(server.chat_requests())

    off = kinds["off"]
    print(f"{args.runs} repetitions after {args.warmup} warm-up; filled cache: {args.fill} decisions first")
    print(f"model requests served: {requests}")
    print("run          wall s: median (min-max)   / off: median (min-max)   peak MiB: median (max)   exit")
    for kind in kinds.values():
        wall = statistics.median(kind.wall_s)
        ratios = [a / b for a, b in zip(kind.wall_s, off.wall_s, strict=True)]
        print(
            f"{kind.name:12s} {wall:8.2f} ({min(kind.wall_s):.2f}-{max(kind.wall_s):.2f})"
            f"   {statistics.median(ratios):12.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            f"   {statistics.median(kind.peak_mb):12.0f} ({max(kind.peak_mb):.0f})"
            f"   {', '.join(map(str, sorted(set(kind.codes))))}"
        )
    for name, modules in imports.items():
        heavy = [m for m in HEAVY if m in modules]
        torch = f"yes ({', '.join(heavy)})" if heavy else "no"
        seen = ", ".join(m for m in WATCHED if m in modules) or "none"
        print(f"{name:12s} torch imported: {torch}; of {', '.join(WATCHED)}: {seen}")


if __name__ == "__main__":
    main()
