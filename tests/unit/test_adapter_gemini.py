"""The Gemini adapter's pure translations, against fixtures written from Google's documented examples."""

from __future__ import annotations

import base64
import copy
import json
import struct
from typing import Any

import pytest

from services.emulator import gemini_format as gf
from services.proxy.adapters import errors, gemini
from tests.openapi import validate

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-tiny-image").decode()

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_current_temperature",
        "description": "Gets the current temperature for a given location.",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "location": {"type": "string", "description": "The city name, e.g. San Francisco"},
                "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]},
                "when": {"$ref": "#/$defs/when"},
            },
            "required": ["location"],
            "$defs": {"when": {"type": "object", "additionalProperties": False,
                               "properties": {"day": {"type": "string", "format": "date"}}}},
        },
    },
}

# From ai.google.dev "Text generation" (REST): a thinking model's answer with its usage.
TEXT_RESPONSE: dict[str, Any] = {
    "candidates": [{"content": {"parts": [{"text": "AI learns patterns from data to make predictions."}],
                                "role": "model"}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 9, "totalTokenCount": 411,
                      "cachedContentTokenCount": 4,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}], "thoughtsTokenCount": 394},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mUpAaPqrI8iqnvgPmtqS2Qo",
}

# From ai.google.dev "Function calling" (REST): the model asks for schedule_meeting.
FUNCTION_CALL_RESPONSE: dict[str, Any] = {
    "candidates": [{"content": {"parts": [{"functionCall": {"name": "schedule_meeting", "args": {
        "attendees": ["Bob", "Alice"], "date": "2025-03-27", "time": "10:00", "topic": "Q3 planning"}},
        "thoughtSignature": "CiQB0e2Kb1k1Ztl="}], "role": "model"}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 97, "candidatesTokenCount": 40, "totalTokenCount": 137},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "3kpAaM6RNvuKnvgPp9iU-Q0",
}

# A recorded `streamGenerateContent?alt=sse` body: CRLF CRLF after every event, no terminator, usage on each.
SSE_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],'
    b'"usageMetadata": {"promptTokenCount": 10,"totalTokenCount": 38,"thoughtsTokenCount": 28},'
    b'"modelVersion": "gemini-2.5-flash","responseId": "Ab3cD"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " sky is blue because of Rayleigh"}],"role": "model"},'
    b'"index": 0}],"usageMetadata": {"promptTokenCount": 10,"candidatesTokenCount": 7,"totalTokenCount": 45,'
    b'"thoughtsTokenCount": 28},"modelVersion": "gemini-2.5-flash","responseId": "Ab3cD"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " scattering."}],"role": "model"},'
    b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 10,"candidatesTokenCount": 11,'
    b'"totalTokenCount": 49,"cachedContentTokenCount": 2,"thoughtsTokenCount": 28},'
    b'"modelVersion": "gemini-2.5-flash","responseId": "Ab3cD"}\r\n\r\n'
)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "messages": list(messages), **extra}


def accepted_by_gemini(request: dict[str, Any]) -> dict[str, Any]:
    """The emulator's copy of Gemini's request checks (unknown names, empty parts, call/response counts)."""
    normalised, error = gf.validate_generate_request(copy.deepcopy(request))
    assert error is None, error
    assert normalised is not None
    return normalised


# --------------------------------------------------------------------------- requests


def test_system_messages_roles_and_generation_config() -> None:
    body = chat({"role": "system", "content": "You are a cat."},
                {"role": "developer", "content": [{"type": "text", "text": "Your name is Neko."}]},
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": "Meow."},
                {"role": "user", "content": "What is your name?"},
                temperature=0.2, top_p=0.9, max_completion_tokens=300, stop="END", seed=7,
                response_format={"type": "json_object"}, stream_options=None, user="u-1")
    path, request = gemini.to_upstream(body, "gemini-2.5-flash")
    assert path == "models/gemini-2.5-flash:generateContent"
    assert request == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello there"}]},
            {"role": "model", "parts": [{"text": "Meow."}]},
            {"role": "user", "parts": [{"text": "What is your name?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are a cat."}, {"text": "Your name is Neko."}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "seed": 7, "maxOutputTokens": 300,
                             "stopSequences": ["END"], "responseMimeType": "application/json"},
    }
    accepted_by_gemini(request)


def test_streaming_path_and_json_schema_and_reasoning_effort() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": False}
    body = chat({"role": "user", "content": "Name a cat"}, stream=True, stream_options={"include_usage": True},
                max_tokens=50, stop=["a", "b"], reasoning_effort="low",
                response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}})
    path, request = gemini.to_upstream(body, "models/gemini-2.5-pro")
    assert path == "models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert request["generationConfig"] == {"maxOutputTokens": 50, "stopSequences": ["a", "b"],
                                           "responseMimeType": "application/json", "responseJsonSchema": schema,
                                           "thinkingConfig": {"thinkingBudget": 1024}}
    accepted_by_gemini(request)


def test_images_as_data_urls_become_inline_data() -> None:
    body = chat({"role": "user", "content": [
        {"type": "text", "text": "Caption this image."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain,hello%20world"}},
    ]})
    _, request = gemini.to_upstream(body, "gemini-2.5-flash")
    assert request["contents"][0]["parts"] == [
        {"text": "Caption this image."},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "text/plain", "data": base64.b64encode(b"hello world").decode()}},
    ]
    accepted_by_gemini(request)


def test_a_remote_image_url_is_refused_naming_the_part() -> None:
    body = chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]})
    with pytest.raises(gemini.UnsupportedParameter, match=r"messages\[0\]\.content\[0\]\.image_url.*data: URL"):
        gemini.to_upstream(body, "gemini-2.5-flash")


def test_tools_tool_calls_and_tool_results() -> None:
    body = chat(
        {"role": "user", "content": "Temperature in London and Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "extra_content": {"google": {"thought_signature": "c2ln"}},
             "function": {"name": "get_current_temperature", "arguments": '{"location": "London"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_current_temperature", "arguments": '{"location": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 15, "unit": "celsius"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "18 degrees"},
        tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=True,
    )
    _, request = gemini.to_upstream(body, "gemini-2.5-flash")
    assert request["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_current_temperature", "args": {"location": "London"}},
             "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_current_temperature", "args": {"location": "Paris"}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_current_temperature",
                                  "response": {"temperature": 15, "unit": "celsius"}}},
            {"functionResponse": {"name": "get_current_temperature", "response": {"output": "18 degrees"}}},
        ]},
    ]
    assert request["tools"] == [{"functionDeclarations": [{
        "name": "get_current_temperature",
        "description": "Gets the current temperature for a given location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city name, e.g. San Francisco"},
                "unit": {"type": "string", "nullable": True, "enum": ["celsius", "fahrenheit"]},
                "when": {"type": "object", "properties": {"day": {"type": "string"}}},
            },
            "required": ["location"],
        },
    }]}]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    accepted_by_gemini(request)


@pytest.mark.parametrize(("choice", "config"), [
    ("none", {"mode": "NONE"}),
    ("auto", {"mode": "AUTO"}),
    ({"type": "function", "function": {"name": "get_current_temperature"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_current_temperature"]}),
])
def test_tool_choice_becomes_function_calling_config(choice: Any, config: dict[str, Any]) -> None:
    _, request = gemini.to_upstream(chat({"role": "user", "content": "hi"}, tools=[WEATHER_TOOL],
                                         tool_choice=choice), "gemini-2.5-flash")
    assert request["toolConfig"] == {"functionCallingConfig": config}


def test_a_function_without_parameters_is_declared_without_them() -> None:
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    _, request = gemini.to_upstream(chat({"role": "user", "content": "time?"}, tools=[tool]), "gemini-2.5-flash")
    assert request["tools"] == [{"functionDeclarations": [{"name": "now"}]}]
    accepted_by_gemini(request)


def test_a_tool_result_needs_an_earlier_tool_call() -> None:
    body = chat({"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"})
    with pytest.raises(gemini.UnsupportedParameter, match=r"messages\[1\]\.tool_call_id") as caught:
        gemini.to_upstream(body, "gemini-2.5-flash")
    assert caught.value.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(("param", "value"), [
    ("logprobs", True), ("top_logprobs", 3), ("n", 2), ("logit_bias", {"42": 10}),
    ("modalities", ["text", "audio"]), ("audio", {"voice": "alloy"}), ("prediction", {"type": "content"}),
    ("verbosity", "low"),
])
def test_unsupported_parameters_are_refused_naming_parameter_and_model(param: str, value: Any) -> None:
    body = {**chat({"role": "user", "content": "hi"}, **{param: value}), "model": "gemini-pro-latest"}
    with pytest.raises(gemini.UnsupportedParameter, match=rf"'{param}' is not supported by model 'gemini-pro-latest'") \
            as caught:
        gemini.to_upstream(body, "gemini-2.5-pro")
    assert caught.value.param == param and isinstance(caught.value, ValueError)


def test_harmless_defaults_are_accepted() -> None:
    _, request = gemini.to_upstream(chat({"role": "user", "content": "hi"}, n=1, logprobs=False, logit_bias={},
                                         store=False, metadata={"a": "b"}), "gemini-2.5-flash")
    assert "generationConfig" not in request


def test_clean_schema_keeps_gemini_subset_only() -> None:
    schema = {"type": "object", "title": "T", "properties": {
        "kind": {"const": "a"}, "size": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^x", "examples": ["x1"]}},
        "level": {"type": "integer", "enum": [1, 2], "format": "int32"},
        "at": {"type": "string", "format": "date-time"}, "mail": {"type": "string", "format": "email"},
    }, "patternProperties": {"^y": {}}}
    assert gemini.clean_schema(schema) == {"type": "object", "title": "T", "properties": {
        "kind": {"enum": ["a"]}, "size": {"nullable": True, "type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^x"}},
        "level": {"type": "integer", "format": "int32"},
        "at": {"type": "string", "format": "date-time"}, "mail": {"type": "string"},
    }}


# --------------------------------------------------------------------------- responses


def test_text_response_with_thinking_and_cached_tokens() -> None:
    completion = gemini.from_upstream(TEXT_RESPONSE, model="gemini-2.5-flash", created=1700000000)
    validate("CreateChatCompletionResponse", completion)
    assert completion["id"] == "chatcmpl-mUpAaPqrI8iqnvgPmtqS2Qo" and completion["model"] == "gemini-2.5-flash"
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "AI learns patterns from data to make predictions."
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert completion["usage"] == {
        "prompt_tokens": 8, "completion_tokens": 9 + 394, "total_tokens": 411,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 394},
    }


def test_function_call_response_becomes_tool_calls_with_stable_ids() -> None:
    completion = gemini.from_upstream(FUNCTION_CALL_RESPONSE, model="gemini-2.5-flash")
    validate("CreateChatCompletionResponse", completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "schedule_meeting"
    assert json.loads(call["function"]["arguments"]) == {
        "attendees": ["Bob", "Alice"], "date": "2025-03-27", "time": "10:00", "topic": "Q3 planning"}
    assert call["extra_content"] == {"google": {"thought_signature": "CiQB0e2Kb1k1Ztl="}}
    again = gemini.from_upstream(FUNCTION_CALL_RESPONSE, model="gemini-2.5-flash")
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == call["id"]
    assert completion["usage"]["completion_tokens"] == 40 and completion["usage"]["total_tokens"] == 137


def test_a_tool_call_id_and_signature_survive_the_next_request() -> None:
    completion = gemini.from_upstream(FUNCTION_CALL_RESPONSE, model="gemini-2.5-flash")
    message = completion["choices"][0]["message"]
    call_id = message["tool_calls"][0]["id"]
    body = chat({"role": "user", "content": "Book it"}, message,
                {"role": "tool", "tool_call_id": call_id, "content": '{"status": "booked"}'})
    _, request = gemini.to_upstream(body, "gemini-2.5-flash")
    assert request["contents"][1]["parts"][0]["thoughtSignature"] == "CiQB0e2Kb1k1Ztl="
    assert request["contents"][2]["parts"][0]["functionResponse"]["name"] == "schedule_meeting"
    accepted_by_gemini(request)


def test_safety_stops_and_blocked_prompts_are_content_filter() -> None:
    stopped = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH", "blocked": True}]}],
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}, "modelVersion": "gemini-2.5-flash"}
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    for response in (stopped, blocked):
        completion = gemini.from_upstream(response, model="gemini-2.5-flash")
        validate("CreateChatCompletionResponse", completion)
        assert completion["choices"][0]["finish_reason"] == "content_filter"
        assert completion["choices"][0]["message"]["content"] is None
        assert completion["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize(("reason", "tools", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
    ("MAX_TOKENS", True, "length"), ("RECITATION", False, "content_filter"), ("BLOCKLIST", False, "content_filter"),
    ("SPII", False, "content_filter"), (None, False, "stop"),
])
def test_finish_reasons(reason: str | None, tools: bool, expected: str) -> None:
    assert gemini.finish_reason(reason, has_tool_calls=tools) == expected


# --------------------------------------------------------------------------- streams


def translate(raw: bytes, *, include_usage: bool, piece: int = 7) -> tuple[list[dict[str, Any]], Any]:
    """Feed `raw` in `piece`-byte slices (splitting CRLFs and JSON) through split_sse_data and the translator."""
    translator = gemini.StreamTranslator(model="gemini-2.5-flash", include_usage=include_usage, created=1)
    buffer = bytearray()
    chunks: list[dict[str, Any]] = []
    for start in range(0, len(raw), piece):
        buffer += raw[start: start + piece]
        for event in gemini.split_sse_data(buffer):
            chunks.extend(translator.feed(event))
    assert not buffer
    chunks.extend(translator.finish())
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks, translator


def test_recorded_sse_stream_becomes_openai_chunks_with_final_usage() -> None:
    chunks, translator = translate(SSE_STREAM, include_usage=True)
    assert {c["id"] for c in chunks} == {"chatcmpl-Ab3cD"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The sky is blue because of Rayleigh scattering."
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == translator.usage == {
        "prompt_tokens": 10, "completion_tokens": 11 + 28, "total_tokens": 49,
        "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 28},
    }


def test_lf_framed_events_parse_too() -> None:
    chunks, _ = translate(SSE_STREAM.replace(b"\r\n", b"\n"), include_usage=False, piece=3)
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_function_call() -> None:
    raw = b"data: " + json.dumps(FUNCTION_CALL_RESPONSE).encode() + b"\r\n\r\n"
    chunks, _ = translate(raw, include_usage=False)
    (call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    expected = gemini.from_upstream(FUNCTION_CALL_RESPONSE, model="x")["choices"][0]["message"]["tool_calls"][0]
    assert call == {"index": 0, **expected}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_without_finish_reason_or_usage_still_closes() -> None:
    raw = b'data: {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}}]}\r\n\r\n'
    chunks, translator = translate(raw, include_usage=True)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and translator.usage is None


def test_an_error_inside_the_stream_raises() -> None:
    translator = gemini.StreamTranslator(model="gemini-2.5-flash", include_usage=False)
    with pytest.raises(gemini.StreamError, match="overloaded"):
        translator.feed({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                     "status": "INVALID_ARGUMENT", "details": [{
                         "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                         "domain": "googleapis.com"}]}}, "invalid_request_error", "invalid_api_key"),
    (400, {"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified\n",
                     "status": "INVALID_ARGUMENT"}}, "invalid_request_error", "invalid_argument"),
    (403, gf.missing_key_body(), "invalid_request_error", "permission_denied"),
    (429, [{"error": {"code": 429, "message": "You exceeded your current quota.",
                      "status": "RESOURCE_EXHAUSTED"}}], "rate_limit_error", "rate_limit_exceeded"),
    (503, gf.status_error_body(503, model="gemini-2.5-flash"), "server_error", "unavailable"),
])
def test_errors_become_openai_errors(status: int, body: Any, kind: str, code: str) -> None:
    error = gemini.error_to_openai(status, json.dumps(body, indent=2).encode())
    validate("ErrorResponse", error)
    assert error["error"]["type"] == kind and error["error"]["code"] == code
    message = (body[0] if isinstance(body, list) else body)["error"]["message"]
    assert error["error"]["message"] == message


def test_a_non_json_error_body_is_wrapped() -> None:
    error = gemini.error_to_openai(502, b"<html>Bad Gateway</html>")
    validate("ErrorResponse", error)
    assert error["error"]["message"] == "Gemini returned HTTP 502"


# --------------------------------------------------------------------------- embeddings


def test_embeddings_request_and_response() -> None:
    path, request = gemini.embeddings_to_upstream(
        {"model": "gemini-embedding-001", "input": ["What is the meaning of life?", "How do cats purr?"],
         "dimensions": 3, "encoding_format": "float"}, "gemini-embedding-001")
    assert path == "models/gemini-embedding-001:batchEmbedContents"
    assert request == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "What is the meaning of life?"}]},
         "outputDimensionality": 3},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "How do cats purr?"}]},
         "outputDimensionality": 3},
    ]}
    response = {"embeddings": [{"values": [0.1, -0.2, 0.3]}, {"values": [0.0, 0.5, -0.5]}]}
    body, estimated = gemini.embeddings_from_upstream(
        response, model="gemini-embedding-001", inputs=["What is the meaning of life?", "How do cats purr?"])
    validate("CreateEmbeddingResponse", body)
    assert [d["embedding"] for d in body["data"]] == [[0.1, -0.2, 0.3], [0.0, 0.5, -0.5]]
    assert estimated and body["usage"] == {"prompt_tokens": 7 + 5, "total_tokens": 12}


def test_single_embed_content_response_in_base64_with_reported_usage() -> None:
    body, estimated = gemini.embeddings_from_upstream(
        {"embedding": {"values": [0.5, -1.0]}, "usageMetadata": {"promptTokenCount": 3}},
        model="text-embedding-004", inputs=["hello"], encoding_format="base64")
    assert not estimated and body["usage"]["prompt_tokens"] == 3
    assert struct.unpack("<2f", base64.b64decode(body["data"][0]["embedding"])) == (0.5, -1.0)


def test_token_array_inputs_are_refused() -> None:
    with pytest.raises(gemini.UnsupportedParameter, match="'input' must be a string or an array of strings"):
        gemini.embeddings_to_upstream({"model": "m", "input": [[1, 2, 3]]}, "gemini-embedding-001")


# --------------------------------------------------------------------------- adapter ↔ emulator, without sockets


def test_adapter_and_emulator_agree_on_usage_between_stream_and_body() -> None:
    body = chat({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe a harbor."})
    _, request = gemini.to_upstream(body, "gemini-2.5-flash")
    answer = gf.plan("gemini-2.5-flash", accepted_by_gemini(request))
    whole = gemini.from_upstream(gf.response_body(answer, response_id="r1"), model="gemini-2.5-flash")
    validate("CreateChatCompletionResponse", whole)
    raw = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n"
                   for c in gf.stream_chunks(answer, response_id="r1", chunk_words=2))
    chunks, translator = translate(raw, include_usage=True)
    assert translator.usage == whole["usage"] and whole["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]


def test_emulator_rejects_what_gemini_rejects() -> None:
    bad = [
        ({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"max_tokens": 5}},
         'Unknown name "max_tokens" at \'generation_config\''),
        ({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [
            {"name": "f", "parameters": {"type": "object", "additionalProperties": False,
                                         "properties": {"a": {"type": "string"}}}}]}]},
         'Unknown name "additionalProperties" at \'tools[0].function_declarations[0].parameters\''),
        ({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [
            {"name": "f", "parameters": {"type": "OBJECT", "properties": {"d": {"type": "STRING", "format": "date"}}}}
        ]}]}, "only 'enum' and 'date-time' are supported for STRING type"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "valid role: user, model"),
        ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
    ]
    for request, message in bad:
        normalised, error = gf.validate_generate_request(request)
        assert normalised is None and error is not None and error["error"]["status"] == "INVALID_ARGUMENT"
        assert message in error["error"]["message"], error
    normalised, error = gf.validate_generate_request(
        {"contents": [{"parts": [{"text": "hi"}]}], "system_instruction": {"parts": [{"text": "x"}]},
         "generation_config": {"max_output_tokens": 5}})
    assert error is None and normalised is not None
    assert normalised["systemInstruction"] == {"parts": [{"text": "x"}]}
    assert normalised["generationConfig"] == {"maxOutputTokens": 5}


def test_json_mode_answers_json_matching_the_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    body = chat({"role": "user", "content": "A cat?"},
                response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}})
    _, request = gemini.to_upstream(body, "gemini-2.5-flash")
    answer = gf.plan("gemini-2.5-flash", accepted_by_gemini(request))
    completion = gemini.from_upstream(gf.response_body(answer, response_id="r"), model="gemini-2.5-flash")
    assert set(json.loads(completion["choices"][0]["message"]["content"])) == {"name", "age"}


def test_thinking_that_uses_the_whole_budget_ends_with_max_tokens_and_no_parts() -> None:
    _, request = gemini.to_upstream(chat({"role": "user", "content": "Think hard"}, max_tokens=5), "gemini-2.5-pro")
    body = gf.response_body(gf.plan("gemini-2.5-pro", accepted_by_gemini(request)), response_id="r")
    assert body["candidates"][0] == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
    assert "candidatesTokenCount" not in body["usageMetadata"] and body["usageMetadata"]["thoughtsTokenCount"] == 5
    completion = gemini.from_upstream(body, model="gemini-2.5-pro")
    validate("CreateChatCompletionResponse", completion)
    choice, usage = completion["choices"][0], completion["usage"]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] is None
    assert usage["completion_tokens"] == 5 == usage["completion_tokens_details"]["reasoning_tokens"]


def test_gemini_errors_are_in_the_shared_error_tree() -> None:
    message = r"'n' is not supported by model 'gemini-x' \(Google Gemini\)$"
    with pytest.raises(errors.UnsupportedParameter, match=message):
        gemini.to_upstream({"model": "gemini-x", "messages": [{"role": "user", "content": "Hi"}], "n": 2}, "g")
    with pytest.raises(errors.TranslationError) as caught:
        gemini.embeddings_to_upstream({"input": [1, 2]}, "text-embedding-004")
    assert caught.value.param == "input"
    with pytest.raises(errors.StreamBroken, match="overloaded") as broken:
        gemini.StreamTranslator(model="m", include_usage=False).feed(
            {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    assert broken.value.body["error"]["type"] == "server_error"
