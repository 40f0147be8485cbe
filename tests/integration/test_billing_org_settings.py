"""Organization-level payload archive and DLP settings: they survive restarts (replay and snapshot), and the
whole gateway archives and screens a key's requests by its organization's settings."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import nats
import openai
import pytest

from launcher.stack import Stack
from proto.billing import KeySettings
from tests.integration.test_billing_service import BillingProcess, auth, start_nats
from tests.integration.test_dlp_gateway import CARD, EMAIL, admin, chat, emulator_saw, emulator_seq
from tests.integration.test_payload_archive import archived_url, fetch

ORG_SETTINGS = KeySettings(archive_payloads=True, dlp_policy="redact")


async def test_org_settings_survive_kill_9_replay_and_snapshot_restarts(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    data_dir = tmp_path / "billing-data"
    billing = BillingProcess(tmp_path, server.url, BILLING_DATA_DIR=str(data_dir))
    nc = None
    try:
        billing.start()
        key = billing.org_with_key("org_durable", "1")
        status, _ = billing.admin("PATCH", "/organizations/org_durable", {"archive_payloads": True,
                                                                          "dlp_policy": "redact"})
        assert status == 200
        nc = await nats.connect(server.url)
        assert (await auth(nc, key["secret"])).settings == ORG_SETTINGS

        billing.kill()
        billing.start()  # no snapshot yet: everything comes from replaying the stream
        assert "ledger_snapshot_loaded" not in billing.log_path.read_text()
        assert (await auth(nc, key["secret"])).settings == ORG_SETTINGS

        assert billing.terminate() == 0  # a clean stop writes the snapshot
        snapshot = data_dir / "billing-ledger.snapshot.json"
        saved = json.loads(snapshot.read_bytes())
        assert saved["state"]["orgs"]["org_durable"]["settings"] == {"archive_payloads": True, "dlp_policy": "redact"}
        billing.start()
        assert "ledger_snapshot_loaded" in billing.log_path.read_text()
        assert (await auth(nc, key["secret"])).settings == ORG_SETTINGS
        status, view = billing.admin("GET", f"/keys/{key['id']}")
        assert status == 200 and view["effective"] == {"archive_payloads": True, "dlp_policy": "redact"}

        assert billing.terminate() == 0
        for org in saved["state"]["orgs"].values():  # a snapshot written before organizations had settings
            del org["settings"]
        snapshot.write_text(json.dumps(saved))
        billing.start()
        assert billing.log_path.read_text().count("ledger_snapshot_loaded") == 2
        status, org = billing.admin("GET", "/organizations/org_durable")
        assert status == 200 and (org["archive_payloads"], org["dlp_policy"]) == (False, "off")
        assert org["balance_usd"] == 1
    finally:
        if nc is not None:
            await nc.close()
        if billing.proc is not None:
            billing.terminate()
        server.stop()


def _org_with_keys(stack: Stack, **keys: dict[str, object]) -> tuple[str, dict[str, str]]:
    """A funded organization and one key per name with that key's own settings; returns (org, secrets)."""
    org = f"org_{uuid.uuid4().hex[:10]}"
    assert admin(stack, "POST", "/organizations", {"id": org})[0] == 201
    assert admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": "10"})[0] == 200
    secrets = {}
    for name, settings in keys.items():
        status, key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": name, **settings})
        assert status == 201, key
        secrets[name] = key["secret"]
    return org, secrets


def test_an_org_that_archives_archives_a_key_that_does_not(stack: Stack) -> None:
    org, keys = _org_with_keys(stack, plain={})
    status, view = admin(stack, "PATCH", f"/organizations/{org}", {"archive_payloads": True})
    assert status == 200 and view["archive_payloads"] is True
    canary = f"canary-{uuid.uuid4().hex}"
    _, request_id = chat(stack, keys["plain"], f"remember {canary}")
    status, archive = fetch(archived_url(stack, keys["plain"], request_id))
    assert status == 200 and archive["organization_id"] == org
    assert canary in archive["layers"]["caller_request"]


def test_the_orgs_dlp_policy_applies_unless_the_key_has_its_own(stack: Stack) -> None:
    org, keys = _org_with_keys(stack, plain={}, own={"dlp_policy": "redact"})
    assert admin(stack, "PATCH", f"/organizations/{org}", {"dlp_policy": "block"})[0] == 200

    before = emulator_seq(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        chat(stack, keys["plain"], f"my card is {CARD}")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "content_policy_violation"
    assert emulator_seq(stack) == before  # blocked by the org's policy: nothing reached the provider

    chat(stack, keys["own"], f"mail {EMAIL}")  # the key's own "redact" wins over the org's "block"
    sent = json.dumps(emulator_saw(stack)[0])
    assert EMAIL not in sent and "[EMAIL_1]" in sent
