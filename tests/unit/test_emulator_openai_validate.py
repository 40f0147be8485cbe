"""The emulator refuses OpenAI bodies that OpenAI's own OpenAPI description refuses, in OpenAI's 400 shape;
without the description and with validation on, it does not start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.common.settings import SettingsError
from services.emulator import openapi_spec
from services.emulator.openai_validate import OpenAIValidator, declared_properties, param_of
from services.emulator.settings import load
from tests.openapi import SPEC_PATH, validate

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def validator() -> OpenAIValidator:
    return OpenAIValidator(SPEC_PATH)


@pytest.mark.parametrize("body", [
    CHAT,
    {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "max_tokens": 9},
    {**CHAT, "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
    {**CHAT, "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]},
    {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
     "tool_choice": {"type": "function", "function": {"name": "f"}}, "reasoning_effort": "low",
     "response_format": {"type": "json_object"}, "seed": 1, "user": "u", "metadata": {"k": "v"}},
])
def test_bodies_the_spec_accepts_pass(validator: OpenAIValidator, body: dict[str, Any]) -> None:
    assert validator.chat(body) is None


@pytest.mark.parametrize(("body", "param", "code"), [
    ({**CHAT, "top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id",
     "missing_required_parameter"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
     "messages[0].content[0].text", "invalid_type"),
    ({**CHAT, "tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
    ({**CHAT, "stop": [1]}, "stop[0]", "invalid_type"),
    ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format.json_schema",
     "missing_required_parameter"),
    ({**CHAT, "n": "2"}, "n", "invalid_type"),
])
def test_bodies_the_spec_refuses_get_openais_400(
    validator: OpenAIValidator, body: dict[str, Any], param: str, code: str
) -> None:
    error = validator.chat(body)
    assert error is not None
    validate("ErrorResponse", error)
    assert error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["param"], error["error"]["code"]) == (param, code)
    assert "'hi'" not in error["error"]["message"], "the refusal names the field, it does not echo the body"


def test_unknown_arguments_are_refused_but_azure_extensions_only_on_azure(validator: OpenAIValidator) -> None:
    error = validator.chat({**CHAT, "max_tokenz": 5})
    assert error is not None and error["error"]["message"] == "Unrecognized request argument supplied: max_tokenz"
    assert validator.chat({**CHAT, "data_sources": []}) is not None
    assert validator.chat({**CHAT, "data_sources": []}, azure=True) is None


def test_embedding_bodies(validator: OpenAIValidator) -> None:
    assert validator.embedding({"model": "text-embedding-3-small", "input": ["a"], "dimensions": 8}) is None
    error = validator.embedding({"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"})
    assert error is not None and error["error"]["param"] == "encoding_format"


def test_declared_properties_follow_all_of_and_refs() -> None:
    names = declared_properties(SPEC_PATH, "CreateChatCompletionRequest")
    assert {"messages", "model", "temperature", "top_p", "user", "metadata", "stream_options"} <= names


def test_param_names_read_like_openais() -> None:
    assert param_of(["messages", 0, "content", 1, "text"]) == "messages[0].content[1].text"


def test_a_missing_spec_stops_startup_unless_validation_is_off(tmp_path: Path) -> None:
    missing = str(tmp_path / "openai-openapi.yaml")
    with pytest.raises(SettingsError, match=r"openai-openapi\.yaml does not exist.*OPENAI_OPENAPI_SPEC"):
        load({"OPENAI_OPENAPI_SPEC": missing})
    assert load({"OPENAI_OPENAPI_SPEC": missing, "EMULATOR_VALIDATE": "0"}).validate is False
    with pytest.raises(openapi_spec.SpecError, match="does not exist"):
        OpenAIValidator(Path(missing))
    assert load({}).openai_spec == str(openapi_spec.default_path())
