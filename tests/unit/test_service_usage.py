"""`python -m services.<name> --help` for every service: exits 0 without starting, and names every environment
variable its settings read, with the defaults its settings really use."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("proxy", "router", "billing", "tracer", "archiver", "emulator")
ENV_CASTS = {"env_str", "env_int", "env_float", "env_bool", "env_secret", "_non_negative", "_at_least_0", "_at_least_1"}
# Upper-case string literals in a settings.py that are not variables the service reads.
NOT_READ = {"archiver": {"CHANGE_ME"}, "billing": {"ROUTEUR_BILLING_URL"}}  # the placeholder; the CLI's URL


def variables(service: str) -> dict[str, str | None]:
    module = importlib.import_module(f"services.{service}.settings")
    return {v.name: v.default for v in module.VARIABLES}


def _constant(node: ast.expr) -> Any:
    """The value of a literal, or of arithmetic on literals (`8 * 1024 * 1024`); ... when it is neither."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _constant(node.left), _constant(node.right)
        if isinstance(left, int | float) and isinstance(right, int | float):
            return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})  # noqa: S307
    return ...


def read_by_settings(service: str) -> tuple[set[str], dict[str, Any]]:
    """Every variable name spelled in the service's settings.py (and the shared base settings it loads), and
    the literal default of each `env_*(environ, "NAME", default)` call."""
    paths = [ROOT / "services" / service / "settings.py"]
    text = paths[0].read_text(encoding="utf-8")
    names: set[str] = set()
    if "load_base(" in text:
        paths.append(ROOT / "services" / "common" / "skeleton.py")
        names |= {f"{prefix}_{suffix}" for prefix in re.findall(r'prefix="([A-Z]+)"', text)
                  for suffix in ("HOST", "PORT")}
    defaults: dict[str, Any] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", node.value) and "_" in node.value:
                names.add(node.value)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ENV_CASTS \
                    and len(node.args) >= 3 and isinstance(node.args[1], ast.Constant):
                defaults[node.args[1].value] = _constant(node.args[2])
    return names - NOT_READ.get(service, set()), defaults


@pytest.mark.parametrize("service", SERVICES)
def test_usage_lists_every_variable_the_settings_read(service: str) -> None:
    listed = variables(service)
    names, defaults = read_by_settings(service)
    assert names, f"found no variables in services/{service}/settings.py"
    missing = names - set(listed)
    assert not missing, f"services/{service}/settings.py reads {sorted(missing)}; add them to its VARIABLES"
    for name, default in defaults.items():
        if default is ...:
            continue  # computed (e.g. the breaker's defaults, taken from BreakerConfig by VARIABLES itself)
        shown = listed.get(name)
        assert shown == str(default), f"{service}: {name} defaults to {default!r} but --help says {shown!r}"


def test_proxy_usage_names_the_catalogs_provider_variables() -> None:
    """The proxy reads each provider's key and endpoint under the names the bundled catalog gives them."""
    catalog = tomllib.loads((ROOT / "catalog" / "models.toml").read_text(encoding="utf-8"))
    text = " ".join(_help("proxy").stdout.split())  # argparse does not wrap the epilog; joined anyway
    for name, provider in catalog["providers"].items():
        for variable in filter(None, (provider["api_key_env"], provider.get("base_url_env"))):
            assert variable in text, f"--help of the proxy does not name {variable} (provider {name})"


def _help(service: str, *args: str) -> subprocess.CompletedProcess[str]:
    # No NATS is reachable at this URL: a service that started instead of printing its usage would hang or fail.
    env = {**os.environ, "NATS_URL": "nats://127.0.0.1:1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"services.{service}", *(args or ("--help",))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("service", SERVICES)
def test_help_prints_usage_and_exits_0(service: str) -> None:
    result = _help(service)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m services.{service}"), result.stdout[:200]
    assert "Routeur's" in result.stdout  # what the service is
    for name, default in variables(service).items():
        line = next((line for line in result.stdout.splitlines() if line.split()[:1] == [name]), None)
        assert line is not None, f"--help does not list {name}"
        shown = line.split()[1] if len(line.split()) > 1 else ""
        assert shown == ("required" if default is None else default or "(unset)"), line
    assert "ROUTEUR_NICE" in result.stdout
    assert not result.stderr  # nothing was started, nothing logged


@pytest.mark.parametrize("service", ["router", "proxy"])
def test_an_unknown_argument_exits_2_naming_it(service: str) -> None:
    result = _help(service, "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr
