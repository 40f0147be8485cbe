"""`python -m launcher run|up|down|status`: the stack in the foreground, in the background, or stopped."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from launcher import procs
from launcher.stack import Stack, StackConfig
from services.emulator import openapi_spec

BANNER = """
Routeur is running.  Proxy: {ROUTEUR_URL}
  API key:      {ROUTEUR_API_KEY}
  Admin token:  {ROUTEUR_ADMIN_TOKEN}
  Data and logs under {ROUTEUR_DATA_DIR}; these values are in {env_path}

Try it:
  curl -s {ROUTEUR_URL}/v1/chat/completions -H "Authorization: Bearer {ROUTEUR_API_KEY}" \\
       -H "Content-Type: application/json" -H "Routeur-Trace: true" \\
       -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  {python} - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{ROUTEUR_URL}/v1", api_key="{ROUTEUR_API_KEY}")
print(client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
PY

  curl -s "{ROUTEUR_URL}/v1/logs?limit=5" -H "Authorization: Bearer {ROUTEUR_API_KEY}"
Press Ctrl-C to stop.
"""


def _config(args: argparse.Namespace) -> StackConfig:
    data_dir = Path(args.data_dir).resolve()
    object_store_url = ""
    extra: dict[str, str] = {}
    if os.environ.get("OBJECT_STORE") == "ceph":
        from launcher.ceph import CephCluster

        endpoint = CephCluster(data_dir / "ceph").start()
        object_store_url = "s3://routeur-payloads"
        extra = {"S3_ENDPOINT_URL": endpoint.url, "S3_ACCESS_KEY": endpoint.access_key,
                 "S3_SECRET_KEY": endpoint.secret_key, "S3_REGION": endpoint.region}
    if "EMULATOR_VALIDATE" not in os.environ and not _openai_spec_present():
        # `make run` on a clone without ../shared: the emulator still serves, without checking OpenAI bodies
        # against a description it cannot read (the test stack never takes this path: it wants the checks)
        extra["EMULATOR_VALIDATE"] = "0"
        print("note: OpenAI's OpenAPI description was not found (set OPENAI_OPENAPI_SPEC): the emulator runs "
              "without its ground-truth checks", file=sys.stderr)
    return StackConfig(data_dir=data_dir, proxy_port=int(os.environ.get("ROUTEUR_PORT", "8080")),
                       emulator=os.environ.get("ROUTEUR_EMULATOR", "auto"), object_store_url=object_store_url,
                       extra_env=extra, proxy_workers=_proxy_workers(), background_nice=_background_nice())


def _openai_spec_present() -> bool:
    configured = os.environ.get("OPENAI_OPENAPI_SPEC", "").strip()
    return (Path(configured) if configured else openapi_spec.default_path()).exists()


def _proxy_workers() -> int:
    """PROXY_WORKERS from the environment (1 when unset); the proxy checks the range and says what is wrong."""
    raw = os.environ.get("PROXY_WORKERS", "").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"configuration error: environment variable PROXY_WORKERS must be an integer, "
                         f"got {raw!r}") from None


def _background_nice() -> int:
    """ROUTEUR_BACKGROUND_NICE (default 10): the tracer and archiver yield the CPU to the proxy on one machine."""
    raw = os.environ.get("ROUTEUR_BACKGROUND_NICE", "").strip() or "10"
    if not raw.isdigit() or int(raw) > 19:
        raise SystemExit(f"configuration error: ROUTEUR_BACKGROUND_NICE must be an integer 0–19, got {raw!r}")
    return int(raw)


def run(args: argparse.Namespace) -> int:
    stack = Stack(_config(args))
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
    except RuntimeError as exc:
        print(f"Routeur failed to start: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    env_path = stack.run_dir / "env"
    (stack.run_dir / "launcher.pid").write_text(str(os.getpid()))
    print(BANNER.format(env_path=env_path, python=os.path.relpath(sys.executable), model=stack.demo_model or "auto",
                        **stack.info()), flush=True)
    while not stopping:
        time.sleep(0.2)
    print("Stopping Routeur…", flush=True)
    stack.stop()
    (stack.run_dir / "launcher.pid").unlink(missing_ok=True)
    return 0


def up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    run_dir = data_dir / "run"
    if _running_pid(run_dir) is not None:
        print(f"Routeur is already up; see {run_dir / 'env'}")
        return 0
    (run_dir / "env").unlink(missing_ok=True)
    proc = procs.spawn([sys.executable, "-m", "launcher", "run", "--data-dir", str(data_dir)], env=dict(os.environ),
                       log_path=data_dir / "logs" / "launcher.log")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if (run_dir / "env").exists():
            print((run_dir / "env").read_text(), end="")
            return 0
        if proc.poll() is not None:
            print(f"Routeur failed to start:\n{procs.tail(data_dir / 'logs' / 'launcher.log', 30)}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("Routeur did not come up within 180 s; see .data/logs/", file=sys.stderr)
    return 1


def _running_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / "launcher.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def down(args: argparse.Namespace) -> int:
    run_dir = Path(args.data_dir).resolve() / "run"
    pid = _running_pid(run_dir)
    if pid is None:
        print("Routeur is not running.")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _running_pid(run_dir) is not None:
        time.sleep(0.2)
    if _running_pid(run_dir) is not None:
        print(f"launcher {pid} did not stop within 90 s", file=sys.stderr)
        return 1
    print("Routeur stopped.")
    return 0


def status(args: argparse.Namespace) -> int:
    run_dir = Path(args.data_dir).resolve() / "run"
    if _running_pid(run_dir) is None:
        print("Routeur is not running.")
        return 1
    print((run_dir / "env").read_text(), end="")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    parser.add_argument("command", choices=("run", "up", "down", "status"))
    parser.add_argument("--data-dir", default=os.environ.get("ROUTEUR_DATA_DIR", ".data"))
    args = parser.parse_args()
    return {"run": run, "up": up, "down": down, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
