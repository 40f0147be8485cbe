"""services/proxy/openai_request.check_chat is exactly as strict as OpenAI's OpenAPI description: each body
below is judged the same way by the proxy and by the spec (tests/openapi.py), and refusals name the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from services.emulator.openai_validate import OpenAIValidator
from services.proxy import embeddings
from services.proxy import openai_wire as wire
from services.proxy.errors import InvalidRequest
from tests.openapi import SPEC_PATH

BASE: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
UNTYPED_CALL = {"id": "call_1", "function": CALL["function"]}


@pytest.fixture(scope="module")
def spec() -> OpenAIValidator:
    return OpenAIValidator(SPEC_PATH)


def body_with(**fields: Any) -> dict[str, Any]:
    return {**copy.deepcopy(BASE), **fields}


def history(*messages: dict[str, Any]) -> dict[str, Any]:
    return body_with(messages=[{"role": "user", "content": "hi"}, *messages])


# Each a body OpenAI's spec refuses, and the param the proxy's 400 names.
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # null where the spec does not allow it
    *[(f"{name}_null", body_with(**{name: None}), name) for name in (
        "user", "tool_choice", "parallel_tool_calls", "top_logprobs", "response_format", "functions", "tools",
        "function_call", "web_search_options")],
    ("name_null", body_with(messages=[{"role": "user", "content": "hi", "name": None}]), "messages[0].name"),
    ("tool_calls_null", history({"role": "assistant", "content": "x", "tool_calls": None}), "messages[1].tool_calls"),
    # content by role
    ("role_array", body_with(messages=[{"role": [None], "content": "A"}]), "messages[0].role"),
    ("role_object", body_with(messages=[{"role": {}, "content": "A"}]), "messages[0].role"),
    ("user_content_null", body_with(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    ("user_content_missing", body_with(messages=[{"role": "user"}]), "messages[0].content"),
    ("user_content_empty", body_with(messages=[{"role": "user", "content": []}]), "messages[0].content"),
    ("system_content_null", body_with(messages=[{"role": "system", "content": None}]), "messages[0].content"),
    ("tool_without_content", history({"role": "tool", "tool_call_id": "c"}), "messages[1].content"),
    ("tool_without_id", history({"role": "tool", "content": "15 C"}), "messages[1].tool_call_id"),
    ("function_without_name", history({"role": "function", "content": "x"}), "messages[1].name"),
    ("function_without_content", history({"role": "function", "name": "f"}), "messages[1].content"),
    ("system_image_part", body_with(messages=[{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]), "messages[0].content[0].type"),
    # content parts
    ("unknown_part_type", body_with(messages=[{"role": "user", "content": [{"type": "video", "text": "x"}]}]),
     "messages[0].content[0].type"),
    ("part_without_type", body_with(messages=[{"role": "user", "content": [{"text": "x"}]}]),
     "messages[0].content[0].type"),
    ("image_without_url", body_with(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     "messages[0].content[0].image_url.url"),
    ("image_url_string", body_with(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": "https://x/y.png"}]}]), "messages[0].content[0].image_url"),
    ("image_detail", body_with(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]}]),
     "messages[0].content[0].image_url.detail"),
    ("audio_format", body_with(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}]}]),
     "messages[0].content[0].input_audio.format"),
    ("refusal_part_in_user", body_with(messages=[{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]),
     "messages[0].content[0].type"),
    ("text_part_text_null", body_with(messages=[{"role": "user", "content": [{"type": "text", "text": None}]}]),
     "messages[0].content[0].text"),
    # tool calls and tools
    ("call_without_type", history({"role": "assistant", "tool_calls": [UNTYPED_CALL]}),
     "messages[1].tool_calls[0].type"),
    ("call_without_id", history({"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}),
     "messages[1].tool_calls[0].id"),
    ("call_arguments_object", history({"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {}}}]}), "messages[1].tool_calls[0].function.arguments"),
    ("assistant_function_call_half", history({"role": "assistant", "function_call": {"name": "f"}}),
     "messages[1].function_call.arguments"),
    ("tool_without_function", body_with(tools=[{"type": "function"}]), "tools[0].function"),
    ("tool_without_name", body_with(tools=[{"type": "function", "function": {"parameters": {}}}]),
     "tools[0].function.name"),
    ("tool_without_type", body_with(tools=[{"function": {"name": "f"}}]), "tools[0].type"),
    ("tool_parameters_array", body_with(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].function.parameters"),
    ("tool_strict_number", body_with(tools=[{"type": "function", "function": {"name": "f", "strict": 1}}]),
     "tools[0].function.strict"),
    ("tool_description_null", body_with(tools=[{"type": "function", "function": {"name": "f", "description": None}}]),
     "tools[0].function.description"),
    ("plain_message_role", body_with(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    ("tool_choice_unknown", body_with(tool_choice="any"), "tool_choice"),
    ("tool_choice_no_name", body_with(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
    ("functions_empty", body_with(functions=[]), "functions"),
    ("functions_no_name", body_with(functions=[{"description": "d"}]), "functions[0].name"),
    ("function_call_mode", body_with(function_call="required"), "function_call"),
    ("function_call_no_name", body_with(function_call={}), "function_call.name"),
    # documented optional parameters with the wrong shape
    ("json_schema_without_name", body_with(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     "response_format.json_schema.name"),
    ("json_schema_missing", body_with(response_format={"type": "json_schema"}), "response_format.json_schema"),
    ("response_format_type", body_with(response_format={"type": "yaml"}), "response_format.type"),
    ("prediction_type", body_with(prediction={"type": "text", "content": "x"}), "prediction.type"),
    ("prediction_empty", body_with(prediction={"type": "content", "content": []}), "prediction.content"),
    ("audio_without_voice", body_with(audio={"format": "mp3"}), "audio.voice"),
    ("audio_format_bad", body_with(audio={"voice": "alloy", "format": "ogg"}), "audio.format"),
    ("modalities_string", body_with(modalities="text"), "modalities"),
    ("modalities_value", body_with(modalities=["image"]), "modalities[0]"),
    ("logit_bias_string", body_with(logit_bias={"50256": "-100"}), "logit_bias.50256"),
    ("logit_bias_list", body_with(logit_bias=[1]), "logit_bias"),
    ("metadata_number", body_with(metadata={"k": 1}), "metadata.k"),
    ("reasoning_effort_value", body_with(reasoning_effort="extreme"), "reasoning_effort"),
    ("verbosity_value", body_with(verbosity="loud"), "verbosity"),
    ("service_tier_value", body_with(service_tier="gold"), "service_tier"),
    ("top_logprobs_over", body_with(top_logprobs=21), "top_logprobs"),
    ("n_zero", body_with(n=0), "n"),
    ("n_over", body_with(n=129), "n"),
    ("stop_empty", body_with(stop=[]), "stop"),
    ("stop_five", body_with(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stream_options_usage", body_with(stream=True, stream_options={"include_usage": "yes"}),
     "stream_options.include_usage"),
    ("web_search_size", body_with(web_search_options={"search_context_size": "huge"}),
     "web_search_options.search_context_size"),
    ("safety_identifier_long", body_with(safety_identifier="x" * 65), "safety_identifier"),
    # unknown top-level arguments ("Unrecognized request argument supplied")
    ("dimensions", body_with(dimensions=256), "dimensions"),
    ("top_k", body_with(top_k=5), "top_k"),
]


@pytest.mark.parametrize(("body", "param"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_what_the_spec_refuses_the_proxy_refuses_naming_the_field(spec: OpenAIValidator, body: dict[str, Any],
                                                                   param: str) -> None:
    assert spec.chat(body) is not None, "the case must be one OpenAI's spec refuses"
    with pytest.raises(InvalidRequest) as caught:
        wire.check_chat(body)
    error = caught.value
    assert (error.status, error.type, error.code) == (400, "invalid_request_error", "invalid_request")
    assert error.param == param


def test_an_unknown_argument_is_worded_as_openai_words_it() -> None:
    with pytest.raises(InvalidRequest, match="^Unrecognized request argument supplied: dimensions$"):
        wire.check_chat(body_with(dimensions=256))


# Bodies the spec accepts at the edges of what it allows: the proxy must take every one.
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("nullable_parameters_null", body_with(**{name: None for name in (
        "temperature", "top_p", "n", "seed", "stop", "logit_bias", "logprobs", "max_tokens", "max_completion_tokens",
        "presence_penalty", "frequency_penalty", "metadata", "reasoning_effort", "verbosity", "service_tier",
        "modalities", "audio", "prediction", "store", "stream", "stream_options", "safety_identifier",
        "prompt_cache_key", "prompt_cache_retention")})),
    ("every_role", history(
        {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None, "audio": None, "name": "bot"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "15 C"}]},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": None},
        {"role": "developer", "content": [{"type": "text", "text": "d"}], "name": "dev"},
        {"role": "assistant", "content": [{"type": "text", "text": "t"}, {"type": "refusal", "refusal": "r"}]},
        {"role": "assistant", "content": "", "tool_calls": []},
        {"role": "assistant", "tool_calls": [{"id": "c2", "type": "custom", "custom": {"name": "g", "input": "x"}}]},
        {"role": "user", "content": ""})),
    ("user_parts", body_with(messages=[{"role": "user", "name": "u", "content": [
        {"type": "text", "text": "look", "prompt_cache_breakpoint": {"mode": "explicit"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}}, {"type": "file", "file": {}}]}])),
    ("extra_keys_in_messages_and_calls", history(
        {"role": "assistant", "tool_calls": [{**CALL, "extra_content": {"google": {"thought_signature": "s"}}}],
         "reasoning": "x"})),
    ("tools_and_choices", body_with(tools=[TOOL, {"type": "custom", "custom": {
        "name": "sql", "description": "d", "format": {"type": "grammar", "grammar": {
            "definition": "start: x", "syntax": "lark"}}}}], tool_choice={"type": "allowed_tools", "allowed_tools": {
                "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
        parallel_tool_calls=False)),
    ("named_choices", body_with(tools=[], tool_choice={"type": "custom", "custom": {"name": "sql"}})),
    ("function_era", body_with(functions=[{"name": "f", "description": "d", "parameters": {}}],
                               function_call={"name": "f"})),
    ("formats", body_with(response_format={"type": "json_schema", "json_schema": {
        "name": "w", "description": "d", "schema": {"type": "object"}, "strict": None}})),
    ("prediction_and_audio", body_with(prediction={"type": "content", "content": [{"type": "text", "text": "x"}]},
                                       audio={"voice": {"id": "voice_1"}, "format": "pcm16"},
                                       modalities=["text", "audio"])),
    ("values_at_their_bounds", body_with(top_logprobs=20, logprobs=True, n=128, seed=-(2**63), temperature=2,
                                         top_p=0, stop="END", logit_bias={"50256": -100}, metadata={"k": "v"},
                                         reasoning_effort="xhigh", verbosity="low", service_tier="flex",
                                         user="u", safety_identifier="x" * 64, store=True,
                                         web_search_options={"user_location": None, "search_context_size": "low"},
                                         prompt_cache_options={"ttl": "30m", "mode": "implicit"},
                                         moderation={"model": "omni", "policy": {"input": {"mode": "block"}}})),
    ("stream", body_with(stream=True, stream_options={"include_usage": True, "include_obfuscation": False},
                         stop=["a", "b", "c", "d"])),
]


@pytest.mark.parametrize("body", [case[1] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_what_the_spec_accepts_the_proxy_accepts(spec: OpenAIValidator, body: dict[str, Any]) -> None:
    assert spec.chat(body) is None
    assert wire.check_chat(body) is body


@pytest.mark.parametrize(("body", "param"), [
    (body_with(max_tokens=0), "max_tokens"), (body_with(max_completion_tokens=-1), "max_completion_tokens"),
    (body_with(stream_options={"include_usage": True}), "stream_options"), (body_with(model=""), "model"),
])
def test_deliberately_stricter_than_the_spec_as_the_api_is(body: dict[str, Any], param: str) -> None:
    """What the schema leaves open but the API itself refuses (documented in openai_request's docstring)."""
    with pytest.raises(InvalidRequest) as caught:
        wire.check_chat(body)
    assert caught.value.param == param


EMBEDDING = {"model": "text-embedding-3-small", "input": "hello"}


@pytest.mark.parametrize(("body", "param"), [
    ({**EMBEDDING, "dimensions": None}, "dimensions"), ({**EMBEDDING, "encoding_format": None}, "encoding_format"),
    ({**EMBEDDING, "user": None}, "user"), ({**EMBEDDING, "user": 7}, "user"),
    ({**EMBEDDING, "messages": []}, "messages"), ({**EMBEDDING, "task_type": "RETRIEVAL_QUERY"}, "task_type"),
])
def test_embedding_bodies_the_spec_refuses_are_refused(spec: OpenAIValidator, body: dict[str, Any],
                                                        param: str) -> None:
    assert spec.embedding(body) is not None
    with pytest.raises(InvalidRequest) as caught:
        embeddings.parse_body(json.dumps(body).encode())
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize("body", [
    EMBEDDING, {**EMBEDDING, "input": [[1, 2], [3]], "encoding_format": "base64", "dimensions": 256, "user": "u-1"},
])
def test_embedding_bodies_the_spec_accepts_pass(spec: OpenAIValidator, body: dict[str, Any]) -> None:
    assert spec.embedding(body) is None
    assert embeddings.parse_body(json.dumps(body).encode()) == body
