"""Kill runs with SIGKILL at random points, resume them, and compare with a clean run.

A local OpenAI-compatible server (latency per request configurable) answers
every model call and reports usage. First a clean run is measured: its model
requests, its final state and its spend. Then N runs are started as
``budgetgraph run`` processes, each killed with SIGKILL at a random moment
(uniform over the clean run's active time, after its first checkpoint is on
disk: a kill before that leaves nothing to resume), and continued with
``budgetgraph resume`` until done. For each it compares:

- the final state (plan, analyses, reconciliation, review) with the clean run's;
- the model requests the server received (run + resume) with the clean run's,
  and how many of the extra ones were in flight when the process died;
- the spend the ledger counted with the spend the server reported for the
  requests answered (lost = reported but not counted, duplicated = counted twice).

The semantic cache is off for every run (it would answer the killed runs
from the clean run's entries). It runs the kills twice: with
``store_completions`` on (the server keeps each completion under its call id,
so an answer whose process died is fetched back on resume) and off (the
interrupted call is sent again).

Usage: python bench/resume_bench.py [--kills 20] [--latency 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from budgetgraph.budgets.ledger import open_ledger  # noqa: E402
from budgetgraph.budgets.pricing import PriceBook  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

TASK = "Should we move billing to microservices this year? We have 6 engineers and a PCI audit in 4 months."
BUDGETGRAPH = str(Path(sys.executable).parent / "budgetgraph")
COMPARED = ("plan", "analyses", "reconciliation", "review", "constraints")


def cli(work: Path, *args: str, wait: bool = True) -> subprocess.Popen[str] | dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_"))}
    # Every run asks the same questions: with the cache on, the killed runs would be answered
    # from the clean run's entries and the bench would measure the cache, not the resume.
    env["BUDGETGRAPH_CACHE"] = "off"
    command = [
        BUDGETGRAPH,
        *args,
        "--models",
        str(work / "models.yaml"),
        "--ledger",
        f"sqlite:///{work}/ledger.sqlite",
        "--checkpointer",
        f"sqlite:///{work}/checkpoints.sqlite",
        "--json",
    ]
    if not wait:
        return subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout)


def has_checkpoint(work: Path, thread: str) -> bool:
    path = work / "checkpoints.sqlite"
    if not path.exists():
        return False
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return (
                db.execute("SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1", (thread,)).fetchone()
                is not None
            )
    except sqlite3.Error:
        return False


def priced(server: FakeOpenAIServer, book: PriceBook) -> tuple[int, int]:
    """(requests answered, micro-USD they cost) as the server reported them."""
    answered = micro = 0
    for request in server.chat_requests():
        if request.usage:
            answered += 1
            micro += book.price(
                request.body["model"],
                input_tokens=request.usage["prompt_tokens"],
                output_tokens=request.usage["completion_tokens"],
            ).micro_usd
    return answered, micro


def essence(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a final state that must match a clean run's.

    Not compared: ids, timings, and the plan's estimates, which learn from the
    ledger's history and so differ between any two runs.
    """
    rows = [
        {k: r[k] for k in ("node", "tier", "model", "input_tokens", "output_tokens", "cost_micro_usd")}
        for r in report["spend"]["nodes"]
    ]
    plan = report["plan"] or {}
    steps = [{k: s[k] for k in ("node", "path", "tier", "questions")} for s in plan.get("steps", [])]
    return {
        **{k: report[k] for k in COMPARED if k != "plan"},
        "plan": {"objective": plan.get("objective"), "assumptions": plan.get("assumptions"), "steps": steps},
        "spend": sorted(rows, key=lambda r: r["node"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    book = PriceBook()
    with FakeOpenAIServer(latency_s=options.latency) as server:
        for store in (True, False):
            rows, clean_requests = kill_and_resume(server, book, options, store, random.Random(options.seed))
            equal = sum(r["equal"] for r in rows)
            mode = "store_completions on" if store else "store_completions off"
            print(f"\n{mode}: {len(rows)} kills")
            print(
                f"{'kill at s':>9} {'status':>7} {'equal':>6} {'requests':>8} {'extra':>6} {'recovered':>9} "
                f"{'lost µ$':>8} {'dup µ$':>7} {'state-ledger µ$':>15}"
            )
            for r in rows:
                print(
                    f"{r['kill_at_s']:>9.3f} {r['status']:>7} {str(r['equal']):>6} {r['requests']:>8} "
                    f"{r['extra']:>6} {r['recovered']:>9} {r['lost_micro']:>8} {r['duplicated_micro']:>7} "
                    f"{r['state_vs_ledger_micro']:>15}"
                )
            print(
                f"{mode}: final state equal to the clean run's in {equal}/{len(rows)}; extra model requests "
                f"{sum(r['extra'] for r in rows)} (a clean run makes {clean_requests}); answers recovered "
                f"{sum(r['recovered'] for r in rows)}; spend lost {sum(r['lost_micro'] for r in rows)} µ$, "
                f"duplicated {sum(r['duplicated_micro'] for r in rows)} µ$"
            )


def kill_and_resume(
    server: FakeOpenAIServer, book: PriceBook, options: argparse.Namespace, store: bool, rng: random.Random
) -> tuple[list[dict[str, Any]], int]:
    """Measure a clean run, then kill and resume ``options.kills`` runs."""
    server.reset()
    work = Path(tempfile.mkdtemp(prefix="budgetgraph-resume-"))
    tiers = {
        t: {"model": m, "base_url": server.base_url, "max_retries": 0, "store_completions": store}
        for t, m in (("economy", "gpt-4.1-nano"), ("standard", "gpt-4.1-mini"), ("premium", "gpt-4.1"))
    }
    (work / "models.yaml").write_text(yaml.safe_dump({"tiers": tiers}))

    proc = cli(work, "run", TASK, "--thread", "clean", "--review-threshold", "6", wait=False)
    assert isinstance(proc, subprocess.Popen)
    while not has_checkpoint(work, "clean"):
        time.sleep(0.005)
    started = time.monotonic()
    out, _ = proc.communicate(timeout=300)
    active = time.monotonic() - started
    clean = json.loads(out)
    clean_requests, clean_micro = priced(server, book)
    print(
        f"clean run: {clean_requests} model requests, {clean_micro / 1e6:.6f} USD, "
        f"{active:.2f} s from its first checkpoint to the end"
    )

    rows = []
    for index in range(options.kills):
        server.reset()
        thread = f"kill-{index}"
        proc = cli(work, "run", TASK, "--thread", thread, "--review-threshold", "6", wait=False)
        assert isinstance(proc, subprocess.Popen)
        while not has_checkpoint(work, thread):
            time.sleep(0.005)
        at = rng.uniform(0, active)
        time.sleep(at)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        resumed = cli(work, "resume", thread, "--review-threshold", "6")
        assert isinstance(resumed, dict)
        requests, micro = priced(server, book)
        ledger = open_ledger(f"sqlite:///{work}/ledger.sqlite")
        counted = ledger.totals(f"run:{thread}").spent.micro_usd
        ledger.close()
        state_micro = sum(r["cost_micro_usd"] for r in resumed["spend"]["nodes"])
        recovered = sum(1 for d in resumed.get("decisions", []) if d["action"] == "recovered")
        if os.environ.get("BENCH_DEBUG") and essence(resumed) != essence(clean):
            a, b = essence(resumed), essence(clean)
            print("differs:", [k for k in a if a[k] != b[k]], file=sys.stderr)
            (work / f"{thread}.json").write_text(json.dumps([a, b], indent=1))
        rows.append(
            {
                "kill_at_s": round(at, 3),
                "status": resumed["status"],
                "equal": essence(resumed) == essence(clean),
                "requests": requests,
                "extra": requests - clean_requests,
                "recovered": recovered,
                "lost_micro": max(0, micro - counted),
                "duplicated_micro": max(0, counted - micro),
                "state_vs_ledger_micro": state_micro - counted,
            }
        )
    return rows, clean_requests


if __name__ == "__main__":
    main()
