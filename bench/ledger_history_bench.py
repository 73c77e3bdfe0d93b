"""A run with a full ledger against the same run with an empty one.

Plans read the history behind their estimates from the ledger. This bench fills
one SQLite ledger with ``--records`` settled calls (every node, tier and model,
two tenants, spread over 90 days) and runs the whole graph (``build_graph``,
gateway, router, limits; cache and telemetry off) against a local
OpenAI-compatible server, alternating runs on the full ledger and on an empty
one, and prints the median wall time of each and their ratio.

    python bench/ledger_history_bench.py                  # 100,000 records, 7 pairs
    python bench/ledger_history_bench.py --records 10000 --pairs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgetgraph.budgets import Gateway, load_budgets, load_models  # noqa: E402
from budgetgraph.budgets.ledger import LedgerRecord, open_ledger  # noqa: E402
from budgetgraph.graph.builder import NODE_NAMES, build_graph  # noqa: E402
from tests.conftest import write_models  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

TASK = "Should we move our billing service to microservices this year? We have 6 engineers."
MODELS = {"economy": "gpt-4.1-nano", "standard": "gpt-4.1-mini", "premium": "gpt-4.1"}


def fill(url: str, count: int) -> None:
    """Keep ``count`` settled records in the ledger at ``url``, in batches of 5,000."""
    ledger = open_ledger(url)
    now = datetime.now(UTC)
    nodes = ("planner", "cto", "coo", "reconcile")
    batch: list[LedgerRecord] = []
    for i in range(count):
        tier = list(MODELS)[i % 3]
        batch.append(
            LedgerRecord(
                ts=(now - timedelta(minutes=(count - i) * 90 * 24 * 60 // count)).isoformat(),
                tenant=("acme", "globex")[i % 2],
                thread_id=f"old-{i // 4}",
                node=nodes[i % 4],
                tier=tier,
                model=MODELS[tier],
                input_tokens=800 + i % 200,
                output_tokens=500 + i % 300,
                cost_micro_usd=500,
                saved_micro_usd=0,
                cache_hit=False,
                alerts=[],
            )
        )
        if len(batch) == 5000:
            ledger.finish_call(None, None, batch)
            batch = []
    ledger.finish_call(None, None, batch)
    ledger.close()


def one_run(url: str, models: Path, thread: str) -> float:
    """Seconds for one whole run on the ledger at ``url``, graph building included."""
    started = time.perf_counter()
    ledger = open_ledger(url)
    gateway = Gateway(
        load_models(models),
        load_budgets(None, node_names=NODE_NAMES),
        ledger=ledger,
        default_chain=("router", "limits"),
    )
    graph = build_graph(gateway=gateway, checkpointer=InMemorySaver())
    graph.invoke({"task": TASK}, {"configurable": {"thread_id": thread}})
    ledger.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the full ledger")
    parser.add_argument("--pairs", type=int, default=7, help="runs on each ledger, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as server:
        folder = Path(tmp)
        models = write_models(folder / "models.yaml", server.base_url)
        full, empty = f"sqlite:///{folder}/full.sqlite", f"sqlite:///{folder}/empty.sqlite"
        started = time.perf_counter()
        fill(full, args.records)
        print(f"filled {args.records:,} records in {time.perf_counter() - started:.1f} s")
        one_run(full, models, "warm-full")
        one_run(empty, models, "warm-empty")
        timed: dict[str, list[float]] = {"full": [], "empty": []}
        for i in range(args.pairs):
            timed["full"].append(one_run(full, models, f"full-{i}"))
            timed["empty"].append(one_run(empty, models, f"empty-{i}"))
    ratios = [f / e for f, e in zip(timed["full"], timed["empty"], strict=True)]
    for name, values in timed.items():
        print(f"{name:>5} ledger: median {statistics.median(values) * 1000:.0f} ms over {len(values)} runs")
    print(
        f"full / empty: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
