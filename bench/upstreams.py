"""The system under test as the bench sees it: the stack's endpoints, the upstreams the proxy calls (the emulator
or bench/static_upstream.py) with their delay knobs, and small loopback HTTP helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "gpt-4o-mini"


@dataclass
class Endpoints:
    proxy_url: str
    api_key: str
    admin_token: str
    nats_url: str
    tracer_url: str
    emulator_url: str


class Upstream:
    """One upstream the proxy (and the direct runs) can call, with the emulator's delay knobs."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def set_delays(self, latency_ms: int = 0, ttft_ms: int = 0, chunk_interval_ms: int = 0) -> None:
        plan = json.dumps({"latency_ms": latency_ms, "ttft_ms": ttft_ms, "chunk_interval_ms": chunk_interval_ms})
        path = "/_static/profile" if self.name == "static" else f"/_emulator/faults/{MODEL}"
        request = urllib.request.Request(self.base_url + path, data=plan.encode(), method="PUT",  # noqa: S310
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback URL we built)
            response.read()


class StaticUpstream:
    """bench/static_upstream.py as a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.static_upstream", "--port", "0"],
                                     stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("STATIC_UPSTREAM_PORT="):
            raise RuntimeError(f"static upstream did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.split('=', 1)[1]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL we built)
            return json.loads(response.read())  # type: ignore[no-any-return]
    except Exception:  # 503 while not ready, or restarting: "unknown"
        return {}
