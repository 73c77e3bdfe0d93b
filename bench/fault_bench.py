"""Does the ledger hold every answer a misbehaving server billed, and do runs get through?

The same decisions (``--decisions``, default 10) are run through the whole
graph - planner, CTO and COO, reconcile; ``Gateway`` with the default chain,
a SQLite ledger in memory, ``ChatOpenAI`` over HTTP - against a local
OpenAI-compatible server that injects one kind of fault (see
``tests/fakes/openai_server.py``, ``FAULT_KINDS``) at 20% and at 100% of its
chat requests, plain and streamed; and once without faults, the baseline.
A run that fails is resumed once the faults stop, as an operator would.

Per kind, rate and mode it prints: runs done at once, runs that failed with a
one-line error and then resumed to the end; the chat requests sent; the tokens
the server billed (every answer it produced, read by the client or not); and
the tokens the ledger holds for them: settled at the usage the server
reported, estimated by tokenizer (no usage), refused and counted at the
reservation (impossible usage), and unsettled at the reservation (timed out,
cut off or unreadable); then the ledger's tokens over the billed ones (at
least 1.0: nothing lost; above it, the reservations' upper bounds), the
ledger's rows over the answers billed (1.0: each answer once), and the
billed tokens over the baseline's (what the faults cost in retries).

Models time out after ``--timeout`` s (a ``hang`` sleeps longer); the router
falls back on every kind of failure (``rate_limit``, ``server_error``,
``timeout``, ``connection``) and the gateway does not retry (``max_retries: 0``).
The semantic cache is off: it would answer a replay from an earlier one's entries.

Usage: python bench/fault_bench.py [--decisions 10] [--rates 0.2,1.0] [--timeout 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from budgetgraph.budgets.ledger import open_ledger  # noqa: E402
from budgetgraph.graph import build_graph  # noqa: E402
from tests.fakes.openai_server import FAULT_KINDS, FakeOpenAIServer  # noqa: E402

TASK = "Should we move billing to microservices this year? We have 6 engineers and a PCI audit in 4 months."
BUDGETS = (
    "budgets: {}\n"
    "router:\n"
    "  fallback: {errors: [rate_limit, server_error, timeout, connection], cooldown_s: 0}\n"
    "cache: {enabled: false}\n"  # it would answer a replay from an earlier one's entries
)
STREAMED = ("drop", "malformed_json", "missing_usage", "negative_usage", "absurd_usage", "non_json")
"""The kinds whose streamed form differs from the plain one."""


@dataclass
class Row:
    kind: str
    rate: float
    mode: str
    done: int
    resumed: int
    stuck: int
    requests: int
    billed: int
    answers: int
    reported: int
    estimated: int
    refused: int
    unsettled: int
    rows: int
    seconds: float

    @property
    def ledger(self) -> int:
        return self.reported + self.estimated + self.refused + self.unsettled


def replay(
    tmp: Path,
    server: FakeOpenAIServer,
    *,
    kind: str | None,
    rate: float,
    stream: bool,
    args: argparse.Namespace,
) -> Row:
    server.reset()
    tiers = {
        tier: {"model": model, "base_url": server.base_url, "max_retries": 0, "timeout_s": args.timeout}
        | ({"streaming": True} if stream else {})
        for tier, model in (("economy", "gpt-4.1-nano"), ("standard", "gpt-4.1-mini"), ("premium", "gpt-4.1"))
    }
    models, budgets = tmp / "models.yaml", tmp / "budgets.yaml"
    models.write_text(yaml.safe_dump({"default_tier": "standard", "tiers": tiers}))
    budgets.write_text(BUDGETS)
    ledger = open_ledger("memory:")
    graph = build_graph(checkpointer=InMemorySaver(), models=models, budgets=budgets, ledger=ledger)
    done = resumed = stuck = 0
    started = time.perf_counter()
    for n in range(args.decisions):
        if kind is not None:
            server.inject_faults(
                {kind: rate}, seed=args.seed + n, hang_s=args.timeout + 0.3, retry_after_s=0.01
            )
        config = {"configurable": {"thread_id": f"{kind}-{rate}-{n}"}}
        try:
            graph.invoke({"task": f"{TASK} (decision {n})"}, config)
            done += 1
            continue
        except Exception as exc:
            one_line = "\n" not in str(exc)
        server.stop_faults()
        try:
            graph.invoke(None, config)
            resumed += one_line
            stuck += not one_line
        except Exception:
            stuck += 1
    seconds = time.perf_counter() - started
    server.wait_idle(args.timeout + 5)
    records = [r for r in ledger.records() if r["tier"] != "local" and not r["cache_hit"]]
    unsettled = ledger.unsettled()

    def tokens(rows: list, usage: str | None = None) -> int:
        return sum(
            r["input_tokens"] + r["output_tokens"] for r in rows if usage is None or r.get("usage") == usage
        )

    row = Row(
        kind=kind or "none (baseline)",
        rate=rate,
        mode="streamed" if stream else "plain",
        done=done,
        resumed=resumed,
        stuck=stuck,
        requests=len(server.requests),
        billed=server.billed.tokens,
        answers=server.billed.responses,
        reported=sum(r["input_tokens"] + r["output_tokens"] for r in records if "usage" not in r),
        estimated=tokens(records, "estimated"),
        refused=tokens(records, "refused"),
        unsettled=tokens(unsettled),
        rows=len(records) + len(unsettled) + len(ledger.open_attempts()),
        seconds=seconds,
    )
    ledger.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=10, help="decisions run per kind, rate and mode")
    parser.add_argument("--rates", default="0.2,1.0", help="fault rates, comma-separated")
    parser.add_argument("--timeout", type=float, default=0.3, help="the models' request timeout (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    logging.basicConfig(level=logging.ERROR)

    rows: list[Row] = []
    started = time.perf_counter()
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        baseline = replay(tmp, server, kind=None, rate=0.0, stream=False, args=args)
        for kind in FAULT_KINDS:
            for stream in (False, True) if kind in STREAMED else (False,):
                for rate in rates:
                    rows.append(replay(tmp, server, kind=kind, rate=rate, stream=stream, args=args))
    elapsed = time.perf_counter() - started

    print(
        f"{args.decisions} decisions per kind, rate and mode, 4 model calls each when nothing fails; "
        f"request timeout {args.timeout} s; {len(rows) + 1} replays in {elapsed:.0f} s"
    )
    print()
    print(
        "| fault | rate | mode | done | failed, resumed | stuck | requests | billed tokens | "
        "reported | estimated | refused | unsettled | ledger / billed | rows / answers | billed / baseline |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in [baseline, *rows]:
        print(
            f"| {row.kind} | {row.rate:.0%} | {row.mode} | {row.done} | {row.resumed} | {row.stuck} | "
            f"{row.requests} | {row.billed} | {row.reported} | {row.estimated} | {row.refused} | "
            f"{row.unsettled} | {row.ledger / row.billed:.3f} | {row.rows / row.answers:.3f} | "
            f"{row.billed / baseline.billed:.2f} |"
        )
    lost = [r for r in [baseline, *rows] if r.ledger < 0.99 * r.billed or r.rows != r.answers]
    stuck = [r for r in [baseline, *rows] if r.stuck]
    print()
    print(f"replays where the ledger holds < 99% of the billed tokens or not one row per answer: {len(lost)}")
    print(f"runs that neither completed nor failed in one line and resumed: {sum(r.stuck for r in stuck)}")


if __name__ == "__main__":
    main()
