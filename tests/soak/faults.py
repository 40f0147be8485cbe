"""Fault injection against the real processes of a test stack: kill -9 and let the supervisor restart,
freeze a process (SIGSTOP/SIGCONT), make ClickHouse's storage refuse writes, freeze the S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from launcher import procs
from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from tests.conftest import sql


def wait_restarted(stack: Stack, name: str, old_pid: int, timeout: float = 60.0) -> float:
    """Wait until the supervisor has a new `name` process answering /readyz; seconds it took."""
    started = time.monotonic()
    child = stack.children[name]
    procs.wait_until(lambda: child.proc is not None and child.proc.pid != old_pid and child.proc.poll() is None
                     and procs.http_ok(f"{child.url}/readyz"), timeout, what=f"{name} restarted by the supervisor")
    return time.monotonic() - started


def wait_nats_restarted(stack: Stack, old_pid: int, timeout: float = 60.0) -> float:
    """Wait until the supervisor has restarted nats-server and every service is ready on it again."""
    started = time.monotonic()
    procs.wait_until(lambda: stack.nats.proc is not None and stack.nats.proc.pid != old_pid
                     and procs.port_open(stack.nats.port), timeout, what="nats-server restarted by the supervisor")
    for child in stack.children.values():
        procs.wait_until(lambda c=child: procs.http_ok(f"{c.url}/readyz"), timeout, what=f"{child.name} ready")
    return time.monotonic() - started


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP the process for the duration of the block (it holds its sockets but answers nothing)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def listening_pid(port: int) -> int:
    """The pid of the process listening on 127.0.0.1:`port` (found through /proc, so only that process)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


def clickhouse_table_dirs(stack: Stack) -> list[Path]:
    """The data directories of the tables every trace insert writes (`traces` and its rollup)."""
    rows = sql(stack, "SELECT name, data_paths FROM system.tables WHERE database = currentDatabase() "
                      "AND name IN ('traces', 'usage_minute')")
    paths = [Path(path) for row in rows for path in row["data_paths"]]
    assert len(paths) >= 2, rows
    return paths


def immutable_supported(probe_dir: Path) -> str | None:
    """None when `chattr +i` works here (root with CAP_LINUX_IMMUTABLE on ext4/xfs…), else why not."""
    probe = probe_dir / f".chattr-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"chattr +i failed: {done.stderr.strip()}"
        subprocess.run(["chattr", "-i", str(probe)], check=True)
        return None
    except FileNotFoundError:
        return "chattr is not installed"
    finally:
        probe.rmdir()


@contextmanager
def unwritable(dirs: list[Path]) -> Iterator[None]:
    """Make directories immutable (`chattr +i`): nothing can be created in them, not even by root, so the
    embedded ClickHouse engine cannot write a new part and every insert fails, while reads keep working."""
    done: list[Path] = []
    try:
        for path in dirs:
            subprocess.run(["chattr", "+i", str(path)], check=True)
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def metric_sum(url: str, name: str) -> float:
    """The sum of every series of a Prometheus counter on `url`/metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"))


# ------------------------------------------------------------------------------------------ the catalogue

Inject = Callable[[Stack, S3Endpoint, list[str], float], None]


@dataclass(frozen=True)
class Fault:
    """`inject(stack, s3_endpoint, notes, outage_s)` blocks until the fault is over and appends what it saw."""

    name: str
    inject: Inject
    refusals_expected: bool = False  # billing or NATS down: 503 billing_unavailable is the right answer


def _crash(name: str) -> Inject:
    def inject(stack: Stack, _: S3Endpoint, notes: list[str], __: float) -> None:
        pid = stack.crash_service(name)
        took = wait_restarted(stack, name, pid)
        notes.append(f"{name} back (restarted by the supervisor) {took:.1f}s after kill -9")
    return inject


def _crash_nats(stack: Stack, _: S3Endpoint, notes: list[str], __: float) -> None:
    pid = stack.crash_nats()
    took = wait_nats_restarted(stack, pid)
    notes.append(f"nats-server and every service ready again {took:.1f}s after kill -9")


def _clickhouse_unwritable(stack: Stack, _: S3Endpoint, notes: list[str], outage_s: float) -> None:
    dirs = clickhouse_table_dirs(stack)
    if (problem := immutable_supported(dirs[0].parent)) is not None:
        pytest.skip(f"cannot make ClickHouse's storage unwritable here: {problem}")
    tracer = stack.children["tracer"].url
    failed = metric_sum(tracer, "routeur_tracer_failed_inserts_total")
    with unwritable(dirs):
        time.sleep(outage_s)
        failed = metric_sum(tracer, "routeur_tracer_failed_inserts_total") - failed
    assert failed > 0, "the fault did not bite: no insert failed while ClickHouse could not write"
    notes.append(f"{failed:.0f} ClickHouse inserts refused during {outage_s:.0f}s")


def _tracer_frozen(stack: Stack, _: S3Endpoint, notes: list[str], outage_s: float) -> None:
    proc = stack.children["tracer"].proc
    assert proc is not None
    with frozen(proc.pid):
        time.sleep(outage_s)
    notes.append(f"tracer (and its embedded ClickHouse) SIGSTOPped {outage_s:.0f}s")


def _s3_frozen(stack: Stack, s3_endpoint: S3Endpoint, notes: list[str], outage_s: float) -> None:
    archiver = stack.children["archiver"].url
    pid = listening_pid(urlsplit(s3_endpoint.url).port or 80)
    with frozen(pid):
        time.sleep(1.0)  # puts already answered are counted by now
        archived = metric_sum(archiver, "routeur_archiver_archived_total")
        time.sleep(max(0.0, outage_s - 1.0))
        archived = metric_sum(archiver, "routeur_archiver_archived_total") - archived
    assert archived == 0, "the fault did not bite: archives were written while radosgw was frozen"
    notes.append(f"radosgw SIGSTOPped {outage_s:.0f}s; no archive written meanwhile")


FAULTS = [
    Fault("kill -9 tracer", _crash("tracer")),
    Fault("kill -9 archiver", _crash("archiver")),
    Fault("kill -9 billing", _crash("billing"), refusals_expected=True),
    Fault("kill -9 router", _crash("router")),
    Fault("kill -9 nats-server", _crash_nats, refusals_expected=True),
    Fault("ClickHouse cannot write", _clickhouse_unwritable),
    Fault("tracer frozen (SIGSTOP)", _tracer_frozen),
    Fault("S3 frozen (radosgw SIGSTOP)", _s3_frozen),
]
