"""py-spy sampling of a running service (flamegraph SVG + folded stacks) and a top-functions summary of the stacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy binary next to this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    """py-spy processes sampling one pid; `wait()` when the load is over."""

    procs: list[subprocess.Popen[bytes]]
    folded: Path
    svg: Path
    log: Path

    def wait(self, timeout: float) -> bool:
        """Wait for py-spy to finish; its log is removed when it worked."""
        ok = True
        for proc in self.procs:
            try:
                ok = proc.wait(timeout) == 0 and ok
            except subprocess.TimeoutExpired:
                proc.kill()
                ok = False
        ok = ok and self.folded.exists()
        if ok:
            self.log.unlink(missing_ok=True)
        return ok


def record(pid: int, seconds: int, out_prefix: Path, *, rate: int = 250) -> Recording | None:
    """Start sampling `pid` (and its subprocesses) for `seconds`, without pausing it; None without py-spy."""
    binary = py_spy()
    if binary is None:
        return None
    folded, svg, log = (out_prefix.with_suffix(suffix) for suffix in (".folded", ".svg", ".py-spy.log"))
    base = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--nonblocking",
            "--subprocesses"]
    with open(log, "wb") as log_file:
        procs = [subprocess.Popen([*base, "--format", fmt, "--output", str(path)], stdout=log_file,
                                  stderr=subprocess.STDOUT) for fmt, path in (("raw", folded), ("flamegraph", svg))]
    return Recording(procs, folded, svg, log)


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` → `func (file path shortened to the package)`; line numbers dropped."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def summarize_folded(text: str, top: int = 15) -> dict[str, object]:
    """Sample shares from py-spy's raw (folded) output: per function (own and inclusive time), per package,
    and attributed to the deepest Routeur frame of each stack (what our code spends, callees included)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        files[_module_group(frames[-1].rpartition("(")[2].rstrip(")"))] += count
        ours = [f for f in frames if _is_routeur(f) and not f.startswith(_ROOTS)]
        if ours:
            attributed[ours[-1]] += count
        else:
            entry = next((f for f in frames if not f.startswith(_LOOP_FRAMES)), None)
            attributed[f"(no Routeur frame) {entry}" if entry else
                       "(event loop itself: uvloop, C extensions such as aiohttp's HTTP parser, syscalls)"] += count

    def share(counter: Counter[str]) -> list[dict[str, object]]:
        return [{"function": name, "share": round(n / total, 4)} for name, n in counter.most_common(top)]

    if not total:
        return {"samples": 0, "self": [], "inclusive": [], "inclusive_routeur": [], "attributed": [], "by_area": []}
    partial = Counter({name: n for name, n in inclusive.items() if not name.startswith(_ENTRY_FRAMES)})
    ours_inclusive = Counter({name: n for name, n in partial.items() if _is_routeur(name)})
    return {"samples": total, "self": share(own), "inclusive": share(partial),
            "inclusive_routeur": share(ours_inclusive), "attributed": share(attributed), "by_area": share(files)}


_ROOTS = ("<module> ", "run_service ", "main ")
_LOOP_FRAMES = ("<module> ", "run_service ", "run ", "Runner.run ", "_run_module_as_main ", "_run_code ")
_ENTRY_FRAMES = (*_LOOP_FRAMES, "main ", "Thread._bootstrap", "Thread.run ")


def _is_routeur(name: str) -> bool:
    return name.rpartition("(")[2].startswith(("services/", "proto/", "catalog/"))


def _module_group(path: str) -> str:
    """The package a leaf frame belongs to (services/proxy, aiohttp, asyncio, nats, msgspec, …)."""
    parts = path.split("/")
    if parts[0] in ("services", "proto", "catalog") and len(parts) > 1:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if parts[0] else path
