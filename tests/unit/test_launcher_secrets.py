"""The launcher's secret files: owner-only from the first byte, written atomically, never through a symlink
someone planted, and the archiver's sealing key made once per data dir with the proxy given its public half."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from launcher.secretfile import write_private
from launcher.stack import Child, Stack, StackConfig
from services.common.sealing import parse_private_keys, parse_public_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_env_is_0600_even_with_an_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        stack = Stack(StackConfig(data_dir=tmp_path, proxy_port=0))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "secrets.env") == 0o600
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")) == []
    assert parse_private_keys(stack.secrets["ARCHIVER_SEAL_KEY"], variable="ARCHIVER_SEAL_KEY").active.kid == "s1"


def test_a_planted_symlink_does_not_receive_the_secrets(tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker-readable"
    elsewhere.write_text("")
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.env").symlink_to(elsewhere)
    stack = Stack(StackConfig(data_dir=data, proxy_port=0))
    assert elsewhere.read_text() == ""  # the old code wrote the admin token through the link
    assert not (data / "secrets.env").is_symlink() and _mode(data / "secrets.env") == 0o600
    stack.run_dir.mkdir(parents=True)
    run_env_target = tmp_path / "run-env-target"
    run_env_target.write_text("")
    (stack.run_dir / "env.tmp").symlink_to(run_env_target)  # the old write_env wrote through <run>/env.tmp
    stack.children["proxy"] = Child("proxy", 1, tmp_path / "proxy.log", service="proxy")
    path = stack.write_env()
    assert run_env_target.read_text() == "" and _mode(path) == 0o600
    assert stack.secrets["ROUTEUR_ADMIN_TOKEN"] in path.read_text()


def test_write_private_replaces_a_wider_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "s.env"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["s.env"]


def test_the_seal_key_is_kept_across_restarts_and_only_the_archiver_gets_it(tmp_path: Path) -> None:
    first = Stack(StackConfig(data_dir=tmp_path, proxy_port=0))
    (tmp_path / "secrets.env").write_text("\n".join(
        line for line in (tmp_path / "secrets.env").read_text().splitlines()
        if not line.startswith("ARCHIVER_SEAL_KEY=")) + "\n")  # a data dir from before sealing
    upgraded = Stack(StackConfig(data_dir=tmp_path, proxy_port=0))
    assert upgraded.secrets["ROUTEUR_ADMIN_TOKEN"] == first.secrets["ROUTEUR_ADMIN_TOKEN"]
    again = Stack(StackConfig(data_dir=tmp_path, proxy_port=0))
    assert again.secrets["ARCHIVER_SEAL_KEY"] == upgraded.secrets["ARCHIVER_SEAL_KEY"]
    ring = parse_private_keys(again.secrets["ARCHIVER_SEAL_KEY"], variable="ARCHIVER_SEAL_KEY")
    proxy_env = again._env(Child("proxy", 1, tmp_path / "p.log", service="proxy"))
    archiver_env = again._env(Child("archiver", 2, tmp_path / "a.log", service="archiver"))
    assert "ARCHIVER_SEAL_KEY" not in proxy_env
    assert archiver_env["ARCHIVER_SEAL_KEY"] == again.secrets["ARCHIVER_SEAL_KEY"]
    public = parse_public_key(proxy_env["PROXY_ARCHIVE_PUBLIC_KEY"], variable="PROXY_ARCHIVE_PUBLIC_KEY")
    assert public.raw == ring.active.public.raw
