"""The admin token's minimum strength, checked when a service starts: it fails fast (exit 2) naming the rule,
never echoing the token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.common.settings import Secret, SettingsError, check_admin_token


@pytest.mark.parametrize("token", ["CHANGE_ME", "t" * 40, "rt-admin-billing-tests", "0123456789" * 4,
                                   "abcdefghijklmnopqrstuvwxyzabcdefgh"])
def test_weak_tokens_are_refused_naming_the_rule(token: str) -> None:
    with pytest.raises(SettingsError, match="ROUTEUR_ADMIN_TOKEN is too weak: it must be at least 32 characters") \
            as raised:
        check_admin_token(Secret(token))
    assert token not in str(raised.value)


@pytest.mark.parametrize("token", ["rt-admin-" + "Zq3_x9Lm" * 4, "CHANGE_ME_to_at_least_32_random_characters",
                                   "0f3a9c2e7b1d4f6a8c0e2b4d6f8a1c3e5"])
def test_strong_tokens_pass(token: str) -> None:
    check_admin_token(Secret(token))


@pytest.mark.parametrize("service", ["proxy", "billing", "tracer"])
def test_a_service_started_with_a_weak_token_exits_2_at_once(service: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROUTEUR_", "PROXY_", "BILLING_"))}
    env.update({"ROUTEUR_ADMIN_TOKEN": "secret", "NATS_URL": "nats://127.0.0.1:1", "PYTHONUNBUFFERED": "1"})
    done = subprocess.run([sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    assert b"ROUTEUR_ADMIN_TOKEN is too weak" in done.stderr and b"secret" not in done.stderr.replace(b"Secret", b"")
