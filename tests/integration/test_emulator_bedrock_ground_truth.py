"""The emulator's Bedrock routes judged by botocore (issue 21): bodies botocore's ParamValidator or the catalog's
model rules refuse get Bedrock's own 400, and the emulator's answers parse under botocore's own parsers and the
operations' output shapes with no member the service model does not declare."""

from __future__ import annotations

from typing import Any

import aiohttp
import botocore.session
import msgspec
import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.parsers import create_parser
from multidict import CIMultiDict

from services.emulator import bedrock_validate as bv
from services.proxy.adapters.bedrock import model_path, sign

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SONNET_45 = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_35 = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
ASK: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": "Describe a harbor at dawn."}]}]}


async def post(http: aiohttp.ClientSession, emulator: str, model: str, body: dict[str, Any],
               *, stream: bool = False) -> tuple[int, CIMultiDict[str], bytes]:
    """A SigV4-signed Converse call, as the proxy's Bedrock dialect sends it."""
    url = f"{emulator}/{model_path(model, stream=stream)}"
    payload = msgspec.json.encode(body)
    headers = sign("POST", url, {"Content-Type": "application/json"}, payload, access_key="AKIDEXAMPLE",
                   secret_key=SECRET, region="us-east-1")
    async with http.post(url, data=payload, headers=headers) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


def parsed(status: int, headers: CIMultiDict[str], raw: bytes, *, stream: bool = False) -> dict[str, Any]:
    """The answer as botocore's own rest-json parser reads it for Converse / ConverseStream."""
    op = SERVICE.operation_model("ConverseStream" if stream else "Converse")
    response: dict[str, Any] = {"status_code": status, "headers": headers, "body": raw,
                                "context": {"operation_name": op.name}}
    if stream and status == 200:
        response["body"] = _Body(raw)
    result: dict[str, Any] = create_parser("rest-json").parse(response, op.output_shape)
    return result


class _Body:
    """The minimal urllib3-response stand-in botocore's EventStream reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._data

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("body", "found"), [
    ({**ASK, "inferenceConfig": {"stopSequences": [""]}}, "inferenceConfig.stopSequences[0]"),
    ({**ASK, "inferenceConfig": {"maxTokens": "many"}}, "inferenceConfig.maxTokens"),
    ({**ASK, "temperature": 0.5}, 'Unknown parameter in input: "temperature"'),
    ({"messages": [{"role": "user", "content": [{"text": "Hi", "image": {"format": "png"}}]}]}, "messages[0]"),
    ({**ASK, "modelId": HAIKU_35}, "unknown field 'modelId'"),
])
async def test_a_body_botocore_refuses_is_bedrocks_own_400(emulator: str, http: aiohttp.ClientSession,
                                                          body: dict[str, Any], found: str) -> None:
    status, headers, raw = await post(http, emulator, HAIKU_35, body)
    assert status == 400 and headers["x-amzn-ErrorType"].startswith("ValidationException:")
    error = parsed(status, headers, raw)
    assert error["Error"]["Code"] == "ValidationException" and found in error["Error"]["Message"]


async def test_a_bare_base_id_of_a_profile_only_model_is_refused_on_demand(emulator: str,
                                                                          http: aiohttp.ClientSession) -> None:
    bare = SONNET_45.split(".", 1)[1]
    status, headers, raw = await post(http, emulator, bare, ASK)
    assert status == 400 and headers["x-amzn-ErrorType"].startswith("ValidationException:")
    assert parsed(status, headers, raw)["Error"]["Message"] == (
        f"Invocation of model ID {bare} with on-demand throughput isn’t supported. Retry your request with the ID or "
        "ARN of an inference profile that contains this model.")
    assert (await post(http, emulator, SONNET_45, ASK))[0] == 200


async def test_temperature_and_top_p_together_are_refused_for_a_model_that_takes_one(
        emulator: str, http: aiohttp.ClientSession) -> None:
    both = {**ASK, "inferenceConfig": {"temperature": 0.5, "topP": 0.9}}
    status, headers, raw = await post(http, emulator, SONNET_45, both)
    assert status == 400 and parsed(status, headers, raw)["Error"]["Message"] == bv.BOTH_SAMPLING
    assert (await post(http, emulator, HAIKU_35, both))[0] == 200  # Claude 3.5 Haiku takes both


async def test_a_converse_answer_parses_under_botocore_with_nothing_undeclared(emulator: str,
                                                                              http: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(http, emulator, HAIKU_35, {**ASK, "inferenceConfig": {"maxTokens": 64}})
    assert status == 200
    answer = parsed(status, headers, raw)
    assert answer["output"]["message"]["content"][0]["text"] and answer["stopReason"] in ("end_turn", "max_tokens")
    assert bv.response_problems(msgspec.json.decode(raw)) == []


async def test_a_converse_stream_parses_under_botocore_event_by_event(emulator: str,
                                                                     http: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(http, emulator, HAIKU_35, ASK, stream=True)
    assert status == 200
    events = parsed(status, headers, raw, stream=True)["stream"]
    assert isinstance(events, EventStream)
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    frames = EventStreamBuffer()
    frames.add_data(raw)
    raw_events = [(m.headers[":event-type"], msgspec.json.decode(m.payload)) for m in frames]
    assert [kind for kind, _ in raw_events] == kinds
    for kind, payload in raw_events:  # the bytes as sent: botocore's parser would drop what it does not know
        assert bv.event_problems(kind, payload) == [], kind
    assert bv.event_problems("messageStop", {"stopReason": "end_turn", "p": "abc", "extra": 1}) == ["messageStop.extra"]
