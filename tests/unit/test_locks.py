"""Installs follow the lock: the venv running this suite holds exactly requirements/test.lock, every lock pins
exact versions with hashes, test.lock agrees with runtime.lock, and the Dockerfile installs runtime.lock."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                  r"\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")
_INSTALLER_ONLY = {"pip"}  # the venv's installer comes with Python, it is not part of what Routeur runs


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name → (version, hashes) for the entries whose environment marker holds here."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    name = version = None
    applies = False
    hashes: set[str] = set()
    for line in [*lock.read_text().splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith("--hash="):
            hashes.add(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        if name is not None and applies:
            assert name not in entries, f"{lock.name}: {name} pinned twice for this environment"
            entries[name] = (version or "", frozenset(hashes))
        name, hashes = None, set()
        match = _PIN.match(stripped)
        if match:
            name, version = canonicalize_name(match["name"]), match["version"]
            applies = match["marker"] is None or Marker(match["marker"]).evaluate()
        else:
            assert not stripped or stripped.startswith("#"), f"{lock.name}: not an exact pin: {line!r}"
    return entries


@pytest.mark.parametrize("lock", sorted(LOCKS.glob("*.lock")), ids=lambda path: path.name)
def test_every_lock_pins_exact_versions_with_hashes(lock: Path) -> None:
    entries = pins(lock)
    assert entries
    for name, (_, hashes) in entries.items():
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{lock.name}: {name} has no sha256 hash"


def test_the_test_lock_keeps_the_runtime_locks_versions() -> None:
    runtime, test = pins(LOCKS / "runtime.lock"), pins(LOCKS / "test.lock")
    assert {name: test.get(name) for name in runtime} == runtime


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not running in a virtual environment")
def test_the_venv_holds_exactly_the_test_lock() -> None:
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    assert installed.pop("routeur", None) is not None, "Routeur itself is not installed in this venv"
    for name in _INSTALLER_ONLY:
        installed.pop(name, None)
    locked = {name: version for name, (version, _) in pins(LOCKS / "test.lock").items()}
    assert installed == locked


def test_the_dockerfile_installs_the_runtime_lock_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line.strip() for line in dockerfile.splitlines() if "pip install" in line]
    assert any("--require-hashes" in line and "requirements/runtime.lock" in line for line in installs), installs
    for line in installs:  # every other install adds nothing the resolver picks: no deps, no build isolation
        assert "--require-hashes" in line or ("--no-deps" in line and "--no-build-isolation" in line), line
