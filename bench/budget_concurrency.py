"""Does a shared daily cap hold when many runs in many processes spend at once?

P processes each start R concurrent runs of the decision graph, all against
one Redis ledger with a daily cap worth a few runs, talking to a local
OpenAI-compatible server that reports usage. Spend is judged by what the
server reported, priced from genai-prices. The same load runs twice, side by
side:

- budgetgraph: the ``limits`` plugin reserves each call's upper-bound cost
  atomically (one Lua script) before calling, and settles after;
- naive: check the day's spend, call, then record (check-then-record), the
  approach of the design documents.

Usage: python bench/budget_concurrency.py [--processes 4] [--runs 25] [--cap-runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import yaml  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from budgetgraph.budgets import Gateway, load_budgets, load_models  # noqa: E402
from budgetgraph.budgets.ledger import Charge, LedgerRecord  # noqa: E402
from budgetgraph.budgets.ledger.redis import RedisLedger  # noqa: E402
from budgetgraph.budgets.plugins.base import PluginContext, register  # noqa: E402
from budgetgraph.budgets.pricing import PriceBook  # noqa: E402
from budgetgraph.budgets.request import CallRequest, CallResult, usd  # noqa: E402
from budgetgraph.graph.builder import NODE_NAMES, build_graph  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

TASK = "Should we move billing to microservices this year? We have 6 engineers and a PCI audit in 4 months."
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class NaiveLimits:
    """Check-then-record: read the day's spend, call if it is under the cap, record after."""

    name = "naive_limits"

    def __init__(self, context: PluginContext) -> None:
        self._ledger = context.ledger
        daily = context.budgets.windows.daily
        self._cap = int(((daily.max_cost_usd if daily else None) or 0) * 1_000_000)

    def wrap(self, request: CallRequest, call_next):  # noqa: ANN001
        day = f"tenant:{request.tenant}:day:{datetime.now(UTC):%Y-%m-%d}"
        if request.tier != "local" and self._ledger.totals(day).spent.micro_usd >= self._cap:
            from budgetgraph.budgets import BudgetExceededError

            raise BudgetExceededError(
                node=request.node, limit="daily.max_cost_usd", spent=0, cap=usd(self._cap)
            )
        result: CallResult = call_next(request)
        cost = sum(c["cost_micro_usd"] for c in result.calls)
        self._ledger.record([day], Charge(micro_usd=cost), _record(request, cost))
        return result


def _record(request: CallRequest, cost: int) -> LedgerRecord:
    return LedgerRecord(
        ts=datetime.now(UTC).isoformat(),
        tenant=request.tenant,
        thread_id=request.thread_id or "",
        node=request.node,
        tier=request.tier,
        model="",
        input_tokens=0,
        output_tokens=0,
        cost_micro_usd=cost,
        saved_micro_usd=0,
        cache_hit=False,
        alerts=[],
    )


register("naive_limits", NaiveLimits)


def worker(args: tuple[str, str, str, str, int, tuple[str, ...]]) -> tuple[int, int]:
    """Start R concurrent runs in this process; return (finished, refused)."""
    models_path, budgets_path, prefix, _url, runs, chain = args
    gateway = Gateway(
        load_models(models_path),
        load_budgets(budgets_path, node_names=NODE_NAMES),
        ledger=RedisLedger.from_url(REDIS_URL, prefix=prefix),
        default_chain=chain,
    )
    graph = build_graph(checkpointer=InMemorySaver(), gateway=gateway)

    def one(_: int) -> bool:
        try:
            graph.invoke({"task": TASK}, {"configurable": {"thread_id": uuid.uuid4().hex}})
            return True
        except Exception:  # refused by a budget: the run stops
            return False

    with ThreadPoolExecutor(runs) as pool:
        done = list(pool.map(one, range(runs)))
    return sum(done), len(done) - sum(done)


def server_spend(server: FakeOpenAIServer, prices: PriceBook) -> tuple[int, int]:
    """(calls, micro-USD) the server served, priced by the model each request named."""
    micro = 0
    calls = server.chat_requests()
    for request in calls:
        usage = request.usage or {}
        micro += prices.price(
            request.body["model"],
            input_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
        ).micro_usd
    return len(calls), micro


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=25, help="concurrent runs per process")
    parser.add_argument("--cap-runs", type=float, default=3.0, help="the daily cap, in runs' cost")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    options = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).ping()
    prices = PriceBook()
    work = Path(tempfile.mkdtemp(prefix="budgetgraph-bench-"))
    with FakeOpenAIServer(latency_s=options.latency) as server:
        models = work / "models.yaml"
        tiers = {
            t: {"model": m, "base_url": server.base_url, "max_retries": 0, "max_output_tokens": 1200}
            for t, m in (("economy", "gpt-4.1-nano"), ("standard", "gpt-4.1-mini"), ("premium", "gpt-4.1"))
        }
        models.write_text(yaml.safe_dump({"tiers": tiers}))

        # Calibrate: what one run costs.
        calibration = work / "calibration.yaml"
        calibration.write_text("budgets: {}\n")
        worker((str(models), str(calibration), f"bench:{uuid.uuid4().hex}:", "", 1, ("router", "limits")))
        _, one_run = server_spend(server, prices)
        cap_usd = one_run * options.cap_runs / 1_000_000
        budgets = work / "budgets.yaml"
        budgets.write_text(f"windows:\n  daily: {{max_cost_usd: {cap_usd:.6f}}}\n")

        rows = []
        for label, chain in (
            ("budgetgraph (reserve, Lua)", ("router", "limits")),
            ("naive check-then-record", ("router", "naive_limits")),
        ):
            server.reset()
            prefix = f"bench:{uuid.uuid4().hex}:"
            started = time.perf_counter()
            jobs = [(str(models), str(budgets), prefix, REDIS_URL, options.runs, chain)] * options.processes
            with multiprocessing.get_context("spawn").Pool(options.processes) as pool:
                results = pool.map(worker, jobs)
            seconds = time.perf_counter() - started
            calls, spent = server_spend(server, prices)
            finished = sum(r[0] for r in results)
            rows.append((label, finished, calls, spent, seconds))
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)

    cap = round(cap_usd * 1_000_000)
    print(
        f"{options.processes} processes x {options.runs} concurrent runs; one run costs "
        f"{one_run / 1e6:.6f} USD; daily cap {cap / 1e6:.6f} USD ({options.cap_runs:g} runs)"
    )
    print(
        f"{'approach':<28} {'runs done':>9} {'calls':>6} {'spend USD':>11} {'cap USD':>10} "
        f"{'overspend USD':>13} {'spend/cap':>9} {'s':>6}"
    )
    for label, finished, calls, spent, seconds in rows:
        over = max(0, spent - cap)
        print(
            f"{label:<28} {finished:>9} {calls:>6} {spent / 1e6:>11.6f} {cap / 1e6:>10.6f} "
            f"{over / 1e6:>13.6f} {spent / cap:>9.2f} {seconds:>6.1f}"
        )


if __name__ == "__main__":
    main()
