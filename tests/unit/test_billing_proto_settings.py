"""Billing's bus schemas (old messages still decode), error codes, and settings from the environment."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from proto import codec
from proto.billing import (
    AdmitReply,
    AdmitRequest,
    KeyCreated,
    KeyLimits,
    KeySettings,
    KeySummary,
    OrgCreated,
    OrgSettingsChanged,
    Settle,
    Settled,
    TopUp,
    WalletSummary,
    decode_event,
    event_msg_id,
)
from services.billing import errors, settings
from services.common.settings import SettingsError


def test_minimal_messages_decode_with_defaults() -> None:
    admit = codec.decode(b'{"request_id":"01J","reserve_usd":0.0025,"api_key":"rk-x"}', AdmitRequest)
    assert admit.reserve_usd == Decimal("0.0025") and admit.reserve_tokens == 0 and admit.api_key_id is None
    settle = codec.decode(b'{"request_id":"01J","api_key_id":"key_1","organization_id":"org_a","cost_usd":1e-7}',
                          Settle)
    assert settle.cost_usd == Decimal("1E-7") and settle.total_tokens == 0
    reply = codec.decode(b'{"admitted":true}', AdmitReply)
    assert reply.status == 200 and reply.rate_limits.headers() == {}


def test_ledger_events_round_trip_by_tag_and_have_deterministic_message_ids() -> None:
    old = (b'{"type":"key_created","api_key_id":"key_1","organization_id":"org_a","name":"k","digest":"ab",'
           b'"ts_ms":1}')
    event = decode_event(old)
    assert isinstance(event, KeyCreated) and event.limits == KeyLimits()
    settled = Settled(request_id="01JREQ", api_key_id="key_1", organization_id="org_a",
                      cost_usd=Decimal("0.000000123456"), total_tokens=5, ts_ms=1)
    assert decode_event(codec.encode(settled)) == settled
    assert event_msg_id(settled) == "01JREQ"
    assert event_msg_id(TopUp(topup_id="inv-1", organization_id="org_a", amount_usd=Decimal(1), ts_ms=1)) == \
        "top_up:inv-1"


def test_organization_events_before_and_after_org_settings() -> None:
    old = decode_event(b'{"type":"org_created","organization_id":"org_a","name":"A","ts_ms":1}')
    assert isinstance(old, OrgCreated) and old.settings == KeySettings()
    change = OrgSettingsChanged(update_id="01JUPD", organization_id="org_a", ts_ms=2,
                                settings=KeySettings(archive_payloads=True, dlp_policy="redact"))
    assert decode_event(codec.encode(change)) == change
    assert b'"type":"org_settings_changed"' in codec.encode(change)
    assert event_msg_id(change) == "org_settings_changed:01JUPD"
    created = OrgCreated(organization_id="org_b", name="", ts_ms=1, settings=KeySettings(archive_payloads=True))
    assert decode_event(codec.encode(created)) == created


def test_key_and_wallet_summaries_without_settings_still_decode() -> None:
    wallet = codec.decode(b'{"organization_id":"org_a","name":"A","balance_usd":"1","reserved_usd":"0",'
                          b'"available_usd":"1","spent_usd":"0"}', WalletSummary)
    assert wallet.settings == KeySettings()
    key = codec.decode(b'{"api_key_id":"key_1","organization_id":"org_a","name":"k","status":"active",'
                       b'"created_ms":1,"limits":{},"spent_usd":"0","period_spent_usd":"0","period_start_ms":null,'
                       b'"budget_remaining_usd":null,"reserved_usd":"0","requests":0,"tokens":0}', KeySummary)
    assert key.settings == key.effective_settings == KeySettings()


def test_every_code_maps_to_a_status_and_openai_type() -> None:
    assert errors.refusal("insufficient_quota") == (402, "insufficient_quota")
    assert errors.refusal("budget_exceeded") == (429, "budget_exceeded")
    assert errors.refusal("rate_limit_exceeded") == (429, "requests")
    assert errors.refusal("invalid_api_key") == (401, "invalid_request_error")
    body = errors.InvalidRequest("bad", param="amount_usd").body()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "amount_usd",
                              "code": "invalid_request"}}


def test_settings_require_the_admin_token_and_a_long_key_secret() -> None:
    with pytest.raises(SettingsError, match="ROUTEUR_ADMIN_TOKEN"):
        settings.load({})
    with pytest.raises(SettingsError, match="BILLING_KEY_SECRET must be at least 32"):
        settings.load({"ROUTEUR_ADMIN_TOKEN": "adm", "BILLING_KEY_SECRET": "short"})
    explicit = settings.load({"ROUTEUR_ADMIN_TOKEN": "adm", "BILLING_KEY_SECRET": "k" * 32, "BILLING_PORT": "9"})
    assert not explicit.key_secret_derived and explicit.key_secret.reveal() == "k" * 32 and explicit.port == 9
    assert "k" * 32 not in repr(explicit) and "adm" not in repr(explicit.admin_token)


def test_key_secret_derived_from_admin_token_is_stable_and_flagged() -> None:
    first = settings.load({"ROUTEUR_ADMIN_TOKEN": "adm"})
    again = settings.load({"ROUTEUR_ADMIN_TOKEN": "adm"})
    other = settings.load({"ROUTEUR_ADMIN_TOKEN": "adm2"})
    assert first.key_secret_derived and first.key_secret.reveal() == again.key_secret.reveal()
    assert first.key_secret.reveal() != other.key_secret.reveal() and len(first.key_secret.reveal()) == 64
    assert "adm" not in first.key_secret.reveal()


def test_cli_settings_prefer_flags_then_environment_then_run_env(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("ROUTEUR_BILLING_URL=http://127.0.0.1:1/\nROUTEUR_ADMIN_TOKEN=from-file\n")
    from_file = settings.load_cli({}, env_file=env_file)
    assert from_file.url == "http://127.0.0.1:1" and from_file.admin_token.reveal() == "from-file"
    from_env = settings.load_cli({"ROUTEUR_ADMIN_TOKEN": "from-env"}, env_file=env_file)
    assert from_env.admin_token.reveal() == "from-env"
    assert settings.load_cli({}, env_file=env_file, token="flag").admin_token.reveal() == "flag"
    with pytest.raises(SettingsError, match="ROUTEUR_BILLING_URL"):
        settings.load_cli({}, env_file=tmp_path / "missing")
