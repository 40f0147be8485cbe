"""Azure OpenAI's URL shape (deployment path, api-version, api-key header) against the emulator."""

from __future__ import annotations

import json
import urllib.request

from launcher.stack import Stack
from services.common.settings import Secret
from services.proxy.dialects import DIALECTS
from services.proxy.providers import Target
from tests.conftest import http_json
from tests.openapi import validate


def test_azure_dialect_call_is_answered_in_openai_format(stack: Stack) -> None:
    emulator = stack.children["emulator"].url
    http_json("DELETE", f"{emulator}/_emulator/requests")
    target = Target("azure", emulator, Secret("az-key"), "azure", emulated=True, api_version="2024-10-21")
    call = DIALECTS["azure"].request(target, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                     "gpt-4o")
    assert call.headers["api-key"] == "az-key" and "Authorization" not in call.headers
    request = urllib.request.Request(call.url, data=call.body, headers=call.headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        validate("CreateChatCompletionResponse", json.loads(response.read()))
    _, seen = http_json("GET", f"{emulator}/_emulator/requests?limit=1")
    entry = seen["requests"][-1]
    assert entry["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert "api-key" not in entry["headers"], "credentials are never recorded"
    missing_version = urllib.request.Request(call.url.split("?")[0], data=call.body, headers=call.headers)
    try:
        urllib.request.urlopen(missing_version, timeout=10)  # noqa: S310 (loopback)
        raise AssertionError("expected 404 without api-version")
    except urllib.error.HTTPError as error:
        assert error.code == 404


def test_azure_emulator_refuses_a_bearer_key_where_azure_wants_api_key(stack: Stack) -> None:
    """Were the dialect to send OpenAI's `Authorization: Bearer`, the emulator answers Azure's 401, as Azure does
    for anything but a Microsoft Entra ID token there."""
    emulator = stack.children["emulator"].url
    target = Target("azure", emulator, Secret("az-key"), "azure", emulated=True, api_version="2024-10-21")
    call = DIALECTS["azure"].request(target, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                     "gpt-4o")
    bearer = {"Authorization": "Bearer az-key", "Content-Type": "application/json"}
    request = urllib.request.Request(call.url, data=call.body, headers=bearer, method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 (loopback)
        raise AssertionError("expected 401 for a Bearer key on an Azure path")
    except urllib.error.HTTPError as error:
        assert error.code == 401
        assert json.loads(error.read())["statusCode"] == 401
