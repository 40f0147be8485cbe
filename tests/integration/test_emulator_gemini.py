"""The emulator's Gemini routes over real HTTP on loopback, driven raw with aiohttp and with Google's own SDK."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from services.emulator import gemini_validate as gv
from services.proxy.adapters import gemini
from tests.openapi import validate

MODEL = "gemini-2.5-flash"
KEY = "AIza-test-key"
MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Describe a harbor."}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                       "properties": {"city": {"type": "string"},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}},
    },
}


async def post(http: aiohttp.ClientSession, emulator: str, path: str, body: object,
               headers: dict[str, str] | None = None) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with http.post(f"{emulator}/v1beta/{path}", json=body,
                         headers={"x-goog-api-key": KEY} if headers is None else headers) as response:
        return response.status, response.headers, await response.read()


async def complete(http: aiohttp.ClientSession, emulator: str, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Send an OpenAI body through the adapter; (raw Gemini response, OpenAI completion)."""
    path, request = gemini.to_upstream(body, MODEL)
    status, _, raw = await post(http, emulator, path, request)
    assert status == 200, raw
    upstream = json.loads(raw)
    assert gv.check_response(upstream) is None  # the emulator answers what google-genai reads strictly
    completion = gemini.from_upstream(upstream, model=MODEL)
    validate("CreateChatCompletionResponse", completion)
    return upstream, completion


async def test_non_streaming_generate_content(emulator: str, http: aiohttp.ClientSession) -> None:
    upstream, completion = await complete(http, emulator, {"model": MODEL, "messages": MESSAGES})
    assert set(upstream) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    candidate = upstream["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    metadata = upstream["usageMetadata"]
    assert metadata["totalTokenCount"] == (metadata["promptTokenCount"] + metadata["candidatesTokenCount"]
                                           + metadata["thoughtsTokenCount"])
    assert completion["choices"][0]["message"]["content"] == candidate["content"]["parts"][0]["text"]
    assert completion["usage"]["total_tokens"] == metadata["totalTokenCount"]
    _, again = await complete(http, emulator, {"model": MODEL, "messages": MESSAGES})
    assert again["choices"][0]["message"]["content"] == completion["choices"][0]["message"]["content"]


async def test_streaming_sse_ends_with_the_non_streaming_usage(emulator: str, http: aiohttp.ClientSession) -> None:
    whole, completion = await complete(http, emulator, {"model": MODEL, "messages": MESSAGES})
    path, request = gemini.to_upstream({"model": MODEL, "messages": MESSAGES, "stream": True}, MODEL)
    status, headers, raw = await post(http, emulator, path, request)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b"" and len(events) > 3 and b"[DONE]" not in raw
    assert all(e.startswith(b"data: {") and b"\n" not in e for e in events[:-1])
    data = [json.loads(e[6:]) for e in events[:-1]]
    assert all(gv.check_response(event) is None for event in data)
    assert data[-1]["usageMetadata"] == whole["usageMetadata"]
    assert data[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in d["candidates"][0] for d in data[:-1])
    translator = gemini.StreamTranslator(model=MODEL, include_usage=True)
    buffer = bytearray(raw)
    chunks = [c for event in gemini.split_sse_data(buffer) for c in translator.feed(event)] + translator.finish()
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == completion["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == completion["usage"]


async def test_json_array_stream_without_alt_sse(emulator: str, http: aiohttp.ClientSession) -> None:
    _, request = gemini.to_upstream({"model": MODEL, "messages": MESSAGES}, MODEL)
    status, _, raw = await post(http, emulator, f"models/{MODEL}:streamGenerateContent", request)
    assert status == 200
    chunks = json.loads(raw)
    assert isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all(gv.check_response(chunk) is None for chunk in chunks)


async def test_function_call_round_trip(emulator: str, http: aiohttp.ClientSession) -> None:
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL]}
    upstream, completion = await complete(http, emulator, ask)
    part = upstream["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"]["name"] == "get_weather" and "thoughtSignature" in part
    message = completion["choices"][0]["message"]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == part["functionCall"]["args"]
    follow_up = {**ask, "messages": [*ask["messages"], message,
                                     {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'}]}
    path, request = gemini.to_upstream(follow_up, MODEL)
    assert request["contents"][1]["parts"][0]["thoughtSignature"] == part["thoughtSignature"]
    _, answer = await complete(http, emulator, follow_up)
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["choices"][0]["message"]["content"]
    assert answer["usage"]["prompt_tokens"] > completion["usage"]["prompt_tokens"]


async def test_503_fault_is_a_gemini_error_then_recovers(emulator: str, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{emulator}/_emulator/faults/{MODEL}",
                        json={"status": 503, "fail_times": 1, "retry_after": 2}) as response:
        assert response.status == 200
    path, request = gemini.to_upstream({"model": MODEL, "messages": MESSAGES, "stream": True}, MODEL)
    status, headers, raw = await post(http, emulator, path, request)
    assert status == 503 and headers["retry-after"] == "2"
    body = json.loads(raw)
    assert body["error"]["code"] == 503 and body["error"]["status"] == "UNAVAILABLE"
    error = gemini.error_to_openai(status, raw)
    validate("ErrorResponse", error)
    assert error["error"]["type"] == "server_error" and "overloaded" in error["error"]["message"]
    status, _, _ = await post(http, emulator, path, request)
    assert status == 200


async def test_api_key_by_header_or_query_and_never_logged(emulator: str, http: aiohttp.ClientSession) -> None:
    _, request = gemini.to_upstream({"model": MODEL, "messages": MESSAGES}, MODEL)
    status, _, raw = await post(http, emulator, f"models/{MODEL}:generateContent", request, headers={})
    assert status == 403 and json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
    status, _, _ = await post(http, emulator, f"models/{MODEL}:generateContent?key={KEY}", request, headers={})
    assert status == 200
    async with http.get(f"{emulator}/_emulator/requests") as response:
        entries = (await response.json())["requests"]
    assert KEY not in json.dumps(entries)
    assert entries[-1]["key_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()[:16]
    assert entries[-1]["body"] == request and entries[0]["key_sha256"] is None


async def test_invalid_requests_get_gemini_errors(emulator: str, http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, emulator, f"models/{MODEL}:generateContent",
                                {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxTokens": 5}})
    error = json.loads(raw)["error"]
    assert status == 400 and error["status"] == "INVALID_ARGUMENT" and 'Unknown name "maxTokens"' in error["message"]
    status, _, raw = await post(http, emulator, f"models/{MODEL}:countTokens", {"contents": []})
    assert status == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND"


async def test_embeddings_through_the_adapter(emulator: str, http: aiohttp.ClientSession) -> None:
    inputs = ["What is the meaning of life?", "How do cats purr?"]
    path, request = gemini.embeddings_to_upstream(
        {"model": "gemini-embedding-001", "input": inputs, "dimensions": 16}, "gemini-embedding-001")
    status, _, raw = await post(http, emulator, path, request)
    assert status == 200
    body, estimated = gemini.embeddings_from_upstream(json.loads(raw), model="gemini-embedding-001", inputs=inputs)
    validate("CreateEmbeddingResponse", body)
    assert estimated and [len(d["embedding"]) for d in body["data"]] == [16, 16]
    status, _, raw = await post(http, emulator, "models/text-embedding-004:embedContent",
                                {"content": {"parts": [{"text": inputs[0]}]}})
    assert status == 200 and len(json.loads(raw)["embedding"]["values"]) == 768


async def test_google_genai_sdk(emulator: str) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=emulator, api_version="v1beta"))
    config = types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=400)
    response = await client.aio.models.generate_content(model=MODEL, contents="Describe a harbor.", config=config)
    assert response.text and response.candidates[0].finish_reason == types.FinishReason.STOP
    streamed = [c async for c in await client.aio.models.generate_content_stream(
        model=MODEL, contents="Describe a harbor.", config=config)]
    assert "".join(c.text or "" for c in streamed) == response.text
    assert streamed[-1].usage_metadata == response.usage_metadata

    weather = types.FunctionDeclaration(name="get_weather", description="Current weather for a city",
                                        parameters_json_schema=None, parameters=types.Schema(
                                            type=types.Type.OBJECT, required=["city"],
                                            properties={"city": types.Schema(type=types.Type.STRING)}))
    tools_config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    asked = await client.aio.models.generate_content(model=MODEL, contents="Weather in Paris?", config=tools_config)
    (call,) = asked.function_calls or []
    assert call.name == "get_weather" and set(call.args or {}) == {"city"}
    history = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
               asked.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(
                   name="get_weather", response={"output": "21 C"})])]
    answer = await client.aio.models.generate_content(model=MODEL, contents=history, config=tools_config)
    assert answer.text and not answer.function_calls

    embedded = await client.aio.models.embed_content(model="gemini-embedding-001", contents=["a", "b"],
                                                     config=types.EmbedContentConfig(output_dimensionality=8))
    assert [len(e.values or []) for e in embedded.embeddings or []] == [8, 8]

    errors = pytest.importorskip("google.genai.errors")
    async with aiohttp.ClientSession() as http, \
            http.put(f"{emulator}/_emulator/faults/{MODEL}", json={"status": 503}) as put:
        assert put.status == 200
    retry_off = types.HttpOptions(base_url=emulator, api_version="v1beta",
                                  retry_options=types.HttpRetryOptions(attempts=1))
    no_retry = genai.Client(api_key=KEY, http_options=retry_off)
    with pytest.raises(errors.ServerError, match="503 UNAVAILABLE.*overloaded"):
        await no_retry.aio.models.generate_content(model=MODEL, contents="hi")


async def test_ground_truth_and_model_rules_refuse_like_gemini(emulator: str, http: aiohttp.ClientSession) -> None:
    """With validation on (the default) the emulator answers Gemini's 400 for what google-genai or the catalog
    rules out; the same body is fine for a model that can switch thinking off."""
    off = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}
    status, _, raw = await post(http, emulator, "models/gemini-2.5-pro:generateContent", off)
    error = json.loads(raw)["error"]
    assert status == 400 and error["status"] == "INVALID_ARGUMENT" and "only works in thinking mode" in error["message"]
    status, _, _ = await post(http, emulator, f"models/{MODEL}:generateContent", off)
    assert status == 200
    vertex_only = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"routingConfig": {"autoMode": {}}}}
    status, _, raw = await post(http, emulator, f"models/{MODEL}:streamGenerateContent?alt=sse", vertex_only)
    assert status == 400 and 'Unknown name "routingConfig"' in json.loads(raw)["error"]["message"]
