"""`langgraph dev` in a subprocess, for tests that drive the served graph over HTTP.

:func:`langgraph_dev` starts one server on a free port of 127.0.0.1 with the
repository's real ``langgraph.json``, its model tiers pointed at a
:class:`FakeOpenAIServer` that lives as long as it does and its spend ledger in
a SQLite file of its own, and stops both afterwards. The server runs in a temp
directory, so the threads and assistants it keeps in ``.langgraph_api/`` start
empty every time and never land in the repository.

Test modules wrap it in a module-scoped fixture, so the server's start-up (a few
seconds, :data:`READY_DEADLINE_S` at worst) is paid once per module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langgraph_sdk.client import SyncLangGraphClient

from budgetgraph.budgets.ledger import LedgerRecord, open_ledger
from tests.fakes.openai_server import FakeOpenAIServer

REPO_ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
READY_DEADLINE_S = 90.0
STOP_GRACE_S = 15.0
TEST_TIMEOUT_S = READY_DEADLINE_S + 30
"""Whichever test runs first also pays for the server's start-up, so every test gets that much on top."""

GRAPH_ID = "decision"


@dataclass(frozen=True)
class ServedGraph:
    """A running `langgraph dev` and what it talks to.

    Attributes:
        url: The server's base URL (``http://127.0.0.1:PORT``).
        openai: The model endpoint of every tier.
        ledger: The SQLite spend ledger the served graph records into.
        workdir: The server's working directory (its ``.langgraph_api/``, log and ledger).
        log: The server's combined stdout and stderr.
    """

    url: str
    openai: FakeOpenAIServer
    ledger: Path
    workdir: Path
    log: Path

    def ledger_records(self, thread_id: str) -> list[LedgerRecord]:
        """The spend the ledger settled for one thread's runs, oldest first."""
        ledger = open_ledger(f"sqlite:///{self.ledger}")
        try:
            return [record for record in ledger.records() if record["thread_id"] == thread_id]
        finally:
            ledger.close()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(openai_base_url: str, ledger: Path, serving: Path | None = None) -> dict[str, str]:
    """The parent's environment without model, budgetgraph, tracing or LangSmith settings.

    The spend ledger goes to ``ledger``: by default the served graph would keep it in
    ``.budgetgraph/`` of its working directory. ``PYTHONPATH`` puts this checkout
    first, whatever the virtual environment has installed.
    """
    dropped = ("OPENAI_", "BUDGETGRAPH_", "OTEL_", "LANGSMITH_", "LANGCHAIN_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    env.update(
        OPENAI_BASE_URL=openai_base_url,
        OPENAI_API_KEY="test",
        BUDGETGRAPH_LEDGER_URL=f"sqlite:///{ledger}",
        BUDGETGRAPH_TRACE_STORE=str(ledger.with_name("traces.sqlite")),
        BUDGETGRAPH_CACHE="off",
        **({"BUDGETGRAPH_SERVING": str(serving)} if serving is not None else {}),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll ``GET /ok`` until it answers 200; fail with the server's output otherwise."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"`langgraph dev` exited with code {process.returncode} before it was ready:\n"
                f"{log.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{url}/ok", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"`langgraph dev` did not answer {url}/ok within {READY_DEADLINE_S:.0f} s:\n"
        f"{log.read_text(errors='replace')}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server, and kill it if it has not exited within :data:`STOP_GRACE_S`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_GRACE_S)


@contextmanager
def langgraph_dev(workdir: Path, serving: Path | None = None) -> Iterator[ServedGraph]:
    """Run `langgraph dev` (no browser, no reload, no analytics) until the block ends.

    Args:
        workdir: An empty directory for the server's state, ledger and log.
        serving: The serving file (profiles and API keys, ``BUDGETGRAPH_SERVING``);
            ``None``: no auth, one profile.

    Yields:
        The running server.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    ledger = workdir / "ledger.sqlite"
    print(f"langgraph dev on {url}, output in {log}")  # shown with a failing test's setup output
    command = [
        str(LANGGRAPH),
        "dev",
        "--config",
        str(REPO_ROOT / "langgraph.json"),
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with FakeOpenAIServer() as openai:  # the endpoint must outlive the server
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=server_env(openai.base_url, ledger=ledger, serving=serving),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_ready(process, url, log)
            yield ServedGraph(url=url, openai=openai, ledger=ledger, workdir=workdir, log=log)
        finally:
            stop(process)


def system_assistant_id(client: SyncLangGraphClient) -> str:
    """The assistant the server made for the `decision` graph of langgraph.json."""
    (assistant,) = client.assistants.search(graph_id=GRAPH_ID, metadata={"created_by": "system"})
    return str(assistant["assistant_id"])
