"""Small process helpers: free ports, waiting for readiness, stopping process groups."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL we built)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(argv: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Start a process in its own session (its process group is the one to kill), stdout and stderr appended
    to `log_path`; `pass_fds` stay open in it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True, pass_fds=pass_fds)


class ReadyPipe:
    """A pipe whose write end a child inherits (its number goes in an environment variable) and writes one
    byte to once it serves: readiness that an HTTP probe cannot see, e.g. every worker of a proxy that
    runs several on one port."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.ready = False

    def spawned(self) -> None:
        """Call once the child has started: only the child keeps the write end."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def check(self) -> bool:
        """True once the byte arrived (never blocks)."""
        if not self.ready and self.read_fd >= 0 and select.select([self.read_fd], [], [], 0)[0]:
            self.ready = bool(os.read(self.read_fd, 16))
            if not self.ready:  # EOF: the child exited without serving; its exit is reported by the caller
                self.close()
        return self.ready

    def close(self) -> None:
        self.spawned()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; then SIGKILL whatever is left in its process group."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
    kill_group_leftovers(proc)


def kill_group_leftovers(proc: subprocess.Popen[bytes]) -> None:
    """Call right after `proc` (a group leader from `spawn`) exited: a process with worker processes of its
    own must not leave one behind. Only right after, so that its group id cannot have been reused."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is empty (the usual case)
        pass


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def wait_until(check: object, timeout: float, *, what: str, proc: subprocess.Popen[bytes] | None = None,
               log_path: Path | None = None) -> None:
    """Poll `check()` until true; fail early if `proc` exits, naming `what` and showing its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{tail(log_path) if log_path else ''}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f}s:\n{tail(log_path) if log_path else ''}")
