"""A small supervisor for services that run several worker processes on one port (SO_REUSEPORT): start them,
wait until each reports ready, forward SIGTERM/SIGINT, restart a crashed worker within a budget."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from services.common.lifecycle import CONFIG_EXIT

_CLEAN_STOP = (0, -signal.SIGTERM, -signal.SIGINT)  # drained, or stopped before it had installed its handlers


def notify_ready(fd: int) -> None:
    """Tell whoever started this process that it serves now: one byte on the pipe it handed down."""
    if fd < 0:
        return
    with contextlib.suppress(OSError):  # whoever started it is gone: nothing to tell
        os.write(fd, b"R")
    with contextlib.suppress(OSError):
        os.close(fd)


# ------------------------------------------------------------------------------------ worker supervisor


class RestartBudget:
    """How many unexpected worker exits are absorbed by restarting the worker: at most `limit` within
    `window_s`. One more means something is wrong with every worker (a crash loop), so the supervisor stops
    them all and exits non-zero: the launcher or Kubernetes then restarts the whole pod/process with back-off."""

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._exits: list[float] = []

    def allow(self, now: float) -> bool:
        """Record one unexpected exit at `now`; True when a restart is still within the budget."""
        self._exits = [t for t in self._exits if now - t < self.window_s] + [now]
        return len(self._exits) <= self.limit


def restart_delay_s(restarts: int) -> float:
    """Back-off before a worker's next start: 0.5 s, 1 s, 1.5 s … up to 5 s."""
    return min(5.0, 0.5 * (restarts + 1))


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on host:port. The bind has no SO_REUSEPORT, so it also fails
    against listeners that have it set: a leftover worker of an earlier run would otherwise silently share
    the port with the new ones."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # the workers' own bind reports a bad host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
            try:
                probe.bind(address)
            except OSError:
                return True
    return False


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the supervisor dies (Linux), so a `kill -9` of the supervisor
    alone drains the workers instead of leaving them listening."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready_read: int = -1
    ready: bool = False
    restarts: int = 0
    restart_at: float | None = None


class WorkerSupervisor:
    """Runs `count` copies of `python -m module` in this process group and keeps them running.

    Each worker gets the same environment plus `index_var` (0 … count-1) and `ready_var` (a pipe it writes
    one byte to once it serves). SIGTERM/SIGINT are forwarded to every worker, which drains on its own, and
    the supervisor exits once all have. A worker that dies unexpectedly is restarted after a short back-off
    (the others keep serving); more than the `RestartBudget` allows, or a worker exiting with a configuration
    error, stops all of them and the supervisor exits non-zero. `ready_fd` (the supervisor's own parent's
    pipe) gets its byte once every worker has reported ready."""

    POLL_S = 0.25

    def __init__(self, module: str, *, count: int, environ: Mapping[str, str], index_var: str, ready_var: str,
                 ready_fd: int = -1, stop_timeout_s: float = 60.0, budget: RestartBudget | None = None) -> None:
        self.module = module
        self.environ = dict(environ)
        self.index_var = index_var
        self.ready_var = ready_var
        self.ready_fd = ready_fd
        self.stop_timeout_s = stop_timeout_s
        self.budget = budget or RestartBudget()
        self.workers = [_Worker(index) for index in range(count)]
        self.log = structlog.get_logger()
        self._signal: int | None = None
        self._stopping_since: float | None = None
        self._exit_code = 0
        self._announced = False

    # --------------------------------------------------------------------------------- running

    def run(self) -> int:
        """Start the workers and supervise them until they have all stopped; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.log.info("workers_starting", workers=len(self.workers), pid=os.getpid())
        for worker in self.workers:
            self._spawn(worker)
        while True:
            self._read_ready()
            now = time.monotonic()
            if self._signal is not None and self._stopping_since is None:
                self._stop(self._signal, now, reason="signal")
            for worker in self.workers:
                self._check(worker, now)
            if not self._announced and all(w.ready for w in self.workers):
                self._announced = True
                self.log.info("workers_ready", workers=len(self.workers))
                notify_ready(self.ready_fd)
            if self._stopping_since is not None:
                if all(w.proc is None for w in self.workers):
                    break
                if now - self._stopping_since > self.stop_timeout_s:
                    self._kill_remaining()
        self.log.info("workers_stopped", exit_code=self._exit_code)
        return self._exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signal = signum  # acted on by the loop within POLL_S (select is retried after a handler)

    def _spawn(self, worker: _Worker) -> None:
        read, write = os.pipe()
        env = {**self.environ, self.index_var: str(worker.index), self.ready_var: str(write)}
        try:
            worker.proc = subprocess.Popen([sys.executable, "-m", self.module], env=env, pass_fds=(write,),
                                           stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent(os.getpid()))
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        worker.ready_read, worker.ready, worker.restart_at = read, False, None
        self.log.info("worker_started", worker=worker.index, pid=worker.proc.pid)

    def _read_ready(self) -> None:
        """Wait up to POLL_S for workers' ready bytes."""
        pending = {w.ready_read: w for w in self.workers if w.ready_read >= 0}
        if not pending:
            time.sleep(self.POLL_S)
            return
        readable, _, _ = select.select(list(pending), [], [], self.POLL_S)
        for fd in readable:
            worker = pending[fd]
            if os.read(fd, 16):
                worker.ready = True
            self._close_ready(worker)  # one byte is all a worker sends; EOF = it exited before serving

    def _close_ready(self, worker: _Worker) -> None:
        if worker.ready_read >= 0:
            os.close(worker.ready_read)
            worker.ready_read = -1

    def _check(self, worker: _Worker, now: float) -> None:
        if worker.proc is not None and (code := worker.proc.poll()) is not None:
            pid = worker.proc.pid
            worker.proc = None
            self._close_ready(worker)
            if self._stopping_since is not None:
                self.log.info("worker_stopped", worker=worker.index, pid=pid, exit_code=code)
                if code not in _CLEAN_STOP and self._exit_code == 0:
                    self._exit_code = 1
                return
            if code == CONFIG_EXIT or not self.budget.allow(now):
                self.log.error("worker_exited", worker=worker.index, pid=pid, exit_code=code, restart=False)
                self._stop(signal.SIGTERM, now, reason="worker_failed",
                           exit_code=CONFIG_EXIT if code == CONFIG_EXIT else 1)
                return
            worker.restart_at = now + restart_delay_s(worker.restarts)
            worker.restarts += 1
            self.log.error("worker_exited", worker=worker.index, pid=pid, exit_code=code, restart=True,
                           restart_in_s=round(worker.restart_at - now, 2))
        elif worker.proc is None and worker.restart_at is not None and now >= worker.restart_at:
            try:
                self._spawn(worker)
            except OSError as exc:
                self.log.error("worker_spawn_failed", worker=worker.index, error=type(exc).__name__)
                self._stop(signal.SIGTERM, now, reason="worker_failed", exit_code=1)

    def _stop(self, sig: int, now: float, *, reason: str, exit_code: int = 0) -> None:
        self._stopping_since = now
        self._exit_code = exit_code
        self.log.info("workers_stopping", reason=reason, signal=signal.Signals(sig).name)
        for worker in self.workers:
            worker.restart_at = None
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(sig)

    def _kill_remaining(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                self.log.error("worker_killed", worker=worker.index, pid=worker.proc.pid,
                               after_s=self.stop_timeout_s)
                worker.proc.kill()
        self._exit_code = self._exit_code or 1
