"""`make run` / `make up` on a clone without OpenAI's OpenAPI description still start the emulator, without its
ground-truth checks; with the description present (or EMULATOR_VALIDATE set) the launcher leaves them alone."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from launcher.__main__ import _config


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(data_dir=str(tmp_path / "data"))


def test_a_missing_spec_turns_the_emulator_checks_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_VALIDATE", raising=False)
    monkeypatch.setenv("OPENAI_OPENAPI_SPEC", str(tmp_path / "absent.yaml"))
    assert _config(_args(tmp_path)).extra_env.get("EMULATOR_VALIDATE") == "0"


def test_a_present_spec_keeps_the_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "openai-openapi.yaml"
    spec.write_text("openapi: 3.1.0\n")
    monkeypatch.delenv("EMULATOR_VALIDATE", raising=False)
    monkeypatch.setenv("OPENAI_OPENAPI_SPEC", str(spec))
    assert "EMULATOR_VALIDATE" not in _config(_args(tmp_path)).extra_env


def test_an_explicit_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_VALIDATE", "1")
    monkeypatch.setenv("OPENAI_OPENAPI_SPEC", str(tmp_path / "absent.yaml"))
    assert "EMULATOR_VALIDATE" not in _config(_args(tmp_path)).extra_env
