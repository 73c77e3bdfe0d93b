"""What does tier routing save, and does it keep complex requests on strong models?

The labelled requests (``budgets/routing/labelled_requests.jsonl``: simple and
complex business, tech, ops and general requests) are replayed through the
real pipeline - ``Gateway`` with the ``router`` and ``limits`` plugins, the
in-process ledger, ``ChatOpenAI`` over HTTP - against a local
OpenAI-compatible server that reports usage, twice:

- **all-premium** (the baseline): every request asks for the premium tier and
  complexity routing is off;
- **routed**: every request asks for the premium tier (the most it may use)
  and ``router.complexity.enabled`` is on, with the calibrated thresholds.

Cost is what the server reported, priced from genai-prices (gpt-4.1 for
premium, gpt-4.1-mini for standard, gpt-4.1-nano for economy). Answers are as
long as the request needs, the same in both runs: ``--answer-tokens`` sets the
answer length of a simple, a standard and a premium request (default 80, 400
and 800 tokens; a real model writes more for a harder question, and output
tokens cost four times input tokens).

Done when: routed cost <= 35% of all-premium, and >= 90% of the complex
requests served at standard or premium.

Usage: python bench/routing_bench.py [--answer-tokens 80,400,800] [--split all|calibration|holdout]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from budgetgraph.budgets import Gateway, load_budgets, load_models  # noqa: E402
from budgetgraph.budgets.ledger import open_ledger  # noqa: E402
from budgetgraph.budgets.request import usd  # noqa: E402
from budgetgraph.budgets.routing.data import LabelledRequest, load_labelled  # noqa: E402
from budgetgraph.graph.builder import NODE_NAMES  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

SYSTEM = "You are the assistant of a company's staff. Answer the request. Request {id}."
TIERS = ("economy", "standard", "premium")


class Answer(BaseModel):
    answer: str = Field(description="The answer to the request.")


@dataclass
class Served:
    request: LabelledRequest
    tier: str
    micro_usd: int
    decisions: list[str]


def run(gateway: Gateway, requests: list[LabelledRequest], mode: str) -> list[Served]:
    out = []
    for r in requests:
        session = gateway.session("assistant", thread_id=f"{mode}-{r.id}")
        session.ask(
            [SystemMessage(SYSTEM.format(id=r.id)), HumanMessage(r.text)],
            Answer,
            tier="premium",
            local=lambda: Answer(answer="local"),
        )
        (call,) = session.calls
        out.append(Served(r, call["tier"], call["cost_micro_usd"], [d["reason"] for d in call["decisions"]]))
    return out


def gateway_for(models: Path, budgets_yaml: str, tmp: Path, name: str) -> Gateway:
    path = tmp / f"{name}.yaml"
    path.write_text(budgets_yaml)
    return Gateway(
        load_models(models), load_budgets(path, node_names=NODE_NAMES), ledger=open_ledger("memory:")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answer-tokens", default="80,400,800", help="simple,standard,premium answer tokens")
    parser.add_argument("--split", default="all", choices=("all", "calibration", "holdout"))
    args = parser.parse_args()
    lengths = dict(zip(TIERS, (int(n) for n in args.answer_tokens.split(",")), strict=True))
    requests = [r for r in load_labelled() if args.split in ("all", r.split)]

    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for r in requests:
            # the fake server counts 4 characters a token; the JSON wrapper adds a few
            server.set_fields(f"Request {r.id}.", answer="word " * max(1, (lengths[r.tier] * 4 - 16) // 5))
        tiers = {
            tier: {"model": model, "base_url": server.base_url, "max_retries": 0, "max_output_tokens": 4000}
            for tier, model in zip(TIERS, ("gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"), strict=True)
        }
        models = tmp / "models.yaml"
        models.write_text(yaml.safe_dump({"default_tier": "premium", "tiers": tiers}))
        started = time.perf_counter()
        premium = run(
            gateway_for(models, "router: {complexity: {enabled: false}}\n", tmp, "p"), requests, "p"
        )
        routed = run(gateway_for(models, "router: {complexity: {enabled: true}}\n", tmp, "r"), requests, "r")
        elapsed = time.perf_counter() - started

    base_cost = sum(s.micro_usd for s in premium)
    routed_cost = sum(s.micro_usd for s in routed)
    assert all(s.tier == "premium" for s in premium), "the baseline must be served at premium"
    complex_ = [s for s in routed if s.request.label == "complex"]
    simple = [s for s in routed if s.request.label == "simple"]
    strong = sum(s.tier in ("standard", "premium") for s in complex_) / len(complex_)
    kept_cheap = sum(s.tier == "economy" for s in simple) / len(simple)
    binary = sum((s.tier != "economy") == (s.request.label == "complex") for s in routed) / len(routed)
    exact = sum(s.tier == s.request.tier for s in routed) / len(routed)
    shares = Counter(s.tier for s in routed)

    print(
        f"{len(requests)} labelled requests ({len(complex_)} complex, {len(simple)} simple; "
        f"split: {args.split}); "
        f"answers of {lengths['economy']}/{lengths['standard']}/{lengths['premium']} tokens "
        f"for simple/standard/premium requests; {2 * len(requests)} calls in {elapsed:.1f} s"
    )
    print()
    print("| run | cost USD | cost / all-premium | economy | standard | premium |")
    print("|---|---|---|---|---|---|")
    print(f"| all-premium | {usd(base_cost):.4f} | 1.000 | 0% | 0% | 100% |")
    print(
        f"| routed | {usd(routed_cost):.4f} | {routed_cost / base_cost:.3f} | "
        + " | ".join(f"{shares[t] / len(routed):.0%}" for t in TIERS)
        + " |"
    )
    print()
    print(f"complex requests served at standard or premium: {strong:.1%} ({len(complex_)} requests)")
    print(f"simple requests served at economy: {kept_cheap:.1%} ({len(simple)} requests)")
    print(f"routing accuracy (simple -> economy, complex -> standard or premium): {binary:.1%}")
    print(f"exact tier accuracy (economy / standard / premium labels): {exact:.1%}")
    for split in ("calibration", "holdout"):
        part = [s for s in routed if s.request.split == split]
        if part and args.split == "all":
            accuracy = sum((s.tier != "economy") == (s.request.label == "complex") for s in part) / len(part)
            print(f"  {split} split: routing accuracy {accuracy:.1%} ({len(part)} requests)")
    ok = routed_cost <= 0.35 * base_cost and strong >= 0.9
    print()
    verdict = "met" if ok else "NOT met"
    print(f"done-when (routed <= 35% of all-premium, >= 90% of complex at standard+): {verdict}")


if __name__ == "__main__":
    main()
