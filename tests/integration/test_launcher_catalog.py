"""`make up` (python -m launcher up) with ROUTEUR_CATALOG at a catalog without gpt-4o-mini: the stack starts,
and `"model": "auto"` resolves to a model of that catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from launcher.stack import _PROVIDER_KEY_VARS
from tests.unit.test_launcher_rules import BUNDLED, without_model

ROOT = Path(__file__).resolve().parents[2]


def _launcher(command: str, data_dir: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", command, "--data-dir", str(data_dir)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_up_starts_with_a_catalog_without_the_bundled_default_model(tmp_path: Path) -> None:
    catalog = tmp_path / "models.toml"
    catalog.write_text(without_model(BUNDLED, "gpt-4o-mini"))
    data_dir = tmp_path / "data"
    env = {**os.environ, "ROUTEUR_CATALOG": str(catalog), "ROUTEUR_PORT": "0", "LOG_LEVEL": "WARNING",
           **{var: "" for var in _PROVIDER_KEY_VARS}}
    for name in ("ROUTER_RULES", "OBJECT_STORE", "OBJECT_STORE_URL", "CLICKHOUSE_URL", "ROUTEUR_DATA_DIR"):
        env.pop(name, None)
    up = _launcher("up", data_dir, env, timeout=240)
    try:
        log = data_dir / "logs" / "router.log"
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{log.read_text() if log.exists() else ''}"
        values = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        rules = (data_dir / "rules.toml").read_text()
        assert "gpt-4o-mini" not in rules and "default_model = " in rules
        request = urllib.request.Request(  # noqa: S310 (the loopback URL the launcher printed)
            f"{values['ROUTEUR_URL']}/v1/chat/completions",
            data=json.dumps({"model": "auto", "messages": [{"role": "user", "content": "Hello"}]}).encode(),
            headers={"Authorization": f"Bearer {values['ROUTEUR_API_KEY']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200
            body = json.loads(response.read())
        default_model = rules.split('default_model = "', 1)[1].split('"', 1)[0]
        assert body["choices"][0]["message"]["content"]
        assert response.headers.get("Routeur-Model", default_model) == default_model
    finally:
        down = _launcher("down", data_dir, env, timeout=120)
        assert down.returncode == 0, down.stderr
