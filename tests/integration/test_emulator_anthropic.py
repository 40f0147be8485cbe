"""The emulator's /v1/messages over real HTTP on loopback, driven by the official anthropic SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic

from services.common.health import serve
from services.emulator import anthropic_validate as av
from services.emulator.service import make_app
from services.emulator.settings import load
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic as ad
from tests.openapi import validate

MODEL = "claude-haiku-4-5-20251001"
SYSTEM = "You are a terse travel guide."
MESSAGES: list[Any] = [{"role": "user", "content": "Describe a harbor at dawn."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"],
    },
}
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def client(emulator: str) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=emulator, api_key="sk-ant-test", max_retries=0) as sdk:
        yield sdk


async def put_fault(http: aiohttp.ClientSession, emulator: str, model: str, plan: dict[str, Any]) -> None:
    async with http.put(f"{emulator}/_emulator/faults/{model}", json=plan) as response:
        assert response.status == 200, await response.text()


async def post(http: aiohttp.ClientSession, emulator: str, body: Any, headers: dict[str, str] | None = None,
               path: str = "/v1/messages") -> tuple[int, Any]:
    async with http.post(f"{emulator}{path}", json=body, headers=HEADERS if headers is None else headers) as response:
        return response.status, await response.json()


async def test_non_streaming_message(client: AsyncAnthropic, emulator: str, http: aiohttp.ClientSession) -> None:
    raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=1024, system=SYSTEM,
                                                         messages=MESSAGES)
    message = await raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason == "end_turn" and message.stop_sequence is None
    assert len(message.content) == 1 and message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0
    again = await client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES)
    assert again.content == message.content and again.usage == message.usage and again.id != message.id
    counted = await client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == message.usage.input_tokens
    async with http.get(f"{emulator}/_emulator/requests", params={"limit": "1"}) as response:
        entry = (await response.json())["requests"][0]
    # anthropic 2.x sends its key as a Bearer token and a newer anthropic-version than 1.x's "2023-06-01"
    assert entry["path"] == "/v1/messages/count_tokens" and entry["headers"]["anthropic-version"]
    assert "authorization" not in entry["headers"] and "x-api-key" not in entry["headers"] and entry["key_sha256"]


async def test_stream_usage_and_text_equal_the_non_streamed_message(client: AsyncAnthropic) -> None:
    whole = await client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES)
    pieces: list[str] = []
    async with client.messages.stream(model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == whole.stop_reason == "end_turn"


async def test_raw_stream_has_the_documented_event_order(emulator: str, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES, "stream": True}
    async with http.post(f"{emulator}/v1/messages", json=body, headers=HEADERS) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        raw = bytearray(await response.read())
    events = [ad.parse_event(e) for e in wire.split_events(raw)]
    names = [e[0] for e in events if e is not None]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(e is not None and e[1]["type"] == e[0] for e in events)


async def test_tool_use_round_trip(client: AsyncAnthropic) -> None:
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = await client.messages.create(model=MODEL, max_tokens=1024, tools=[WEATHER], messages=question)
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    assert set(use.input) == {"location", "unit"} and use.input["unit"] == "celsius"
    async with client.messages.stream(model=MODEL, max_tokens=1024, tools=[WEATHER], messages=question) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0] == use and streamed.usage.output_tokens == first.usage.output_tokens
    answer = await client.messages.create(
        model=MODEL, max_tokens=1024, tools=[WEATHER],
        messages=[*question, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "15 C"}]}],
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    assert answer.usage.input_tokens > first.usage.input_tokens


async def test_forced_tool_choice_and_none(client: AsyncAnthropic) -> None:
    forced = await client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=MESSAGES,
                                          tool_choice={"type": "tool", "name": "get_weather"})
    assert forced.content[0].type == "tool_use"
    free = await client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=MESSAGES,
                                        tool_choice={"type": "none"})
    assert free.content[0].type == "text" and free.stop_reason == "end_turn"


async def test_max_tokens_and_stop_sequences(client: AsyncAnthropic) -> None:
    short = await client.messages.create(model=MODEL, max_tokens=2, messages=MESSAGES)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens <= 2
    text = (await client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)).content[0].text  # type: ignore[union-attr]
    stop = text.split(" ")[3]
    cut = await client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, stop_sequences=[stop])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert text.startswith(cut.content[0].text) and stop not in cut.content[0].text  # type: ignore[union-attr]


async def test_overloaded_529_fails_once_then_succeeds(client: AsyncAnthropic, emulator: str,
                                                       http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"status": 529, "fail_times": 1})
    with pytest.raises(anthropic.OverloadedError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == 529
    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                                 "request_id": caught.value.request_id}
    assert (await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)).stop_reason


async def test_sdk_retries_through_a_529(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"status": 529, "fail_times": 1, "retry_after": 0})
    async with AsyncAnthropic(base_url=emulator, api_key="sk-ant-test", max_retries=1) as sdk:
        assert (await sdk.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)).content


async def test_mid_stream_error_event(client: AsyncAnthropic, emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"status": 529, "drop_after_chunks": 4, "fail_times": 1})
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
            await stream.get_final_message()
    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_adapter_round_trip_through_the_emulator(emulator: str, http: aiohttp.ClientSession) -> None:
    openai_request = {"model": "claude-sonnet-4", "messages": [{"role": "system", "content": SYSTEM},
                                                               {"role": "user", "content": "Weather in Paris?"}],
                      "tools": [{"type": "function", "function": {"name": "get_weather",
                                                                  "parameters": WEATHER["input_schema"]}}]}
    status, body = await post(http, emulator, ad.to_upstream(openai_request, MODEL))
    assert status == 200, body
    completion = ad.from_upstream(body, model="claude-sonnet-4")
    validate("CreateChatCompletionResponse", completion)
    stream_request = ad.to_upstream({**openai_request, "stream": True}, MODEL)
    async with http.post(f"{emulator}/v1/messages", json=stream_request, headers=HEADERS) as response:
        raw = bytearray(await response.read())
    translator = ad.StreamTranslator(model="claude-sonnet-4", include_usage=True)
    chunks = [c for e in wire.split_events(raw) if (p := ad.parse_event(e)) for c in translator.feed(*p)]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"] == completion["usage"] and translator.done


@pytest.mark.parametrize(("body", "message"), [
    ({"model": MODEL, "messages": MESSAGES}, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
    ({"model": MODEL, "max_tokens": 0, "messages": MESSAGES}, "max_tokens: Input should be greater than or equal to 1"),
    ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "bot", "content": "x"}]},
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "temperature": 1.5},
     "temperature: Input should be less than or equal to 1"),
    ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}]},
     "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x."),
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "tool_choice": {"type": "auto"}},
     "tool_choice may only be specified while providing tools."),
])
async def test_validation_errors_have_anthropics_shape(emulator: str, http: aiohttp.ClientSession,
                                                       body: dict[str, Any], message: str) -> None:
    status, error = await post(http, emulator, body)
    assert status == 400 and error["type"] == "error" and error["request_id"].startswith("req_")
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"].startswith(message)


async def test_missing_key_and_version(emulator: str, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    status, error = await post(http, emulator, body, headers={"anthropic-version": "2023-06-01"})
    assert status == 401
    assert error["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}
    status, error = await post(http, emulator, body, headers={"x-api-key": "k"})
    assert status == 400 and error["error"]["message"] == "anthropic-version: header is required"
    status, error = await post(http, emulator, body, headers={"api-key": "k", "anthropic-version": "2023-06-01"})
    assert status == 401  # Azure's header is no Anthropic key
    bearer = {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}
    status, _ = await post(http, emulator, body, headers=bearer)
    assert status == 200  # how SDK 2.x sends an API key


async def test_dropped_stream_fails_the_sdk(client: AsyncAnthropic, emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"drop_after_chunks": 3, "fail_times": 1})
    # The SDK documents APIConnectionError for a connection that fails: a stream cut mid-body is one
    with pytest.raises(anthropic.APIConnectionError):
        async with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
            await stream.get_final_message()


# --------------------------------------------------------------------------- ground truth (issue 21)


async def test_sampling_pair_is_refused_for_the_models_the_catalog_names(client: AsyncAnthropic) -> None:
    both: Any = {"temperature": 0.5, "top_p": 0.9}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, extra_body=both)
    assert caught.value.body == {"type": "error", "request_id": caught.value.request_id, "error": {
        "type": "invalid_request_error",
        "message": "`temperature` and `top_p` cannot both be specified for this model. Please use only one."}}
    alone = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, extra_body={"top_p": 0.9})
    older = await client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES,
                                         extra_body=both)
    assert alone.stop_reason == older.stop_reason == "end_turn"


@pytest.mark.parametrize(("body", "message"), [
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "frequency_penalty": 0.5},
     "frequency_penalty: Extra inputs are not permitted"),
    ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x", "cache": True}]}]}, "messages.0.content.0.cache: Extra inputs are not permitted"),
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "tools": [{"name": "f"}]}, "tools.0"),
])
async def test_ground_truth_refusals_over_http(emulator: str, http: aiohttp.ClientSession, body: dict[str, Any],
                                               message: str) -> None:
    status, error = await post(http, emulator, body)
    assert status == 400 and error["error"]["type"] == "invalid_request_error", error
    assert error["error"]["message"].startswith(message)
    av.check_event(error)  # an error body is the SDK's ErrorResponse, nothing more


async def test_unknown_anthropic_version_is_refused(emulator: str, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    status, error = await post(http, emulator, body, headers={**HEADERS, "anthropic-version": "2024-13-01"})
    assert status == 400 and error["error"]["message"] == "anthropic-version: invalid version '2024-13-01'"


async def test_answers_parse_strictly_under_the_sdk_types(emulator: str, http: aiohttp.ClientSession) -> None:
    for tools in ([], [WEATHER]):
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES, **(
            {"tools": tools, "tool_choice": {"type": "any"}} if tools else {})}
        status, message = await post(http, emulator, body)
        assert status == 200
        av.check_message(message)
        async with http.post(f"{emulator}/v1/messages", json={**body, "stream": True}, headers=HEADERS) as response:
            raw = bytearray(await response.read())
        events = [e for e in (ad.parse_event(x) for x in wire.split_events(raw)) if e is not None]
        assert len(events) > 5
        for _, data in events:
            av.check_event(data)


async def test_validation_off_lets_the_unknown_through() -> None:
    app = make_app(load({"EMULATOR_VALIDATE": "0"}))
    runner = await serve(app, host="127.0.0.1", port=0, shutdown_timeout=2)
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "frequency_penalty": 0.5,
                    "temperature": 0.5, "top_p": 0.5}
            status, message = await post(http, url, body)
    finally:
        await runner.cleanup()
    assert status == 200 and message["type"] == "message"
