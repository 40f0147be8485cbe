"""Single-node Ceph (mon + one BlueStore-on-a-file OSD + radosgw) on 127.0.0.1: a real S3 server for tests."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO

GIB = 1024**3
INSTALL_HINT = "apt-get install -y radosgw ceph-mon ceph-osd"
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "monmaptool", "radosgw-admin", "ceph")
RGW_NAME = "client.rgw.a"
S3_UID = "routeur"
STOP_ORDER = ("radosgw", "osd", "mon")


class CephStartError(RuntimeError):
    """A daemon or an admin command failed while starting the cluster; the message quotes its log."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach the cluster's S3 API."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def __repr__(self) -> str:
        return f"S3Endpoint(url={self.url!r}, access_key={self.access_key!r}, secret_key='**********')"


@dataclass(frozen=True)
class _State:
    """What must stay the same for the life of a data dir; saved as JSON (mode 0600: it holds the S3 secret)."""

    fsid: str
    osd_uuid: str
    mon_port: int
    rgw_port: int
    access_key: str
    secret_key: str


def ceph_available() -> str | None:
    """None when every Ceph binary is on PATH, else a message saying what is missing and how to install it."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if not missing:
        return None
    return f"Ceph binaries not on PATH: {', '.join(missing)}; install them with `{INSTALL_HINT}` (as root)."


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _config(data_dir: Path, state: _State, block_size_bytes: int) -> str:
    d = data_dir
    return f"""[global]
fsid = {state.fsid}
mon host = v2:127.0.0.1:{state.mon_port}
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms mon service mode = crc secure
ms mon cluster mode = crc secure
run dir = {d}/run
keyring = {d}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon data avail crit = 1
mon data avail warn = 2
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
osd max object name len = 256
osd max object namespace len = 64

[mon]
mon data = {d}/mon
public addr = 127.0.0.1
log file = {d}/log/$name.log

[osd]
osd data = {d}/osd0
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {block_size_bytes}
osd memory target = 939524096
osd fast shutdown = false
log file = {d}/log/$name.log

[client]
# No metadata cache, hence no cache notifies: after a SIGKILL the dead radosgw's watches outlive it until
# the OSD has run 30 s, and each notify to them stalls a bucket or user write for 10 s or more.
rgw cache enabled = false

[{RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:{state.rgw_port}
rgw thread pool size = 64
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
"""


class CephCluster:
    """A one-node Ceph cluster whose whole state lives in `data_dir`; `start()` twice on one dir reuses it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        rgw_port: int | None = None,
        mon_port: int | None = None,
        block_size_bytes: int = 4 * GIB,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self._rgw_port = rgw_port
        self._mon_port = mon_port
        self._block_size = block_size_bytes
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self.endpoint: S3Endpoint | None = None

    @property
    def conf(self) -> Path:
        return self.data_dir / "ceph.conf"

    def __repr__(self) -> str:
        return f"CephCluster({str(self.data_dir)!r}, running={sorted(self._procs)})"

    def __enter__(self) -> CephCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> S3Endpoint:
        """Start mon, OSD and radosgw (creating the cluster on first use); return once S3 answers HTTP."""
        problem = ceph_available()
        if problem:
            raise CephStartError(problem)
        if self._procs:
            raise CephStartError("cluster already started; call stop() or kill() first")
        deadline = time.monotonic() + timeout
        for sub in ("run", "log"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        self._reap_stale()
        self.conf.write_text(_config(self.data_dir, state, self._block_size))
        try:
            self._start_mon(state, deadline)
            self._start_osd(state, deadline)
            self._spawn("radosgw", ["radosgw", "-c", str(self.conf), "-n", RGW_NAME, "-f", *self._root_flags()])
            url = f"http://127.0.0.1:{state.rgw_port}"
            self._wait(lambda: self._http_answers(url), "radosgw", deadline)
            self._ensure_user(state, deadline)
        except BaseException:
            self.stop(timeout=5)
            raise
        self.endpoint = S3Endpoint(url=url, access_key=state.access_key, secret_key=state.secret_key)
        return self.endpoint

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM radosgw, then the OSD, then the mon, waiting for each; SIGKILL one that outlives `timeout`."""
        for name in STOP_ORDER:
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            (self.data_dir / "run" / f"{name}.pid").unlink(missing_ok=True)
        self._close_logs()

    def kill(self) -> None:
        """SIGKILL every daemon at once, as a crash would (for fault tests); the data dir stays usable."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs.values():
            proc.wait()
        self._procs.clear()
        self._close_logs()

    def exited(self) -> list[str]:
        """Names of daemons this object started that have exited since."""
        return [name for name, proc in self._procs.items() if proc.poll() is not None]

    def _load_state(self) -> _State:
        path = self.data_dir / "launcher.json"
        if path.exists():
            state = _State(**json.loads(path.read_text()))
            if self._mon_port is not None and self._mon_port != state.mon_port:
                raise CephStartError(
                    f"{self.data_dir} was created with mon port {state.mon_port}; the mon port cannot change"
                )
            if self._rgw_port is None or self._rgw_port == state.rgw_port:
                return state
            state = replace(state, rgw_port=self._rgw_port)
        else:
            state = _State(
                fsid=str(uuid.uuid4()),
                osd_uuid=str(uuid.uuid4()),
                mon_port=self._mon_port or _free_port(),
                rgw_port=self._rgw_port or _free_port(),
                access_key=_random_key(20, string.ascii_uppercase + string.digits),
                secret_key=_random_key(40, string.ascii_letters + string.digits),
            )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(state), fh)
        os.replace(tmp, path)
        return state

    def _reap_stale(self) -> None:
        """Kill daemons left running on this data dir by a launcher that died without stopping them."""
        for pid_file in (self.data_dir / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                pid_file.unlink(missing_ok=True)
                continue
            if str(self.conf).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
                gone_by = time.monotonic() + 10
                while Path(f"/proc/{pid}").exists() and time.monotonic() < gone_by:
                    time.sleep(0.05)
            pid_file.unlink(missing_ok=True)

    def _start_mon(self, state: _State, deadline: float) -> None:
        conf = str(self.conf)
        if not (self.data_dir / "mon" / "kv_backend").exists():
            monmap = str(self.data_dir / "monmap")
            self._admin(
                "monmaptool",
                [
                    "monmaptool",
                    "--create",
                    "--clobber",
                    "--fsid",
                    state.fsid,
                    "--addv",
                    "a",
                    f"[v2:127.0.0.1:{state.mon_port}]",
                    monmap,
                ],
                deadline,
            )
            self._admin("ceph-mon --mkfs", ["ceph-mon", "-c", conf, "-i", "a", "--mkfs", "--monmap", monmap], deadline)
        self._spawn("mon", ["ceph-mon", "-c", conf, "-i", "a", "-f"])
        self._wait(lambda: self._ceph_ok(["mon", "stat"]), "mon", deadline)

    def _start_osd(self, state: _State, deadline: float) -> None:
        conf = str(self.conf)
        marker = self.data_dir / "osd0-created"
        if not marker.exists():
            (self.data_dir / "osd0").mkdir(exist_ok=True)
            self._admin("ceph osd new", ["ceph", "-c", conf, "osd", "new", state.osd_uuid, "0"], deadline)
            if not (self.data_dir / "osd0" / "ready").exists():
                self._admin(
                    "ceph-osd --mkfs",
                    ["ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", state.osd_uuid],
                    deadline,
                )
            self._admin(
                "ceph osd crush add",
                ["ceph", "-c", conf, "osd", "crush", "add", "osd.0", "1.0", "host=localhost", "root=default"],
                deadline,
            )
            marker.touch()
        self._spawn("osd", ["ceph-osd", "-c", conf, "-i", "0", "-f"])

    def _ensure_user(self, state: _State, deadline: float) -> None:
        marker = self.data_dir / "s3-user-created"
        if marker.exists():
            return
        base = ["radosgw-admin", "-c", str(self.conf)]
        if self._run("radosgw-admin user info", [*base, "user", "info", f"--uid={S3_UID}"], deadline).returncode:
            self._admin(
                "radosgw-admin user create",
                [
                    *base,
                    "user",
                    "create",
                    f"--uid={S3_UID}",
                    "--display-name=Routeur tests",
                    f"--access-key={state.access_key}",
                    f"--secret={state.secret_key}",
                ],
                deadline,
            )
        marker.touch()

    def _root_flags(self) -> list[str]:
        return ["--setuser", "root", "--setgroup", "root"] if os.geteuid() == 0 else []

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.data_dir / "log" / f"{name}.out", "ab")  # closed by stop() or kill()
        self._logs.append(log)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._procs[name] = proc
        (self.data_dir / "run" / f"{name}.pid").write_text(str(proc.pid))

    def _run(self, label: str, argv: list[str], deadline: float) -> subprocess.CompletedProcess[bytes]:
        """Run an admin command within the deadline; errors name `label`, never argv (it may hold a secret)."""
        remaining = max(1.0, deadline - time.monotonic())
        try:
            return subprocess.run(argv, capture_output=True, timeout=remaining, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise CephStartError(f"{label} timed out; logs are in {self.data_dir / 'log'}") from exc

    def _admin(self, label: str, argv: list[str], deadline: float) -> None:
        """Run an admin command that must succeed; on failure raise with its stderr."""
        done = self._run(label, argv, deadline)
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-2000:]
            raise CephStartError(f"{label} exited with {done.returncode}: {err}")

    def _ceph_ok(self, args: list[str]) -> bool:
        try:
            done = subprocess.run(
                ["ceph", "-c", str(self.conf), "--connect-timeout", "5", *args],
                capture_output=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    @staticmethod
    def _http_answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - url is always http://127.0.0.1:PORT
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _wait(self, ready: Callable[[], bool], what: str, deadline: float) -> None:
        """Poll `ready()` until true; fail early, quoting the log, if a daemon we started has exited."""
        while True:
            for name in self.exited():
                log = self.data_dir / "log" / f"{name}.out"
                raise CephStartError(f"{name} exited while waiting for {what}; {log}:\n{_tail(log)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise CephStartError(f"timed out waiting for {what}; logs are in {self.data_dir / 'log'}")
            time.sleep(0.25)

    def _close_logs(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()


def main(argv: list[str] | None = None) -> int:
    """`python -m launcher.ceph start DATA_DIR`: print S3 settings, run until SIGTERM/SIGINT, stop cleanly."""
    parser = argparse.ArgumentParser(prog="python -m launcher.ceph", description=__doc__)
    parser.add_argument("command", choices=["start"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rgw-port", type=int)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = CephCluster(args.data_dir, rgw_port=args.rgw_port)
    endpoint = cluster.start()
    print(f"S3_ENDPOINT_URL={endpoint.url}")
    print(f"S3_ACCESS_KEY={endpoint.access_key}")
    print(f"S3_SECRET_KEY={endpoint.secret_key}", flush=True)
    try:
        while not stop.wait(1.0):
            if dead := cluster.exited():
                print(f"daemon exited: {', '.join(dead)}; logs in {cluster.data_dir / 'log'}", file=sys.stderr)
                return 1
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
