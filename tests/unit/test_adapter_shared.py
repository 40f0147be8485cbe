"""The OpenAI → blocks walk Anthropic and Bedrock share: both adapters turn the same conversation into the same
turns, drop the blank text both APIs refuse, and refuse what neither can send with the same parameter named.

The two copies this replaced had drifted: Anthropic's crashed on a message that is not an object (AttributeError,
a 500) and sent whitespace-only and non-string texts that the Messages API refuses with a 400 ("text content
blocks must contain non-whitespace text"); Bedrock's already refused the first and dropped the others. Bedrock's
behaviour is the one kept.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.emulator import anthropic_format as af
from services.emulator import bedrock_format as bf
from services.proxy.adapters import anthropic, bedrock
from services.proxy.adapters.errors import TranslationError, UnsupportedParameter

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}


def both(messages: list[Any], **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Anthropic request and the Converse request for one OpenAI body; each passes its emulator's checks."""
    body = {"model": "claude-sonnet-4", "messages": messages, **extra}
    messages_api = anthropic.to_upstream(body, "claude-sonnet-4-20250514")
    _, converse = bedrock.to_upstream(body, "anthropic.claude-sonnet-4-20250514-v1:0")
    assert af.validate_request(messages_api) is None
    assert bf.validate_request(converse, "anthropic.claude-sonnet-4-20250514-v1:0") is None
    return messages_api, converse


def anthropic_texts(request: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(m["role"], [b.get("text", b["type"]) for b in m["content"]]) for m in request["messages"]]


def converse_texts(request: dict[str, Any]) -> list[tuple[str, list[str]]]:
    kinds = {"toolUse": "tool_use", "toolResult": "tool_result"}
    return [(m["role"], [b.get("text") or kinds[next(iter(b))] for b in m["content"]]) for m in request["messages"]]


def test_blank_and_whitespace_texts_are_dropped_by_both() -> None:
    messages_api, converse = both([
        {"role": "system", "content": "  \n"},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": " "}]},
        {"role": "user", "content": [{"type": "text", "text": "\t"}, {"type": "text", "text": "Weather in Paris?"},
                                     {"type": "text", "text": 42}]},
        {"role": "assistant", "content": " ", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "  "},
        {"role": "user", "content": "   "},
        {"role": "user", "content": "And Rome?"},
    ], tools=[WEATHER])
    expected = [("user", ["Weather in Paris?"]), ("assistant", ["tool_use"]), ("user", ["tool_result", "And Rome?"])]
    assert anthropic_texts(messages_api) == converse_texts(converse) == expected
    assert messages_api["system"] == [{"type": "text", "text": "Be brief."}]
    assert converse["system"] == [{"text": "Be brief."}]
    assert messages_api["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "call_1"}
    assert converse["messages"][2]["content"][0]["toolResult"]["content"] == []


def test_a_whitespace_only_text_is_what_the_anthropic_emulator_refuses_like_the_api() -> None:
    request = {"model": "claude-sonnet-4", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": " \n"}]}]}
    assert af.validate_request(request)["error"]["message"] == \
        "messages: text content blocks must contain non-whitespace text"
    request["messages"][0]["content"].append({"type": "text", "text": "Hi"})
    assert af.validate_request(request) is None
    request["system"] = "  "
    assert af.validate_request(request)["error"]["message"] == \
        "system: text content blocks must contain non-whitespace text"


@pytest.mark.parametrize("adapter", [anthropic, bedrock], ids=["anthropic", "bedrock"])
def test_a_message_that_is_not_an_object_is_refused_naming_it(adapter: Any) -> None:
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Hi"}, "hello"]}
    with pytest.raises(UnsupportedParameter, match=r"'messages\[1\]\.role' is not supported by model") as caught:
        adapter.to_upstream(body, "m")
    assert caught.value.param == "messages[1].role"


@pytest.mark.parametrize("adapter", [anthropic, bedrock], ids=["anthropic", "bedrock"])
@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "system", "content": "Only a system message."}], "messages"),
    ([{"role": "user", "content": " "}], "messages"),
    ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
    ([{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}], "messages[0].function_call"),
])
def test_both_refuse_the_same_conversations_naming_the_same_parameter(adapter: Any, messages: list[Any],
                                                                      param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        adapter.to_upstream({"model": "claude-sonnet-4", "messages": messages}, "m")
    assert caught.value.param == param


@pytest.mark.parametrize("adapter", [anthropic, bedrock], ids=["anthropic", "bedrock"])
@pytest.mark.parametrize(("message", "param"), [
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
     "messages[1].tool_calls[0]"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
    ({"role": "user", "content": 7}, "messages[1].content"),
])
def test_malformed_messages_are_translation_errors_naming_the_field(adapter: Any, message: dict[str, Any],
                                                                     param: str) -> None:
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Hi"}, message]}
    with pytest.raises(TranslationError) as caught:
        adapter.to_upstream(body, "m")
    assert caught.value.param == param
