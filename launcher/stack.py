"""The whole Routeur stack as child processes, with the run/env file that scripts and tests read."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from catalog import loader
from catalog.schema import Catalog
from launcher import procs
from launcher.nats import NatsServer
from launcher.rules import HEADER, PREFERRED_MODEL, default_rules, demo_model, written_by_launcher
from launcher.secretfile import write_private
from launcher.seed import seed_demo
from services.common.sealing import PrivateSealKey, parse_private_keys

# Order matters: dependencies first, the proxy (the public port) last.
SERVICES = ("emulator", "tracer", "router", "billing", "archiver", "proxy")
_PORT_VARS = {"emulator": "EMULATOR_PORT", "tracer": "TRACER_PORT", "router": "ROUTER_PORT",
              "billing": "BILLING_PORT", "archiver": "ARCHIVER_PORT", "proxy": "PROXY_PORT"}
# The rules `default_rules` writes for the bundled catalog (tests that edit the rules file put them back).
DEFAULT_RULES = HEADER + f'default_model = "{PREFERRED_MODEL}"\n'
_READY_FD_VAR = "PROXY_READY_FD"  # the proxy writes a byte to this pipe once all its workers serve
# The bundled catalog's provider credentials (the bench blanks them for a stack on the emulator alone);
# `emulator = "auto"` looks at the catalog in use instead.
_PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_ACCESS_KEY_ID",
                      "GEMINI_API_KEY", "DEEPSEEK_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY")


def _workers(env: dict[str, str]) -> int:
    try:
        return int(env.get("PROXY_WORKERS") or 1)
    except ValueError:  # the proxy refuses it and names it; its exit is what start_service reports
        return 1


@dataclass
class Child:
    name: str
    port: int
    log_path: Path
    service: str = ""
    proc: subprocess.Popen[bytes] | None = None
    wanted: bool = True
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # this child's own overrides, applied last

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class StackConfig:
    """What to start. Ports of 0 are picked free at start; `extra_env` reaches every service."""

    data_dir: Path
    proxy_port: int = 8080
    emulator: str = "auto"  # auto: only when no provider credentials are set; on; off
    object_store_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    supervise: bool = True
    proxies: int = 1  # extra proxy processes are named proxy-2, proxy-3, … (the proxy tier scales alone)
    proxy_workers: int = 1  # PROXY_WORKERS of each proxy: worker processes sharing its port (SO_REUSEPORT)
    background_nice: int = 0  # ROUTEUR_NICE of the batch consumers (tracer, archiver): yield the CPU to the proxy


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.run_dir = self.data_dir / "run"
        self.nats = NatsServer(self.data_dir / "nats", port=procs.free_port(), log_path=self.logs / "nats.log")
        self.children: dict[str, Child] = {}
        self.rules_path = self.data_dir / "rules.toml"
        self.secrets = self._load_secrets()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._nats_wanted = True
        self.nats_restarts = 0
        self._monitor: threading.Thread | None = None

    def _load_secrets(self) -> dict[str, str]:
        """Admin token, demo key, billing's key-hashing secret, the archive master key and the archiver's
        X25519 sealing key, made once per data dir (survive restarts; written 0600 atomically)."""
        path = self.data_dir / "secrets.env"
        values: dict[str, str] = {}
        if path.exists():
            values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        wanted = {"ROUTEUR_ADMIN_TOKEN": lambda: "rt-admin-" + secrets.token_urlsafe(24),
                  "ROUTEUR_API_KEY": lambda: "rk-" + secrets.token_urlsafe(32),
                  "BILLING_KEY_SECRET": lambda: secrets.token_urlsafe(48),
                  "ROUTEUR_MASTER_KEY": lambda: "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
                  "ARCHIVER_SEAL_KEY": lambda: PrivateSealKey.generate("s1").text()}
        if all(name in values for name in wanted):
            return values
        for name, make in wanted.items():
            values.setdefault(name, make())
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
        return values

    def _emulator_wanted(self) -> bool:
        mode = self.config.emulator
        if mode == "auto":
            variables = {provider.api_key_env for provider in self.catalog().providers.values()}
            return not any(os.environ.get(var) or self.config.extra_env.get(var) for var in variables)
        return mode == "on"

    def _env(self, child: Child) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PYTHONUNBUFFERED": "1",
            "NATS_URL": self.nats.url,
            "CLICKHOUSE_URL": env.get("CLICKHOUSE_URL") or f"chdb://{self.data_dir / 'clickhouse'}",
            "OBJECT_STORE_URL": self.config.object_store_url or env.get("OBJECT_STORE_URL")
            or f"file://{self.data_dir / 'objects'}",
            "ROUTEUR_ADMIN_TOKEN": self.secrets["ROUTEUR_ADMIN_TOKEN"],
            "BILLING_KEY_SECRET": self.secrets["BILLING_KEY_SECRET"],
            "ROUTEUR_MASTER_KEY": env.get("ROUTEUR_MASTER_KEY") or self.secrets["ROUTEUR_MASTER_KEY"],
            "BILLING_DATA_DIR": str(self.data_dir / "billing"),
            "ROUTER_RULES": env.get("ROUTER_RULES") or str(self.rules_path),
        })
        for other in self.children.values():
            if other.service == other.name:
                env[_PORT_VARS[other.service]] = str(other.port)
        env[_PORT_VARS[child.service]] = str(child.port)
        seal_key = env.get("ARCHIVER_SEAL_KEY") or self.secrets["ARCHIVER_SEAL_KEY"]
        if child.service == "archiver":
            env["ARCHIVER_SEAL_KEY"] = seal_key
        else:
            env.pop("ARCHIVER_SEAL_KEY", None)  # the private key stays with the archiver
        if child.service == "proxy" and not env.get("PROXY_ARCHIVE_PUBLIC_KEY"):
            ring = parse_private_keys(seal_key, variable="ARCHIVER_SEAL_KEY")
            env["PROXY_ARCHIVE_PUBLIC_KEY"] = ring.active.public.text()
        if child.service == "proxy":
            env["PROXY_WORKERS"] = str(self.config.proxy_workers)
        if child.service in ("tracer", "archiver") and self.config.background_nice:
            env["ROUTEUR_NICE"] = str(self.config.background_nice)
        if "emulator" in self.children:
            env["ROUTEUR_EMULATOR_URL"] = self.children["emulator"].url
        env.update(self.config.extra_env)
        env.update(child.env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start NATS and every service, wait until each answers /readyz, write run/env."""
        self._write_rules()
        self.nats.start()
        for name in SERVICES:
            if name == "emulator" and not self._emulator_wanted():
                continue
            port = self.config.proxy_port if name == "proxy" and self.config.proxy_port else procs.free_port()
            self.children[name] = Child(name, port, self.logs / f"{name}.log", service=name)
        for index in range(2, self.config.proxies + 1):
            name = f"proxy-{index}"
            self.children[name] = Child(name, procs.free_port(), self.logs / f"{name}.log", service="proxy")
        for child in self.children.values():
            if child.service == "proxy":  # /metrics has its own internal listener, one per proxy
                child.env.setdefault("PROXY_METRICS_PORT", str(procs.free_port()))
        for name in self.children:
            self.start_service(name, timeout=timeout)
        seed_demo(self.children["billing"].url, admin_token=self.secrets["ROUTEUR_ADMIN_TOKEN"],
                  api_key=self.secrets["ROUTEUR_API_KEY"])
        self.write_env()
        if self.config.supervise:
            self._monitor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._monitor.start()

    def catalog(self) -> Catalog:
        """The catalog the services will load: ROUTEUR_CATALOG (extra_env first), else the bundled one."""
        path = self.config.extra_env.get("ROUTEUR_CATALOG") or os.environ.get("ROUTEUR_CATALOG")
        try:
            return loader.load(Path(path) if path else None)
        except (loader.CatalogError, OSError) as exc:
            raise RuntimeError(f"ROUTEUR_CATALOG: {exc}") from None

    @property
    def demo_model(self) -> str | None:
        """The chat model the banner's examples and the default rules name (see launcher.rules.demo_model)."""
        return demo_model(self.catalog())

    def _write_rules(self) -> None:
        """The data dir's rules file, for the catalog in use: written when missing, and rewritten when the
        launcher wrote it for another catalog (a file someone edited is left alone)."""
        wanted = default_rules(self.catalog())
        if self.rules_path.exists():
            current = self.rules_path.read_text()
            if current == wanted or not written_by_launcher(current):
                return
        self.rules_path.parent.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text(wanted)

    def start_service(self, name: str, timeout: float = 60.0) -> None:
        """Start the child and wait until it answers /readyz; a proxy with several workers also until every
        worker serves (any one of them answers the probe)."""
        child = self.children[name]
        env = self._env(child)
        ready = procs.ReadyPipe() if child.service == "proxy" and _workers(env) > 1 else None
        if ready is not None:
            env[_READY_FD_VAR] = str(ready.write_fd)
        try:
            with self._lock:
                child.wanted = True
                child.proc = procs.spawn([sys.executable, "-m", f"services.{child.service}"], env=env,
                                         log_path=child.log_path, cwd=Path(__file__).resolve().parent.parent,
                                         pass_fds=(ready.write_fd,) if ready is not None else ())
            if ready is not None:
                ready.spawned()
            procs.wait_until(lambda: procs.http_ok(f"{child.url}/readyz") and (ready is None or ready.check()),
                             timeout, what=name, proc=child.proc, log_path=child.log_path)
        finally:
            if ready is not None:
                ready.close()

    def add_service(self, name: str, service: str, *, env: dict[str, str] | None = None,
                    timeout: float = 60.0) -> Child:
        """Start one more process of `service` under `name`, with `env` on top of the stack's environment
        (e.g. a second proxy with other timeouts); `remove_service` stops and forgets it."""
        if name in self.children:
            raise ValueError(f"a child named {name!r} already exists")
        child = Child(name, procs.free_port(), self.logs / f"{name}.log", service=service, env=dict(env or {}))
        with self._lock:
            self.children[name] = child
        self.start_service(name, timeout=timeout)
        return child

    def remove_service(self, name: str) -> None:
        """Stop a child added by `add_service` (SIGTERM) and forget it."""
        self.stop_service(name)
        with self._lock:
            del self.children[name]

    def crash_service(self, name: str) -> int:
        """SIGKILL the child as a crash would, leaving it wanted: the supervisor restarts it. Returns the pid."""
        child = self.children[name]
        if child.proc is None:
            raise RuntimeError(f"{name} is not running")
        pid = child.proc.pid
        procs.kill(child.proc)
        return pid

    def crash_nats(self) -> int:
        """SIGKILL nats-server as a crash would; the supervisor restarts it on the same port and data dir."""
        if self.nats.proc is None:
            raise RuntimeError("nats-server is not running")
        pid = self.nats.proc.pid
        self.nats.kill()
        return pid

    def stop_service(self, name: str) -> None:
        """Stop gracefully (SIGTERM) and keep it stopped until start_service."""
        child = self.children[name]
        with self._lock:
            child.wanted = False
        if child.proc is not None:
            procs.terminate(child.proc, timeout=30)

    def kill_service(self, name: str) -> None:
        """SIGKILL, and keep it stopped until start_service."""
        child = self.children[name]
        with self._lock:
            child.wanted = False
        if child.proc is not None:
            procs.kill(child.proc)

    def _supervise(self) -> None:
        """Restart NATS or a service that died on its own, with a short back-off."""
        while not self._stopping.wait(1.0):
            nats_proc = self.nats.proc
            if self._nats_wanted and nats_proc is not None and nats_proc.poll() is not None:
                self._restart_nats()
            for child in list(self.children.values()):
                with self._lock:
                    died = child.wanted and child.proc is not None and child.proc.poll() is not None
                if died and not self._stopping.wait(min(5.0, 0.5 * (child.restarts + 1))):
                    child.restarts += 1
                    try:
                        self.start_service(child.name, timeout=30.0)
                    except RuntimeError:
                        continue

    def _restart_nats(self) -> None:
        """Same port, same JetStream directory: clients reconnect on their own and the streams are intact."""
        self.nats_restarts += 1
        try:
            self.nats.start()
        except RuntimeError:  # tried again on the next round
            return

    def stop(self) -> None:
        """Stop everything: the proxy first (drains callers), NATS last; remove run/env."""
        self._stopping.set()
        self._nats_wanted = False
        if self._monitor is not None:
            self._monitor.join()
        for name in reversed(list(self.children)):
            self.stop_service(name)
        self.nats.stop()
        (self.run_dir / "env").unlink(missing_ok=True)

    @property
    def proxy_url(self) -> str:
        return self.children["proxy"].url

    def metrics_url(self, name: str) -> str:
        """Where `name` serves /metrics: the proxies on their internal PROXY_METRICS_PORT, others on their port."""
        child = self.children[name]
        port = child.env.get("PROXY_METRICS_PORT") if child.service == "proxy" else None
        return f"http://127.0.0.1:{port}" if port else child.url

    def info(self) -> dict[str, str]:
        values = {
            "ROUTEUR_URL": self.proxy_url,
            "ROUTEUR_API_KEY": self.secrets["ROUTEUR_API_KEY"],
            "ROUTEUR_ADMIN_TOKEN": self.secrets["ROUTEUR_ADMIN_TOKEN"],
            "NATS_URL": self.nats.url,
            "ROUTEUR_DATA_DIR": str(self.data_dir),
        }
        for name, child in self.children.items():
            values[f"ROUTEUR_{name.upper().replace('-', '_')}_URL"] = child.url
            if child.service == "proxy":
                values[f"ROUTEUR_{name.upper().replace('-', '_')}_METRICS_URL"] = self.metrics_url(name)
        return values

    def write_env(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "env"
        write_private(path, "".join(f"{key}={value}\n" for key, value in self.info().items()))
        return path
