"""Bedrock adapter: Converse translation both ways, the event-stream framing, errors and SigV4 signing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator
from yarl import URL

from catalog.schema import Capabilities
from services.common.settings import Secret
from services.emulator import bedrock_format as bf
from services.proxy.adapters import bedrock as ad
from services.proxy.adapters.bedrock import BedrockDialect
from services.proxy.adapters.errors import StreamBroken
from services.proxy.adapters.shared import JSON_OBJECT_INSTRUCTION
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target
from tests.openapi import validate

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
"""The example secret access key of AWS's documentation."""
SONG = "{\"song\": \"Elemental Hotel\", \"artist\": \"8 Storey Hike\"}"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
CLAUDE_CAPS = Capabilities(tool_result_status=True, forced_tool=True)
"""What the catalog says of Claude 3.5 Haiku on Bedrock (toolResult.status and a forced tool accepted)."""
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0"
TOP_SONG: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "top_song",
        "description": "Get the most popular song played on a radio station.",
        "parameters": {
            "type": "object",
            "properties": {"sign": {"type": "string", "description": "The call sign for the radio station for which "
                                    "you want the most popular song. Example calls signs are WZPZ and WKRP."}},
            "required": ["sign"],
        },
    },
}
# The Bedrock user guide's tool-use walk-through ("Call a tool with the Converse API"), steps 2 and 4;
# usage and metrics added in the documented TokenUsage / ConverseMetrics shapes.
DOC_TOOL_USE: dict[str, Any] = {
    "output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}},
    ]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 375, "outputTokens": 54, "totalTokens": 429},
    "metrics": {"latencyMs": 1210},
}
DOC_ANSWER: dict[str, Any] = {
    "output": {"message": {"role": "assistant", "content": [
        {"text": "The most popular song on WZPZ is Elemental Hotel by 8 Storey Hike."},
    ]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 4, "outputTokens": 20, "totalTokens": 11113, "cacheReadInputTokens": 11089,
              "cacheWriteInputTokens": 0},
    "metrics": {"latencyMs": 698},
}
# A ConverseStream answer with text then a tool call, event by event as boto3 yields them (no `p` padding).
TOOL_STREAM: list[tuple[str, dict[str, Any]]] = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"delta": {"text": "Let me look that up"}, "contentBlockIndex": 0}),
    ("contentBlockDelta", {"delta": {"text": " for you."}, "contentBlockIndex": 0}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockStart", {"start": {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song"}},
                           "contentBlockIndex": 1}),
    ("contentBlockDelta", {"delta": {"toolUse": {"input": "{\"sign\": \"WZ"}}, "contentBlockIndex": 1}),
    ("contentBlockDelta", {"delta": {"toolUse": {"input": "PZ\"}"}}, "contentBlockIndex": 1}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 375, "outputTokens": 54, "totalTokens": 429},
                  "metrics": {"latencyMs": 1210}}),
]
CONVERSE_INPUT = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "What is the most popular song on "
                                                                                "WZPZ?"}], **extra}


def assert_valid_converse(body: dict[str, Any], model_id: str = CLAUDE) -> None:
    """The body passes botocore's validation against Bedrock's own service model (types, required, enums)."""
    report = ParamValidator().validate({"modelId": model_id, **body}, CONVERSE_INPUT.input_shape)
    assert not report.has_errors(), report.generate_report()


def translate(events: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> tuple[list[dict[str, Any]],
                                                                                ad.StreamTranslator]:
    translator = ad.StreamTranslator(model="claude-sonnet-4", created=1, **kwargs)
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks, translator


# --------------------------------------------------------------------------- request


def test_a_whole_conversation_becomes_a_valid_converse_request() -> None:
    body = chat(messages=[
        {"role": "system", "content": "You are a radio host."},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is the most popular song on WZPZ?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
             "function": {"name": "top_song", "arguments": "{\"sign\": \"WZPZ\"}"}}]},
        {"role": "tool", "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
         "content": SONG},
    ], tools=[TOP_SONG], tool_choice={"type": "function", "function": {"name": "top_song"}}, temperature=0.5,
        top_p=0.9, max_completion_tokens=512, stop="END", user="u-1", parallel_tool_calls=True)
    path, converse = ad.to_upstream(body, CLAUDE, capabilities=CLAUDE_CAPS)
    assert path == "model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert converse == {
        "messages": [
            {"role": "user", "content": [
                {"text": "What is the most popular song on WZPZ?"},
                {"image": {"format": "png", "source": {"bytes": PNG}}}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song",
                             "input": {"sign": "WZPZ"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "status": "success",
                                "content": [{"text": SONG}]}}]},
        ],
        "system": [{"text": "You are a radio host."}, {"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "top_song", "description": TOP_SONG["function"]["description"],
                                               "inputSchema": {"json": TOP_SONG["function"]["parameters"]}}}],
                       "toolChoice": {"tool": {"name": "top_song"}}},
    }
    assert_valid_converse(converse)
    assert bf.validate_request(converse) is None


def test_streaming_path_and_model_ids_are_encoded_as_boto3_encodes_them() -> None:
    path, converse = ad.to_upstream(chat(stream=True, stream_options={"include_usage": True}), PROFILE_ARN)
    assert path == ("model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic."
                    "claude-sonnet-4-20250514-v1%3A0/converse-stream")
    assert converse == {"messages": [{"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]}]}
    assert boto3_request(PROFILE_ARN, converse, stream=True).url.endswith("/" + path)


@pytest.mark.parametrize(("choice", "expected"), [
    (None, None), ("auto", None), ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "top_song"}}, {"tool": {"name": "top_song"}}),
])
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    _, converse = ad.to_upstream(chat(tools=[TOP_SONG], tool_choice=choice), CLAUDE, capabilities=CLAUDE_CAPS)
    assert converse["toolConfig"].get("toolChoice") == expected  # auto is the default: not sent
    assert_valid_converse(converse)


def test_a_named_tool_is_forced_only_for_models_whose_capabilities_allow_it() -> None:
    named = {"type": "function", "function": {"name": "top_song"}}
    _, converse = ad.to_upstream(chat(tools=[TOP_SONG]), LLAMA)
    assert bf.validate_request(converse, LLAMA) is None
    with pytest.raises(ad.UnsupportedParameter, match="'tool_choice' is not supported by model 'claude-sonnet-4'"):
        ad.to_upstream(chat(tools=[TOP_SONG], tool_choice=named), f"us.{LLAMA}")
    _, forced = ad.to_upstream(chat(tools=[TOP_SONG], tool_choice=named), CLAUDE, capabilities=CLAUDE_CAPS)
    assert forced["toolConfig"]["toolChoice"] == {"tool": {"name": "top_song"}}


def test_a_blank_tool_result_is_sent_without_content_blocks() -> None:
    _, converse = ad.to_upstream(chat(tools=[TOP_SONG], messages=[
        {"role": "user", "content": "Top song?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "top_song", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": ""}]), CLAUDE, capabilities=CLAUDE_CAPS)
    assert converse["messages"][2]["content"] == [{"toolResult": {"toolUseId": "call_1", "content": [],
                                                                  "status": "success"}}]
    assert bf.validate_request(converse) is None


def test_tool_choice_none_drops_the_tools_unless_the_conversation_used_them() -> None:
    _, converse = ad.to_upstream(chat(tools=[TOP_SONG], tool_choice="none"), CLAUDE)
    assert "toolConfig" not in converse
    used = chat(tools=[TOP_SONG], tool_choice="none", messages=[
        {"role": "user", "content": "Top song on WZPZ?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "top_song", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Elemental Hotel"}])
    with pytest.raises(ad.UnsupportedParameter, match="'tool_choice' is not supported by model 'claude-sonnet-4'"):
        ad.to_upstream(used, CLAUDE)


def test_consecutive_turns_merge_and_blank_text_and_odd_ids_are_made_valid() -> None:
    _, converse = ad.to_upstream(chat(messages=[
        {"role": "user", "content": "First."}, {"role": "user", "content": "  "},
        {"role": "user", "content": "Second."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call/α 1", "type": "function", "function": {"name": "top_song", "arguments": ""}},
            {"id": "call_2", "type": "function",
             "function": {"name": "top_song", "arguments": "{\"sign\":\"WKRP\"}"}}]},
        {"role": "tool", "tool_call_id": "call/α 1", "content": "A"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "B"}]},
    ], tools=[TOP_SONG]), CLAUDE)
    assert [m["role"] for m in converse["messages"]] == ["user", "assistant", "user"]
    assert converse["messages"][0]["content"] == [{"text": "First."}, {"text": "Second."}]
    uses = [b["toolUse"]["toolUseId"] for b in converse["messages"][1]["content"]]
    results = [b["toolResult"]["toolUseId"] for b in converse["messages"][2]["content"]]
    assert uses == results == ["call___1", "call_2"]
    assert_valid_converse(converse)
    assert bf.validate_request(converse) is None


def test_json_mode_adds_an_instruction_and_pdfs_become_documents() -> None:
    _, converse = ad.to_upstream(chat(response_format={"type": "json_object"}, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "Summarise"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}}]}]),
        CLAUDE)
    assert converse["system"] == [{"text": JSON_OBJECT_INSTRUCTION}]
    assert converse["messages"][0]["content"][1] == {"document": {"format": "pdf", "name": "document 2",
                                                                  "source": {"bytes": "JVBERi0x"}}}
    assert_valid_converse(converse)


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"seed": 7}, "seed"), ({"logprobs": True}, "logprobs"), ({"presence_penalty": 0.5},
                                                                                 "presence_penalty"),
    ({"reasoning_effort": "high"}, "reasoning_effort"), ({"temperature": 1.5}, "temperature"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0].type"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
])
def test_what_converse_cannot_express_is_refused_naming_the_parameter(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ad.UnsupportedParameter) as raised:
        ad.to_upstream(chat(**extra), CLAUDE)
    assert raised.value.param == param and "claude-sonnet-4" in raised.value.message


def test_neutral_values_pass() -> None:
    _, converse = ad.to_upstream(chat(n=1, logprobs=False, presence_penalty=0, frequency_penalty=0, seed=None,
                                      response_format={"type": "text"}, metadata={"a": "b"}, store=False), CLAUDE)
    assert set(converse) == {"messages"}


# --------------------------------------------------------------------------- response


def test_documented_tool_use_response_becomes_tool_calls() -> None:
    completion = ad.from_upstream(DOC_TOOL_USE, model="claude-sonnet-4", created=1, response_id="chatcmpl-1")
    validate("CreateChatCompletionResponse", completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                                                "function": {"name": "top_song", "arguments": "{\"sign\":\"WZPZ\"}"}}]
    assert completion["usage"]["prompt_tokens"] == 375 and completion["usage"]["total_tokens"] == 429


def test_text_response_with_cache_reads_counts_them_as_prompt_and_cached() -> None:
    completion = ad.from_upstream(DOC_ANSWER, model="claude-sonnet-4")
    validate("CreateChatCompletionResponse", completion)
    assert completion["choices"][0]["message"]["content"].startswith("The most popular song")
    assert completion["choices"][0]["finish_reason"] == "stop"
    usage = completion["usage"]
    assert usage["prompt_tokens"] == 11093 and usage["prompt_tokens_details"]["cached_tokens"] == 11089
    assert usage["total_tokens"] == DOC_ANSWER["usage"]["totalTokens"]


@pytest.mark.parametrize(("reason", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("model_context_window_exceeded", "length"), (None, "stop"),
])
def test_stop_reasons(reason: str | None, expected: str) -> None:
    assert ad.finish_reason(reason) == expected


# --------------------------------------------------------------------------- stream


def test_stream_with_text_then_a_tool_call_becomes_openai_chunks_with_usage_last() -> None:
    chunks, translator = translate(TOOL_STREAM, include_usage=True)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Let me look that up for you."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                        "function": {"name": "top_song", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == "{\"sign\": \"WZPZ\"}"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 54
    assert translator.finished and translator.done and translator.usage == chunks[-1]["usage"]


def test_without_include_usage_no_usage_chunk_but_usage_is_kept() -> None:
    chunks, translator = translate(TOOL_STREAM, include_usage=False)
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage is not None and translator.usage["prompt_tokens"] == 375


def test_emulator_stream_equals_its_body_after_translation() -> None:
    converse = ad.to_upstream(chat(), CLAUDE)[1]
    answer = bf.plan(CLAUDE, converse)
    body = ad.from_upstream(bf.response_body(answer, latency_ms=5), model="m")
    chunks, _ = translate(list(bf.stream_events(answer, latency_ms=5, chunk_words=2)), include_usage=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == body["choices"][0]["message"]["content"] and chunks[-1]["usage"] == body["usage"]


# --------------------------------------------------------------------------- the emulator's frames, read by boto3


def boto3_client() -> Any:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET, region_name="us-east-1")
    return session.client("bedrock-runtime")


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        for i in range(0, len(self._data), 11):
            yield self._data[i : i + 11]

    def close(self) -> None:
        pass


def test_boto3_parses_emulator_frames_into_the_documented_events() -> None:
    answer = bf.plan(CLAUDE, {"messages": [{"role": "user", "content": [{"text": "Top song?"}]}],
                              "toolConfig": {"tools": [{"toolSpec": {"name": "top_song", "inputSchema": {
                                  "json": TOP_SONG["function"]["parameters"]}}}]}})
    frames = [bf.encode_event(name, data, i) for i, (name, data) in enumerate(bf.stream_events(answer, latency_ms=3))]
    client = boto3_client()
    client.meta.events.register("before-send", lambda request, **_: AWSResponse(
        request.url, 200, {"content-type": bf.EVENT_STREAM_TYPE}, _Raw(b"".join(frames))))
    events = list(client.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])
                  ["stream"])
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockStart", *["contentBlockDelta"] * (
        len(events) - 5), "contentBlockStop", "messageStop", "metadata"]
    assert events[1]["contentBlockStart"]["start"]["toolUse"]["name"] == "top_song"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == answer.output_tokens
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "error_type", "kind", "code", "proxy_status"), [
    (400, "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/", "invalid_request_error", None,
     400),
    (403, "AccessDeniedException", "permission_error", "permission_denied", 403),
    (403, "UnrecognizedClientException", "authentication_error", "invalid_api_key", 401),
    (429, "ThrottlingException", "rate_limit_error", "rate_limit_exceeded", 429),
    (429, "ModelNotReadyException", "server_error", "model_not_ready", 503),
    (408, "ModelTimeoutException", "server_error", "timeout", 504),
    (424, None, "server_error", "model_error", 502),
    (500, None, "server_error", "internal_error", 500),
    (503, "ServiceUnavailableException", "server_error", "overloaded", 503),
    (0, "throttlingException", "rate_limit_error", "rate_limit_exceeded", 429),
])
def test_errors_become_openai_errors(status: int, error_type: str | None, kind: str, code: str | None,
                                     proxy_status: int) -> None:
    body = ad.error_to_openai(status, b'{"message":"Too many requests, please wait."}', error_type)
    assert body == {"error": {"message": "Too many requests, please wait.", "type": kind, "param": None, "code": code}}
    assert ad.openai_status(status, error_type) == proxy_status


def test_an_unreadable_error_body_still_names_the_exception() -> None:
    body = ad.error_to_openai(502, b"<html>Bad Gateway</html>")
    assert body["error"]["message"] == "AWS Bedrock returned HTTP 502 (InternalServerException)"


def test_boto3_reads_emulator_errors_as_the_named_exception() -> None:
    name, message = bf.status_error(429)
    client = boto3_client()
    client.meta.events.register("before-send", lambda request, **_: AWSResponse(
        request.url, 429, {"x-amzn-ErrorType": bf.error_type_header(name)}, _Raw(json.dumps({"message": message})
                                                                                 .encode())))
    with pytest.raises(ClientError, match=r"ThrottlingException.*Too many requests") as raised:
        client.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


# --------------------------------------------------------------------------- SigV4


def reference_signature(method: str, url: str, headers: dict[str, str], body: bytes, secret: str) -> str:
    """SigV4 written out from AWS's documentation, independent of botocore: the signature `headers` should carry."""
    credential, signed_names = re.findall(r"Credential=([^,]+), SignedHeaders=([^,]+),", headers["Authorization"])[0]
    _, date, region, service, _ = credential.split("/")
    lower = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    lower["host"] = urlsplit(url).netloc
    canonical = "\n".join([method, quote(urlsplit(url).path, safe="/~"), urlsplit(url).query,
                           "".join(f"{name}:{lower[name]}\n" for name in signed_names.split(";")), signed_names,
                           hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["AWS4-HMAC-SHA256", lower["x-amz-date"], scope, digest])
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def boto3_request(model_id: str, converse: dict[str, Any], *, stream: bool = False) -> AWSRequest:
    """The request boto3 itself prepares (signed) for this Converse call; nothing is sent."""
    seen: list[AWSRequest] = []

    def capture(request: AWSRequest, **_: Any) -> AWSResponse:
        seen.append(request)
        return AWSResponse(request.url, 400, {"x-amzn-ErrorType": "ValidationException"}, _Raw(b'{"message":"x"}'))

    client = boto3_client()
    client.meta.events.register("before-send", capture)
    with pytest.raises(ClientError):
        (client.converse_stream if stream else client.converse)(modelId=model_id, **converse)
    return seen[0]


def test_the_reference_signature_agrees_with_boto3_itself() -> None:
    _, converse = ad.to_upstream(chat(), PROFILE_ARN)
    request = boto3_request(PROFILE_ARN, converse)
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    assert reference_signature("POST", request.url, headers, request.body,
                               SECRET) == signature
    assert "/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date," in headers["Authorization"]


def test_sign_produces_what_boto3_would_for_the_same_call() -> None:
    path, converse = ad.to_upstream(chat(), PROFILE_ARN)
    url = f"https://bedrock-runtime.us-east-1.amazonaws.com/{path}"
    body = json.dumps(converse).encode()
    ours = ad.sign("POST", url, {"Content-Type": "application/json"}, body, access_key="AKIDEXAMPLE",
                   secret_key=SECRET, region="us-east-1")
    theirs = boto3_request(PROFILE_ARN, converse)
    assert theirs.url == url
    assert set(ours) == {"Content-Type", "X-Amz-Date", "Authorization"}
    pattern = (r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-east-1/bedrock/aws4_request, "
               r"SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}")
    assert re.fullmatch(pattern, ours["Authorization"]) and re.fullmatch(pattern, theirs.headers["Authorization"]
                                                                         .decode())
    assert reference_signature("POST", url, ours, body, SECRET) == \
        ours["Authorization"].rsplit("Signature=", 1)[1]


def test_a_session_token_is_sent_and_signed() -> None:
    headers = ad.sign("POST", "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse", {}, b"{}",
                      access_key="ASIAEXAMPLE", secret_key="s", region="eu-west-1", session_token="FwoGZXIvYXdzEJr")
    assert headers["X-Amz-Security-Token"] == "FwoGZXIvYXdzEJr"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["Authorization"]
    assert reference_signature("POST", "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse", headers,
                               b"{}", "s") == headers["Authorization"].rsplit("Signature=", 1)[1]


# --------------------------------------------------------------------------- the dialect


def target(base_url: str = "https://bedrock-runtime.eu-central-1.amazonaws.com") -> Target:
    return Target("bedrock", base_url, Secret("AKIDEXAMPLE"), "bedrock", emulated=False)


def test_dialect_signs_the_url_aiohttp_will_send_with_the_region_of_the_endpoint() -> None:
    dialect = BedrockDialect(secret_key="secret", region="us-east-1", session_token=None)
    call = dialect.request(target(), chat(stream=True), PROFILE_ARN)
    assert str(URL(call.url)) == call.url  # yarl keeps it as is, so the signed path is the path on the wire
    assert call.url.startswith("https://bedrock-runtime.eu-central-1.amazonaws.com/model/arn:aws:bedrock:us-east-1:")
    assert "%2Fus.anthropic" in call.url and call.url.endswith("/converse-stream")
    assert "/eu-central-1/bedrock/aws4_request" in call.headers["Authorization"]
    assert reference_signature("POST", call.url, call.headers, call.body, "secret") == \
        call.headers["Authorization"].rsplit("Signature=", 1)[1]
    other = dialect.request(target("http://127.0.0.1:8090"), chat(), CLAUDE)
    assert "/us-east-1/bedrock/aws4_request" in other.headers["Authorization"]


def test_dialect_refuses_untranslatable_requests_as_invalid_requests() -> None:
    dialect = BedrockDialect(secret_key="secret", region="us-east-1", session_token=None)
    with pytest.raises(InvalidRequest, match="'seed' is not supported"):
        dialect.request(target(), chat(seed=1), CLAUDE)


def test_dialect_stream_turns_frames_into_sse_and_exceptions_into_stream_broken() -> None:
    decoder = BedrockDialect(secret_key="s", region="us-east-1", session_token=None).stream(model="claude-sonnet-4")
    frames = b"".join(bf.encode_event(name, data, i) for i, (name, data) in enumerate(TOOL_STREAM))
    buffer, events = bytearray(), []
    for i in range(0, len(frames), 50):
        buffer += frames[i : i + 50]
        events += decoder.events(buffer)
    assert events[-1] == b"data: [DONE]\n\n" and decoder.close() == []
    assert json.loads(events[-2][6:])["usage"]["total_tokens"] == 429
    broken = BedrockDialect(secret_key="s", region="us-east-1", session_token=None).stream(model="m")
    cut = bytearray(bf.encode_event("messageStart", {"role": "assistant"}) + bf.encode_exception(
        "throttlingException", "Too many tokens, please wait before trying again."))
    with pytest.raises(StreamBroken) as raised:
        broken.events(cut)
    assert raised.value.body["error"]["code"] == "rate_limit_exceeded"
    corrupt = bytearray(bf.encode_event("messageStart", {"role": "assistant"}))
    corrupt[-1] ^= 0xFF
    with pytest.raises(StreamBroken, match="corrupt"):
        BedrockDialect(secret_key="s", region="us-east-1", session_token=None).stream(model="m").events(corrupt)


def test_dialect_errors_use_the_error_type_header_when_given() -> None:
    dialect = BedrockDialect(secret_key="s", region="us-east-1", session_token=None)
    raw = b'{"message":"Model is not ready, try again later."}'
    assert dialect.error(429, raw)[1]["error"]["code"] == "rate_limit_exceeded"
    status, body = dialect.error(429, raw, {"x-amzn-ErrorType": "ModelNotReadyException:http://internal"})
    assert status == 503 and body["error"]["code"] == "model_not_ready"
