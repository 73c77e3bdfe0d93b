"""`budgetgraph run` shows each node as it starts and ends, on stderr; piped tables keep every figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_models
from tests.fakes.openai_server import FakeOpenAIServer

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
BUDGETGRAPH = str(Path(sys.executable).parent / "budgetgraph")
LINE = re.compile(r"^\d\d:\d\d:\d\d (\w+) (started|done: .+|failed after .+|paused: .+|kept: .+)$")
MODEL_SECONDS = 1.5


@pytest.fixture
def slow_server() -> Iterator[FakeOpenAIServer]:
    """A model server that takes 1.5 s for each answer."""
    with FakeOpenAIServer(latency_s=MODEL_SECONDS) as server:
        yield server


def budgetgraph(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout and stderr piped (neither is a terminal)."""
    env = {**os.environ, "OPENAI_API_KEY": "test"}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([BUDGETGRAPH, *args], capture_output=True, text=True, env=env, timeout=180)


def test_the_first_progress_line_comes_before_the_planners_model_answer(slow_server, tmp_path: Path):
    models = write_models(tmp_path / "models.yaml", slow_server.base_url)
    env = {**os.environ, "OPENAI_API_KEY": "test"}

    process = subprocess.Popen(
        [BUDGETGRAPH, "run", TASK, "--models", str(models), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = process.stderr.readline()
    first_at = time.monotonic()
    out, _ = process.communicate(timeout=180)

    assert process.returncode == 0, out
    assert LINE.match(first.rstrip("\n")) and first.endswith(" planner started\n")
    planner = slow_server.chat_requests("planner")[0]  # time.monotonic() is one clock across processes
    assert first_at < planner.finished, "the first line waited for the planner's model answer"


def test_the_first_progress_line_comes_as_soon_as_the_cli_has_started(slow_server, tmp_path: Path):
    models = write_models(tmp_path / "models.yaml", slow_server.base_url)
    env = {**os.environ, "OPENAI_API_KEY": "test"}
    began = time.monotonic()
    subprocess.run([BUDGETGRAPH, "--version"], capture_output=True, env=env, check=True, timeout=60)
    floor = time.monotonic() - began  # the interpreter and the CLI's imports, before any command runs

    began = time.monotonic()
    process = subprocess.Popen(
        [BUDGETGRAPH, "run", TASK, "--models", str(models), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = process.stderr.readline()
    elapsed = time.monotonic() - began
    process.communicate(timeout=180)

    assert first.endswith(" planner started\n")
    # The first line comes as soon as the CLI has started (its imports, about 2 s on this machine),
    # before the planner's 1.5 s model answer could have come.
    assert elapsed < floor + MODEL_SECONDS, (
        f"first line after {elapsed:.2f} s; `budgetgraph --version` alone takes {floor:.2f} s"
    )


def test_json_stays_alone_on_stdout_while_each_node_start_and_end_goes_to_stderr(
    openai_server: FakeOpenAIServer, models_file: Path
):
    done = budgetgraph("run", TASK, "--models", str(models_file), "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lines = done.stderr.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    events = [LINE.match(line).groups() for line in lines]  # type: ignore[union-attr]
    for node in ("planner", "cto", "coo", "reconcile", "review"):
        assert [kind for name, kind in events if name == node][0] == "started"
        assert [kind for name, kind in events if name == node][1].startswith("done: ")
    ends = {name: kind for name, kind in events if kind.startswith("done: ")}
    for row in report["spend"]["nodes"]:
        tokens = row["input_tokens"] + row["output_tokens"]
        assert ends[row["node"]].startswith(
            f"done: {row['tier']} {row['model']}, {tokens:,} tokens, {row['cost_usd']:.6f} USD, "
        )
    assert ends["review"].startswith("done: auto-approved, no model call, ")


def test_quiet_shows_no_progress(openai_server: FakeOpenAIServer, models_file: Path):
    done = budgetgraph("run", TASK, "--models", str(models_file), "--json", "-q")

    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "done"
    assert done.stderr == ""


def test_a_failed_node_and_on_resume_the_nodes_it_kept_are_shown(
    openai_server: FakeOpenAIServer, models_file: Path
):
    openai_server.fail("coo", status=500, times=1)

    failed = budgetgraph("run", TASK, "--thread", "f", "--models", str(models_file))
    resumed = budgetgraph("resume", "f", "--models", str(models_file))

    assert failed.returncode == 1
    assert re.search(r"^\d\d:\d\d:\d\d coo failed after \d+\.\d\d s: \w+: .*500", failed.stderr, re.M)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"^\d\d:\d\d:\d\d cto kept: ", resumed.stderr, re.M)
    assert re.search(r"^\d\d:\d\d:\d\d coo done: standard gpt-4.1-mini, ", resumed.stderr, re.M)


def test_a_pause_for_review_is_shown(openai_server: FakeOpenAIServer, models_file: Path):
    openai_server.set_fields("Reconciliation", risk_score=5)

    paused = budgetgraph("run", TASK, "--models", str(models_file))

    assert paused.returncode == 3
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d review paused: waiting for review, \d+\.\d\d s", paused.stderr.splitlines()[-1]
    )


def spend_rows(table: str) -> list[list[str]]:
    """The body rows of the printed spend table, as cells."""
    lines = table.splitlines()
    body = lines[[line.strip() for line in lines].index("Spend") :]
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in body
        if line.startswith("│") and line.split("│")[1].strip().isdigit()
    ]


@pytest.mark.parametrize("columns", [None, 80])
def test_piped_tables_show_every_figure_and_name_whole(
    openai_server: FakeOpenAIServer, models_file: Path, columns: int | None
):
    run = budgetgraph("run", TASK, "--thread", "t", "--models", str(models_file), columns=columns)
    report = json.loads(budgetgraph("history", "t", "--json", "--models", str(models_file)).stdout)
    spent = budgetgraph("report", "--json", "--models", str(models_file))
    history = budgetgraph("history", "t", "--models", str(models_file), columns=columns)

    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout and "…" not in history.stdout
    rows = spend_rows(run.stdout)
    assert [(r[1], r[3]) for r in rows] == [
        ("planner", "gpt-4.1-mini"),
        ("cto", "gpt-4.1-mini"),
        ("coo", "gpt-4.1-mini"),
        ("reconcile", "gpt-4.1"),
    ]
    assert all(re.fullmatch(r"0\.\d{6}", r[6]) for r in rows)
    total = json.loads(spent.stdout)["total"]["cost_usd"]
    assert sum(float(r[6]) for r in rows) == pytest.approx(total, abs=5e-6)
    assert f"{report['checkpoints'][0]['spend_usd']:.6f}" in history.stdout
    if columns is None:  # `budgetgraph report` keeps its own width (graph/cli_report.py)
        table = budgetgraph("report", "--models", str(models_file)).stdout
        assert "…" not in table and f"{total:.6f}" in table


def test_piped_local_rules_rows_are_not_cut_at_80_columns(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["COLUMNS"] = "80"

    run = subprocess.run(
        [BUDGETGRAPH, "run", TASK, "--review-threshold", "6"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    rows = spend_rows(run.stdout)
    assert {(r[2], r[3], r[6]) for r in rows} == {("local", "local-rules", "0.000000")}
    assert "…" not in run.stdout


def test_the_cli_starts_without_importing_the_model_client():
    # The OpenAI client is a third of the start; it is imported at the first model call.
    code = (
        "import sys, budgetgraph.graph.cli; "
        "print([m for m in ('openai.types.chat', 'langchain_openai') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]", done.stdout
