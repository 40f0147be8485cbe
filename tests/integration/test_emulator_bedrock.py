"""The emulator's Bedrock Converse routes over real HTTP on loopback, called through the proxy's Bedrock dialect."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import msgspec
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from catalog import loader
from services.common.health import serve
from services.common.settings import Secret
from services.emulator import bedrock_validate as bv
from services.proxy.adapters.bedrock import BedrockDialect
from services.proxy.dialects import StreamBroken
from services.proxy.providers import Target
from tests.openapi import validate

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": "You are a terse radio host."},
                                  {"role": "user", "content": "Describe a harbor at dawn."}]
TOP_SONG: dict[str, Any] = {"type": "function", "function": {
    "name": "top_song", "description": "Get the most popular song played on a radio station.",
    "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}}}
CATALOG = loader.load()
DIALECT = BedrockDialect(secret_key=SECRET, region="us-east-1", session_token=None)


def target(base_url: str) -> Target:
    return Target("bedrock", base_url, Secret("AKIDEXAMPLE"), "bedrock", emulated=True)


async def converse(http: aiohttp.ClientSession, emulator: str, body: dict[str, Any],
                   model: str = CLAUDE) -> dict[str, Any]:
    call = DIALECT.request(target(emulator), {"model": "claude-3.5-haiku", **body}, model,
                           capabilities=bv.capabilities(CATALOG, model))
    async with http.post(call.url, data=call.body, headers=call.headers) as response:
        raw = await response.read()
        if response.status != 200:
            status, error = DIALECT.error(response.status, raw, dict(response.headers))
            return {"status": status, **error}
    completion: dict[str, Any] = msgspec.json.decode(DIALECT.response(raw, model="claude-3.5-haiku"))
    validate("CreateChatCompletionResponse", completion)
    return completion


async def converse_stream(http: aiohttp.ClientSession, emulator: str, body: dict[str, Any],
                          model: str = CLAUDE) -> list[dict[str, Any]]:
    call = DIALECT.request(target(emulator), {"model": "claude-3.5-haiku", **body, "stream": True}, model,
                           capabilities=bv.capabilities(CATALOG, model))
    decoder = DIALECT.stream(model="claude-3.5-haiku")
    events: list[bytes] = []
    async with http.post(call.url, data=call.body, headers=call.headers) as response:
        assert response.status == 200 and response.content_type == "application/vnd.amazon.eventstream"
        buffer = bytearray()
        async for data in response.content.iter_any():
            buffer += data
            events += decoder.events(buffer)
    events += decoder.close()
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [msgspec.json.decode(event[6:]) for event in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks


async def put_fault(http: aiohttp.ClientSession, emulator: str, model: str, plan: dict[str, Any]) -> None:
    async with http.put(f"{emulator}/_emulator/faults/{model}", json=plan) as response:
        assert response.status == 200, await response.text()


async def last_request(http: aiohttp.ClientSession, emulator: str) -> dict[str, Any]:
    async with http.get(f"{emulator}/_emulator/requests", params={"limit": "1"}) as response:
        entry: dict[str, Any] = (await response.json())["requests"][0]
        return entry


async def test_converse_and_converse_stream_agree_on_text_and_usage(emulator: str,
                                                                    http: aiohttp.ClientSession) -> None:
    whole = await converse(http, emulator, {"messages": MESSAGES, "max_tokens": 300})
    message = whole["choices"][0]["message"]
    assert message["content"] and whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["prompt_tokens"] > 0 and whole["usage"]["completion_tokens"] > 0
    chunks = await converse_stream(http, emulator, {"messages": MESSAGES, "max_tokens": 300})
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == message["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    entry = await last_request(http, emulator)
    assert entry["path"] == f"/model/{CLAUDE}/converse-stream"
    assert entry["body"]["system"] == [{"text": "You are a terse radio host."}]
    assert entry["body"]["inferenceConfig"] == {"maxTokens": 300}
    assert "authorization" not in entry["headers"] and entry["key_sha256"]  # the access key id's fingerprint


async def test_llama_and_an_inference_profile_arn_route_too(emulator: str, http: aiohttp.ClientSession) -> None:
    llama = await converse(http, emulator, {"messages": MESSAGES}, model=LLAMA)
    profile = await converse(http, emulator, {"messages": MESSAGES}, model=PROFILE_ARN)
    assert llama["choices"][0]["message"]["content"] != profile["choices"][0]["message"]["content"]
    assert (await last_request(http, emulator))["path"] == f"/model/{PROFILE_ARN}/converse"


async def test_a_tool_round_trip(emulator: str, http: aiohttp.ClientSession) -> None:
    ask = [{"role": "user", "content": "What is the most popular song on WZPZ?"}]
    first = await converse(http, emulator, {"messages": ask, "tools": [TOP_SONG], "tool_choice": "required"})
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = first["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("tooluse_") and call["function"]["name"] == "top_song"
    streamed = await converse_stream(http, emulator, {"messages": ask, "tools": [TOP_SONG], "tool_choice": "required"})
    deltas = [d for c in streamed if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["id"] == call["id"] and "".join(d["function"]["arguments"] for d in deltas) == \
        call["function"]["arguments"]
    assert streamed[-1]["usage"] == first["usage"]
    follow_up = [*ask, first["choices"][0]["message"],
                 {"role": "tool", "tool_call_id": call["id"], "content": "Elemental Hotel by 8 Storey Hike"}]
    second = await converse(http, emulator, {"messages": follow_up, "tools": [TOP_SONG]})
    assert second["choices"][0]["finish_reason"] == "stop" and second["choices"][0]["message"]["content"]
    sent = (await last_request(http, emulator))["body"]["messages"]
    assert sent[1]["content"][0]["toolUse"]["toolUseId"] == sent[2]["content"][0]["toolResult"]["toolUseId"] == \
        call["id"]
    forgotten = await converse(http, emulator, {"messages": follow_up})  # no tools: the history's are declared
    assert forgotten["choices"][0]["finish_reason"] in ("stop", "tool_calls")
    declared = (await last_request(http, emulator))["body"]["toolConfig"]["tools"]
    assert [t["toolSpec"]["name"] for t in declared] == ["top_song"]


async def test_a_throttling_fault_is_a_429_then_the_retry_succeeds(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, CLAUDE, {"status": 429, "fail_times": 1})
    call = DIALECT.request(target(emulator), {"model": "m", "messages": MESSAGES}, CLAUDE)
    async with http.post(call.url, data=call.body, headers=call.headers) as response:
        assert response.status == 429
        assert response.headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
        assert await response.json() == {"message": "Too many requests, please wait before trying again."}
        status, error = DIALECT.error(response.status, await response.read(), dict(response.headers))
    assert status == 429 and error["error"]["type"] == "rate_limit_error"
    assert error["error"]["code"] == "rate_limit_exceeded"
    assert (await converse(http, emulator, {"messages": MESSAGES}))["choices"][0]["message"]["content"]


async def test_a_throttling_exception_inside_the_stream_breaks_it(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, CLAUDE, {"status": 429, "drop_after_chunks": 2})
    with pytest.raises(StreamBroken) as raised:
        await converse_stream(http, emulator, {"messages": MESSAGES})
    assert raised.value.body["error"]["code"] == "rate_limit_exceeded"


async def test_a_stream_without_its_metadata_event_still_ends(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, CLAUDE, {"omit_usage": True})
    chunks = await converse_stream(http, emulator, {"messages": MESSAGES})
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and all(c["usage"] is None for c in chunks)


@pytest.mark.parametrize(("authorization", "exception"), [
    (None, "MissingAuthenticationTokenException"),
    ("Bearer sk-not-aws", "IncompleteSignatureException"),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock-runtime/aws4_request, "
     "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64, "InvalidSignatureException"),
])
async def test_a_missing_or_garbled_signature_is_refused(emulator: str, http: aiohttp.ClientSession,
                                                         authorization: str | None, exception: str) -> None:
    headers = {"X-Amz-Date": "20250101T000000Z", **({"Authorization": authorization} if authorization else {})}
    async with http.post(f"{emulator}/model/{CLAUDE}/converse", json={"messages": []}, headers=headers) as response:
        assert response.status == 403
        assert response.headers["x-amzn-ErrorType"].startswith(exception + ":")
        assert set(await response.json()) == {"message"}


async def test_boto3_itself_talks_to_the_emulator(emulator: str, http: aiohttp.ClientSession) -> None:
    client = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET,
                           region_name="us-east-1").client("bedrock-runtime", endpoint_url=emulator,
                                                           config=Config(retries={"total_max_attempts": 1}))
    request: dict[str, Any] = {"modelId": LLAMA, "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                               "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 200}}
    whole = await asyncio.to_thread(lambda: client.converse(**request))
    assert whole["stopReason"] == "end_turn" and whole["output"]["message"]["content"][0]["text"]

    def stream() -> list[dict[str, Any]]:
        return list(client.converse_stream(**request)["stream"])

    events = await asyncio.to_thread(stream)
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == whole["output"]["message"]["content"][0]["text"]
    assert events[-1]["metadata"]["usage"] == whole["usage"]
    await put_fault(http, emulator, LLAMA, {"status": 429, "fail_times": 1})
    with pytest.raises(ClientError, match="ThrottlingException"):
        await asyncio.to_thread(lambda: client.converse(**request))


# --------------------------------------------------------------------------- the signature on the wire


@pytest.fixture
async def verifier() -> AsyncIterator[str]:
    """An endpoint that checks SigV4 as AWS does: from the raw path and headers received, with the secret."""

    async def check(request: web.Request) -> web.Response:
        match = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", request.headers["Authorization"])
        assert match is not None
        key, region, service, signed, signature = match.groups()
        wire = AWSRequest("POST", f"http://{request.host}{request.raw_path}", data=await request.read(),
                          headers={name: request.headers[name] for name in signed.split(";")})
        wire.context["timestamp"] = request.headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(key, SECRET), service, region)
        expected = signer.signature(signer.string_to_sign(wire, signer.canonical_request(wire)), wire)
        return web.json_response({"valid": expected == signature, "raw_path": request.raw_path})

    app = web.Application()
    app.router.add_post("/model/{model_id}/{action}", check)
    runner = await serve(app, host="127.0.0.1", port=0, shutdown_timeout=1)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("model", [CLAUDE, PROFILE_ARN])
async def test_the_signature_matches_the_request_aiohttp_puts_on_the_wire(verifier: str, model: str,
                                                                          http: aiohttp.ClientSession) -> None:
    call = DIALECT.request(target(verifier), {"model": "m", "messages": MESSAGES, "stream": True}, model)
    async with http.post(call.url, data=call.body, headers=call.headers) as response:
        result = await response.json()
    assert result["valid"], result
    assert result["raw_path"].startswith("/model/" + model.split("/")[0])
