"""A half-open route's single probe is given back by a request that ends before any upstream attempt (DLP
block, a screening failure): the next request is the probe at once, not `probe_timeout_s` (30 s) later."""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, wait_for

MODEL = "llama-4-scout"  # no other test touches its routes, so their breakers start closed
PRIMARY = "groq/meta-llama/llama-4-scout-17b-16e-instruct"
UPSTREAM = "meta-llama/llama-4-scout-17b-16e-instruct"
CARD = "4111 1111 1111 1111"


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)


def _org_key(stack: Stack, **settings: Any) -> str:
    """The secret of a key, with `settings`, of a new organization holding $10."""
    def admin(path: str, body: Any) -> tuple[int, Any]:
        return http_json("POST", f"{stack.children['billing'].url}/v1/admin{path}",
                         token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)

    org = f"org_{uuid.uuid4().hex[:10]}"
    assert admin("/organizations", {"id": org})[0] == 201
    assert admin(f"/organizations/{org}/topups", {"amount_usd": "10"})[0] in (200, 201)
    status, key = admin(f"/organizations/{org}/keys", {"name": "probe", **settings})
    assert status == 201, key
    return key["secret"]  # type: ignore[no-any-return]


def _provider(client: openai.OpenAI, content: str = "Route me.") -> dict[str, Any]:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                                extra_headers={"Routeur-Trace": "true"})
    return completion.model_extra["routeur_trace"]  # type: ignore[no-any-return]


def _router_state(stack: Stack) -> str | None:
    _, ready = http_json("GET", f"{stack.children['router'].url}/readyz")
    return ready["routes_not_closed"].get(PRIMARY)  # type: ignore[no-any-return]


def _half_open(stack: Stack, client: openai.OpenAI) -> None:
    """Fail the primary route until its breaker opens, heal it, and wait until the cool-down has passed."""
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/{UPSTREAM}", body={"status": 503})
    try:
        wait_for(lambda: [a["provider"] for a in _provider(client)["attempts"]] == ["together"], timeout=30,
                 interval=0.05)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    wait_for(lambda: _router_state(stack) == "half_open", timeout=30, interval=0.1)
    time.sleep(0.5)  # the proxy's own clock passes the cool-down too (it counts from when it heard the snapshot)


@pytest.mark.parametrize(("settings", "error"), [
    ({"dlp_policy": "block"}, openai.BadRequestError),  # DLP block: 400 content_policy_violation
    ({"dlp_policy": "no-such-policy"}, openai.InternalServerError),  # screening fails closed: 500 dlp_error
], ids=["dlp_block", "screening_failure"])
def test_a_request_ending_before_any_attempt_gives_the_probe_back(stack: Stack, settings: dict[str, Any],
                                                                  error: type[Exception]) -> None:
    client = _client(stack, stack.secrets["ROUTEUR_API_KEY"])
    refused = _client(stack, _org_key(stack, **settings))
    _half_open(stack, client)
    with pytest.raises(error):
        _provider(refused, f"my card is {CARD}")  # decided (claiming the probe), then refused before any attempt
    probe = _provider(client)
    assert probe["provider"] == "groq" and probe["fallback"] is None, probe
    assert [a["status_code"] for a in probe["attempts"]] == [200]
    wait_for(lambda: _router_state(stack) is None, timeout=10)  # the probe's success closed the breaker
