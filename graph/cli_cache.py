"""``budgetgraph cache``: evaluate, inspect and clear the semantic cache.

Mounted on the main CLI as ``app.add_typer(cache_app, name="cache")``.

Exit codes: 0 done, 2 bad input or configuration, 1 any other failure
(e.g. the Redis store is unreachable).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import budgetgraph.budgets.plugins.cache  # noqa: F401  (registers the plugin, so budgets.yaml may have `cache:`)
from budgetgraph.budgets import ConfigError, load_budgets, usd
from budgetgraph.budgets.cache import CacheSettings, Counts, Guard, NamespaceStats
from budgetgraph.budgets.cache.base import EntryStore
from budgetgraph.budgets.cache.config import build_embedder, load_verifier, open_configured_store
from budgetgraph.budgets.cache.embedders import LocalEmbedder
from budgetgraph.budgets.cache.verifier import Verifier, VerifierError
from budgetgraph.budgets.cachetune.evaluate import (
    EvalResult,
    PairsError,
    evaluate,
    outside_sample,
    read_pairs,
)
from budgetgraph.budgets.cachetune.fit import FitError, fit
from budgetgraph.graph.builder import NODE_NAMES
from budgetgraph.graph.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    BudgetsOpt,
    CacheStoreOpt,
    JsonOpt,
    config_message,
    err,
    fail,
    settings_for,
    stdout_console,
)
from budgetgraph.graph.console import print_whole

cache_app = typer.Typer(
    name="cache",
    help="Evaluate, inspect and clear the semantic cache.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PairsOpt = Annotated[
    Path,
    typer.Option(
        "--pairs",
        help='JSON Lines of {"text_a", "text_b", "label"} or {"origin", "similar"}; .gz is read too.',
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--threshold", min=0.0, max=1.0, help="Cosine threshold (default: the `cache:` section's)."),
]


@cache_app.command("eval")
def eval_pairs(
    pairs: PairsOpt,
    threshold: ThresholdOpt = None,
    no_guard: Annotated[
        bool, typer.Option("--no-guard", help="Serve every candidate above the threshold (cosine only).")
    ] = False,
    pairwise: Annotated[
        bool,
        typer.Option(
            "--pairwise", help="Give each pair a cache holding only its own text_a (pair classification)."
        ),
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="Score this many pairs drawn at random (all when omitted)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --sample's draw (random.Random).")] = 0,
    verifier_path: Annotated[
        Path | None,
        typer.Option(
            "--verifier",
            help="Run this verifier (from `cache calibrate`) after the guard "
            "(default: the `cache:` section's).",
        ),
    ] = None,
    budgets: BudgetsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put every distinct text_a/origin into a fresh cache, look up each text_b/similar, score the hits."""
    if verifier_path is not None and no_guard:
        fail("--no-guard and --verifier: a verifier runs after the guard; drop one", as_json, EXIT_BAD_INPUT)
    try:
        settings = _settings(budgets, as_json)
        if verifier_path is not None:
            settings = settings.model_copy(update={"verifier": str(verifier_path)})
        embedder = build_embedder(settings, os.environ)
        verifier = None if no_guard else load_verifier(settings, embedder=embedder.name)
        rows = read_pairs(pairs)
    except (ConfigError, PairsError, VerifierError) as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    if sample is not None and sample < len(rows):
        rows = random.Random(seed).sample(rows, sample)
    chosen = settings.threshold if threshold is None else threshold
    if isinstance(embedder, LocalEmbedder) and not as_json:
        err.print(f"Embedding {len(rows)} pairs with {embedder.name} ...", highlight=False)
    guard = Guard(enabled=not no_guard, verifier=verifier)
    result = evaluate(rows, embedder, threshold=chosen, guard=guard, pairwise=pairwise)
    if as_json:
        sys.stdout.write(json.dumps(result.summary()) + "\n")
    else:
        table = _eval_table(result, pairs, verifier)
        print_whole(stdout_console(), table, table)


@cache_app.command()
def calibrate(
    pairs: PairsOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Verifier file to write.")] = Path("verifier.json"),
    threshold: ThresholdOpt = None,
    min_recall: Annotated[
        float,
        typer.Option("--min-recall", min=0.0, max=1.0, help="Held-out recall the cutoff must keep."),
    ] = 0.4,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.05, max=0.5, help="Share of the pairs held out to pick the cutoff."),
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split (random.Random).")] = 0,
    exclude_sample: Annotated[
        int | None,
        typer.Option(
            "--exclude-sample",
            min=1,
            help="Leave out the pairs `cache eval --sample N --seed S` scores, and every pair sharing a text "
            "with them, so that evaluation stays out of sample.",
        ),
    ] = None,
    exclude_seed: Annotated[int, typer.Option("--exclude-seed", help="The S of --exclude-sample.")] = 0,
    budgets: BudgetsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit a verifier (a duplicate classifier run after the guard) on labelled pairs; write it as JSON."""
    try:
        settings = _settings(budgets, as_json)
        rows = read_pairs(pairs)
    except (ConfigError, PairsError) as exc:
        fail(str(exc), as_json, EXIT_BAD_INPUT)
    if exclude_sample is not None:
        rows = outside_sample(rows, exclude_sample, exclude_seed)
        if not rows:
            fail(f"{pairs}: no pairs left after --exclude-sample {exclude_sample}", as_json, EXIT_BAD_INPUT)
    if not out_path.parent.is_dir():
        fail(f"{out_path.parent}: no such folder for --out", as_json, EXIT_BAD_INPUT)
    chosen = settings.threshold if threshold is None else threshold
    embedder = build_embedder(settings, os.environ)
    if isinstance(embedder, LocalEmbedder) and not as_json:
        err.print(f"Embedding {len(rows)} pairs with {embedder.name} ...", highlight=False)
    source = {"file": pairs.name}
    if exclude_sample is not None:
        source["excluded"] = f"cache eval --sample {exclude_sample} --seed {exclude_seed}"
    try:
        fitted = fit(
            rows,
            embedder,
            threshold=chosen,
            guard=Guard(enabled=settings.guard),
            min_recall=min_recall,
            holdout_share=holdout,
            seed=seed,
            source=source,
        )
    except FitError as exc:
        fail(f"{pairs}: {exc}", as_json, EXIT_BAD_INPUT)
    try:
        fitted.save(out_path)
    except OSError as exc:
        fail(f"cannot write the verifier to {out_path}: {exc.strerror or exc}", as_json, EXIT_FAILED)
    if as_json:
        held = fitted.holdout.__dict__ if fitted.holdout else None
        document = {"path": str(out_path), "cutoff": fitted.cutoff, "source": fitted.source, "holdout": held}
        sys.stdout.write(json.dumps(document) + "\n")
    else:
        table = _calibrate_table(fitted, out_path)
        print_whole(stdout_console(), table, table)


@cache_app.command()
def stats(budgets: BudgetsOpt = None, store: CacheStoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show each namespace's entries, hits, misses, guard refusals and USD saved."""
    settings, url = _store_settings(budgets, store, as_json)
    try:
        opened = _open(settings)
        try:
            rows = opened.stats()
        finally:
            opened.close()
    except Exception as exc:  # an unreachable store is a failure, not bad input
        fail(f"cannot read the cache store `{url}`: {exc}", as_json, EXIT_FAILED)
    total = Counts()
    for row in rows:
        total.add(row.counts)
    entries = sum(row.entries for row in rows)
    if as_json:
        document = {
            "store": url,
            "namespaces": [
                {"namespace": r.key, "label": r.label, "entries": r.entries, **_counts_json(r.counts)}
                for r in rows
            ],
            "total": {"entries": entries, **_counts_json(total)},
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    table = _stats_table(rows, total, entries, url)
    print_whole(stdout_console(), table, table)


@cache_app.command()
def clear(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            help="A namespace key, or a label prefix such as `acme` or `acme/cto`; repeatable "
            "(default: all).",
        ),
    ] = None,
    reset_stats: Annotated[bool, typer.Option("--reset-stats", help="Also zero the counters.")] = False,
    budgets: BudgetsOpt = None,
    store: CacheStoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove cached answers: every namespace, or those named."""
    settings, url = _store_settings(budgets, store, as_json)
    chosen: list[str] | None = None
    try:
        opened = _open(settings)
        try:
            if namespace:
                known = opened.stats()
                chosen = [row.key for row in known if any(_matches(row, name) for name in namespace)]
            removed = opened.clear(chosen, reset_stats=reset_stats) if chosen or not namespace else 0
        finally:
            opened.close()
    except Exception as exc:
        fail(f"cannot clear the cache store `{url}`: {exc}", as_json, EXIT_FAILED)
    if namespace and not chosen:
        fail(f"no namespace matches {', '.join(namespace)}", as_json, EXIT_BAD_INPUT)
    if as_json:
        sys.stdout.write(json.dumps({"removed": removed, "namespaces": chosen}) + "\n")
    else:
        scope = "every namespace" if chosen is None else f"{len(chosen)} namespace(s)"
        stdout_console().print(f"Removed {removed} entr{'y' if removed == 1 else 'ies'} from {scope}.")


def _open(settings: CacheSettings) -> EntryStore:
    return open_configured_store(settings)


def _settings(budgets: Path | None, as_json: bool = False, store: str | None = None) -> CacheSettings:
    """The ``cache:`` section of the settings' budgets.yaml, with --store / ``BUDGETGRAPH_CACHE_URL``."""
    settings = settings_for(as_json, budgets=budgets, cache_url=store)
    budgets = load_budgets(settings.budgets, node_names=NODE_NAMES, allowed_key_env=settings.allowed_key_env)
    section = budgets.section("cache", CacheSettings)
    return section.with_overrides(store=settings.cache_url)


def _store_settings(budgets: Path | None, store: str | None, as_json: bool) -> tuple[CacheSettings, str]:
    """The cache settings with the store chosen by --store, then BUDGETGRAPH_CACHE_URL, then the file."""
    try:
        settings = _settings(budgets, as_json, store)
    except ConfigError as exc:
        fail(config_message(exc), as_json, EXIT_BAD_INPUT)
    return settings, settings.store


def _matches(row: NamespaceStats, name: str) -> bool:
    return name in (row.key, row.label) or row.label.startswith(name.rstrip("/") + "/")


def _counts_json(counts: Counts) -> dict[str, Any]:
    return {
        **counts.as_dict(),
        "saved_usd": float(usd(counts.saved_micro_usd)),
        "refused_by": counts.refusals_by_category(),
    }


def _eval_table(result: EvalResult, path: Path, verifier: Verifier | None) -> Table:
    table = Table(title=f"Cache evaluation: {path.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    mode = "pairwise (one cache per pair)" if result.pairwise else "retrieval (one cache)"
    table.add_row("Pairs", f"{result.pairs} ({result.positives} labelled the same)")
    checks = f"guard {'on' if result.guard else 'off'}"
    if verifier is not None:
        checks += f", verifier (cutoff {verifier.cutoff:.3f})"
    table.add_row("Threshold", f"{result.threshold:.2f}, {checks}, {mode}")
    table.add_row("Hits", f"{result.hits} ({result.exact_hits} exact)")
    table.add_row("Correct hits", str(result.correct_hits))
    table.add_row("False hits", str(result.false_hits))
    if not result.pairwise:
        table.add_row(
            "  on another stored text",
            f"{result.other_hits} ({result.other_exact_hits} of them equal to the query)",
        )
    table.add_row("Misses", str(result.misses))
    table.add_row("Precision", f"{result.precision:.4f}")
    table.add_row("Recall", f"{result.recall:.4f}")
    table.add_row("Hit rate", f"{result.hit_rate:.4f}")
    table.add_row("Guard refusals", str(result.refusals))
    if result.refusals_by:
        table.add_row("  by reason", ", ".join(f"{k} {v}" for k, v in sorted(result.refusals_by.items())))
    for category, (count, hits) in sorted(result.categories.items()):
        kind = "kept" if category == "paraphrase" else "false hits"
        reasons = result.refusals_in.get(category, {})
        why = "; refused: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if reasons else ""
        table.add_row(f"  {category}", f"{hits}/{count} {kind}{why}")
    return table


def _calibrate_table(fitted: Verifier, path: Path) -> Table:
    table = Table(title=f"Verifier written to {path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    source = fitted.source
    table.add_row(
        "Pairs",
        f"{source.get('pairs')} ({source.get('fitted_on')} fitted on, {source.get('held_out')} held out)",
    )
    table.add_row("Threshold", f"{fitted.threshold:.2f}")
    table.add_row("Cutoff", f"{fitted.cutoff:.3f} duplicate probability")
    held = fitted.holdout
    if held is not None:
        table.add_row(
            "Held out, before the verifier",
            f"precision {held.precision_before:.4f}, recall {held.recall_before:.4f}",
        )
        table.add_row("Held out, with verifier", f"precision {held.precision:.4f}, recall {held.recall:.4f}")
    return table


def _stats_table(rows: list[NamespaceStats], total: Counts, entries: int, url: str) -> Table:
    table = Table(title=f"Semantic cache ({url})", title_justify="left")
    table.add_column("namespace", overflow="fold", min_width=12, ratio=1)
    for name in ("entries", "exact", "semantic", "misses", "refused", "saved USD"):
        table.add_column(name, justify="right")
    table.add_column("refused by", overflow="fold")
    table.caption = (
        "exact / semantic: hits; refused: lookups the guard refused; refused by: the kind of difference "
        "(action, direction, polarity, actor, negation, quantity, qualifier;"
        " other: reworded, ambiguous, verifier)"
    )
    for row in rows:
        table.add_row(row.label, str(row.entries), *_count_cells(row.counts))
    table.add_row("total", str(entries), *_count_cells(total), style="bold")
    return table


def _count_cells(counts: Counts) -> list[str]:
    by = ", ".join(f"{name} {n}" for name, n in counts.refusals_by_category().items())
    return [
        str(counts.exact_hits),
        str(counts.semantic_hits),
        str(counts.misses),
        str(counts.refusals),
        f"{usd(counts.saved_micro_usd):f}",
        by,
    ]


__all__ = ["cache_app"]
