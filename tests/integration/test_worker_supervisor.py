"""WorkerSupervisor as a real process over stand-in workers (tests/fixtures/worker_stub.py): readiness, signal
forwarding, restarts, and when it gives up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher import procs
from tests.conftest import wait_for

SCRIPT = """
import os, sys
from services.common.workers import RestartBudget, WorkerSupervisor
from services.common.logs import configure_logging
configure_logging("stub")
sys.exit(WorkerSupervisor("tests.fixtures.worker_stub", count=int(sys.argv[1]), environ=os.environ,
                          index_var="STUB_INDEX", ready_var="STUB_READY", ready_fd=int(os.environ["SUPERVISOR_READY"]),
                          stop_timeout_s=10, budget=RestartBudget(limit=2, window_s=60)).run())
"""
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Supervised:
    proc: subprocess.Popen[bytes]
    ready: procs.ReadyPipe
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == name]

    def worker_pids(self) -> list[int]:
        return [line["pid"] for line in self.events("worker_started")]


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Any]:
    started: list[Supervised] = []

    def start(count: int, **env: str) -> Supervised:
        ready = procs.ReadyPipe()
        environ = {**os.environ, "SUPERVISOR_READY": str(ready.write_fd), "PYTHONUNBUFFERED": "1", **env}
        log_path = tmp_path / f"supervisor-{len(started)}.log"
        proc = procs.spawn([sys.executable, "-c", SCRIPT, str(count)], env=environ, log_path=log_path, cwd=ROOT,
                           pass_fds=(ready.write_fd,))
        ready.spawned()
        started.append(Supervised(proc, ready, log_path))
        return started[-1]

    yield start
    for supervised in started:
        procs.kill(supervised.proc)  # its whole process group
        supervised.ready.close()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ready_once_every_worker_is_and_sigterm_reaches_them_all(supervise: Any) -> None:
    supervised = supervise(3)
    wait_for(supervised.ready.check, timeout=30)
    pids = supervised.worker_pids()
    assert len(pids) == 3 and all(map(alive, pids))
    assert [line["worker"] for line in supervised.events("worker_started")] == [0, 1, 2]
    supervised.proc.send_signal(signal.SIGTERM)
    assert supervised.proc.wait(15) == 0
    assert not any(map(alive, pids))
    assert sorted(line["worker"] for line in supervised.events("worker_stopped")) == [0, 1, 2]


def test_a_worker_that_crashes_is_restarted(supervise: Any, tmp_path: Path) -> None:
    supervised = supervise(2, STUB_BEHAVIOUR="crash-once", STUB_MARKER=str(tmp_path / "crashed"))
    wait_for(supervised.ready.check, timeout=30)  # ready only once the replacement serves
    crashed = int((tmp_path / "crashed").read_text())
    [exited] = supervised.events("worker_exited")
    assert exited["worker"] == crashed and exited["exit_code"] == 3 and exited["restart"]
    assert [line["worker"] for line in supervised.events("worker_started")].count(crashed) == 2
    assert supervised.proc.poll() is None
    supervised.proc.send_signal(signal.SIGTERM)
    assert supervised.proc.wait(15) == 0


def test_a_crash_loop_stops_everything_and_exits_non_zero(supervise: Any) -> None:
    supervised = supervise(2, STUB_BEHAVIOUR="crash")
    assert supervised.proc.wait(30) == 1
    exits = supervised.events("worker_exited")
    assert [line["restart"] for line in exits] == [True, True, False]  # RestartBudget(limit=2)
    assert not supervised.ready.check(), "never announced ready"


def test_a_configuration_error_is_not_restarted(supervise: Any) -> None:
    supervised = supervise(2, STUB_BEHAVIOUR="config")
    assert supervised.proc.wait(30) == 2
    assert len(supervised.events("worker_started")) == 2
    assert not any(line["restart"] for line in supervised.events("worker_exited"))
