"""One import name, no work at import, `--help` and `--version` whatever the environment holds."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUDGETGRAPH = Path(sys.executable).parent / "budgetgraph"

BROKEN_BUDGETS = "budgets:\n  cto_agent:\n    max_tokenz: 5\n"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BUDGETGRAPH_", "OTEL_"))}
    return subprocess.run(
        [str(BUDGETGRAPH), *args],
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def all_modules() -> list[str]:
    import pkgutil

    import budgetgraph

    names = ["budgetgraph", "budgetgraph.settings"]
    for sub in ("graph", "agents", "budgets", "tracing"):
        package = importlib.import_module(f"budgetgraph.{sub}")
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")]
    assert budgetgraph.__name__ == "budgetgraph"
    return [n for n in names if not n.endswith("__main__")]


def test_importing_every_module_leaves_the_working_directory_empty(tmp_path: Path):
    modules = all_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from opentelemetry import trace\n"
        "print(type(trace.get_tracer_provider()).__name__)\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_BUDGETS)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "BUDGETGRAPH_BUDGETS": str(broken)}

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ProxyTracerProvider"  # no telemetry was set up
    assert list(work.iterdir()) == []
    assert len(modules) > 60


def test_help_and_version_work_and_write_nothing_whatever_the_environment(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_BUDGETS)
    work = tmp_path / "work"
    work.mkdir()
    hostile = {
        "BUDGETGRAPH_BUDGETS": str(broken),
        "BUDGETGRAPH_CACHE": "sometimes",
        "BUDGETGRAPH_LEDGER_URL": "redis://127.0.0.1:notaport/0",
    }

    helped = run_cli("--help", cwd=work, **hostile)
    version = run_cli("--version", cwd=work, **hostile)
    run_help = run_cli("run", "--help", cwd=work, **hostile)

    assert helped.returncode == 0 and "run" in helped.stdout, helped.stderr
    assert version.returncode == 0
    assert version.stdout.strip() == f"budgetgraph {importlib.metadata.version('budgetgraph')}"
    assert run_help.returncode == 0
    assert list(work.iterdir()) == []


def test_run_help_names_each_options_variable(tmp_path: Path):
    done = run_cli("run", "--help", cwd=tmp_path)

    text = " ".join(done.stdout.split())
    for variable in (
        "BUDGETGRAPH_MODELS",
        "BUDGETGRAPH_BUDGETS",
        "BUDGETGRAPH_LEDGER_URL",
        "BUDGETGRAPH_CHECKPOINTER",
        "BUDGETGRAPH_CACHE",
        "BUDGETGRAPH_TENANT",
    ):
        assert variable in text, variable


def test_a_broken_budgets_variable_gets_the_options_one_line_error_and_writes_nothing(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_BUDGETS)
    work = tmp_path / "work"
    work.mkdir()

    by_variable = run_cli("run", "Should we hire?", cwd=work, BUDGETGRAPH_BUDGETS=str(broken))
    by_option = run_cli("run", "Should we hire?", "--budgets", str(broken), cwd=work)

    assert by_variable.returncode == by_option.returncode == 2
    assert by_variable.stderr == by_option.stderr
    assert by_variable.stderr.strip() == f"Error: {broken}:3: `budgets.cto_agent.max_tokenz`: unknown key"
    assert "Traceback" not in by_variable.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ("run", "   "),
        ("run", "x", "--ledger", "rediss//:SECRET@host"),
        ("run", "x", "--checkpointer", "sqlite:///"),
        ("resume", "no-such-thread"),
        ("resume", "t", "--approve", "--reject"),
        ("edit", "no-such-thread", "--add-constraint", "x"),
        ("edit", "t"),
        ("history", "no-such-thread"),
        ("fork", "no-such-thread", "--checkpoint", "c"),
        ("plan", ""),
        ("trace", "no-such-thread"),
        ("cache", "stats", "--store", "s3://x"),
        ("run", "x", "--checkpointer", "sqlite:////tmp"),
        ("run", "x", "--checkpointer", "postgresql://postgres:SECRET@127.0.0.1:1/test"),
        ("run", "x", "--checkpointer", "postgresql://postgres@127.0.0.1:5432/budgetgraph_no_such_db"),
        ("run", "x", "--ledger", "redis://:SECRET@127.0.0.1:notaport/0"),
        ("run", "x", "--tenant", "a\x1b[2Jb"),
        ("resume", "t", "--approve", "--raise-cap", "nan"),
        ("plan", "x", "--budgets", "/dev/zero"),
    ],
)
def test_a_refused_command_exits_2_and_writes_nothing(tmp_path: Path, args: tuple[str, ...]):
    done = run_cli(*args, cwd=tmp_path)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "SECRET" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_distribution_installs_one_top_level_name(tmp_path: Path):
    import shutil

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("budgetgraph/__init__.py", "budgetgraph/settings.py", "budgetgraph/py.typed"):
        shutil.copy2(REPO_ROOT / name, source / name)  # new files may not be tracked yet
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("budgetgraph-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        assert archive.read(top_level).decode().split() == ["budgetgraph"]
        paths = [line.split(",")[0] for line in archive.read(record).decode().splitlines() if line]
    dist_info = f"budgetgraph-{importlib.metadata.version('budgetgraph')}.dist-info"
    assert {p.split("/")[0] for p in paths} == {"budgetgraph", dist_info}
    for expected in (
        "budgetgraph/graph/builder.py",
        "budgetgraph/agents/planner.py",
        "budgetgraph/budgets/budgets.yaml",
        "budgetgraph/budgets/routing/labelled_requests.jsonl",
        "budgetgraph/tracing/spans.py",
    ):
        assert expected in paths


def test_the_editable_finder_resolves_only_budgetgraph():
    site = Path(importlib.util.find_spec("budgetgraph").origin).parent  # type: ignore[union-attr]
    finders = [
        Path(p)
        for entry in sys.path
        if Path(entry).is_dir()
        for p in Path(entry).glob("__editable___budgetgraph_*_finder.py")
    ]
    if not finders:
        pytest.skip(f"budgetgraph is not an editable install here (imported from {site})")
    namespace: dict[str, object] = {}
    exec(finders[0].read_text(), namespace)  # noqa: S102 - setuptools' generated module, read as data
    mapping = namespace["MAPPING"]
    assert isinstance(mapping, dict) and mapping
    assert all(name == "budgetgraph" or name.startswith("budgetgraph.") for name in mapping)


def test_another_distributions_top_level_agents_package_lives_beside_it(tmp_path: Path):
    other = tmp_path / "site" / "agents"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("NAME = 'openai-agents stand-in'\n")
    code = (
        "import agents, budgetgraph.agents\n"
        "print(agents.NAME); print(budgetgraph.agents.__name__, hasattr(budgetgraph.agents, 'plan'))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["openai-agents stand-in", "budgetgraph.agents True"]


HOSTILE_BUDGETS = {
    "non_utf8.yaml": b"budgets:\n  cto: {max_tokens: \xff\xfe}\n",
    "utf16.yaml": "budgets: {}\n".encode("utf-16"),
    "binary.yaml": bytes(range(256)),
    "tenants_list.yaml": b"tenants: [a, b]\n",
    "nested.yaml": b"[" * 5000,
    "duplicate.yaml": b"budgets:\n  cto_agent: {max_cost_usd: 0.01}\n  cto_agent: {max_cost_usd: 500}\n",
    "bool_cap.yaml": b"budgets:\n  cto: {max_tokens: yes}\n",
    "task_int.yaml": b"task: 5\n",
    "laughs.yaml": b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BUDGETS))
def test_a_hostile_budgets_file_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, name: str):
    config = tmp_path / "config"
    config.mkdir()
    (config / name).write_bytes(HOSTILE_BUDGETS[name])
    work = tmp_path / "work"
    work.mkdir()

    done = run_cli("run", "Should we hire?", "--budgets", str(config / name), cwd=work)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"Error: {config / name}") and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert list(work.iterdir()) == []


def test_a_disk_that_refuses_the_checkpoint_file_is_exit_1_with_one_line(tmp_path: Path):
    (tmp_path / "a-file").write_text("")

    done = run_cli("run", "Should we hire?", "--checkpointer", "sqlite:///a-file/runs.sqlite", cwd=tmp_path)

    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("Error: Cannot write the checkpoints at `a-file/runs.sqlite`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_piped_output_never_cuts_a_figure(tmp_path: Path):
    done = run_cli(
        "run", "Should we hire two engineers this quarter?", "--thread", "p", cwd=tmp_path, COLUMNS=""
    )

    assert done.returncode in (0, 3), done.stderr
    assert "…" not in done.stdout
    assert "local-rules" in done.stdout and "0.000000" in done.stdout
