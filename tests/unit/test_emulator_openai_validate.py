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
    error = validator.embedding({"model": "text-embedding-3-small", "input": "a", "extra": 1})
    assert error is not None and error["error"]["message"] == "Unrecognized request argument supplied: extra"


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


def _resolve(node: Any) -> Any:
    ref = node.get("$ref") if isinstance(node, dict) else None
    return openapi_spec.schema(SPEC_PATH, ref.rsplit("/", 1)[1]) if isinstance(ref, str) else node


def _types(node: Any) -> set[str] | None:
    """The JSON types a schema admits (None: unknown, any); `integer` counts as `number` too."""
    node = _resolve(node)
    kind = node.get("type")
    if isinstance(kind, str | list):
        kinds = {kind} if isinstance(kind, str) else set(kind)
        return kinds | ({"number"} if "integer" in kinds else set())
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        parts = [_types(branch) for branch in branches]
        return None if any(part is None for part in parts) else set().union(*parts)  # type: ignore[arg-type]
    return {"object"} if "properties" in node else None


def _tags(node: Any) -> dict[str, set[str]]:
    """The values a schema allows for its `role` and `type` properties (its union discriminators)."""
    node = _resolve(node)
    properties: dict[str, Any] = {}
    for part in [node, *[_resolve(p) for p in node.get("allOf") or []]]:
        properties.update(part.get("properties") or {})
    tags = {}
    for key in ("role", "type"):
        spec = _resolve(properties.get(key) or {})
        values = spec.get("enum") or ([spec["const"]] if "const" in spec else None)
        if values:
            tags[key] = set(values)
    return tags


def _disjoint(a: Any, b: Any) -> bool:
    a, b = _resolve(a), _resolve(b)
    ta, tb = _types(a), _types(b)
    if ta is not None and tb is not None and not ta & tb:
        return True
    ga, gb = _tags(a), _tags(b)
    if any(key in gb and not ga[key] & gb[key] for key in ga):
        return True
    if ta == tb == {"array"} and a.get("minItems", 0) >= 1 and b.get("minItems", 0) >= 1:
        return _disjoint(a.get("items") or {}, b.get("items") or {})
    return False


@pytest.mark.parametrize("root", ["CreateChatCompletionRequest", "CreateEmbeddingRequest"])
def test_every_one_of_the_validator_reads_as_any_of_is_disjoint(root: str) -> None:
    """Why `fast_validator` may read `oneOf` as `anyOf`: no body can match two branches of these unions."""
    unions: list[list[Any]] = []
    pending: list[Any] = list(openapi_spec.reachable(SPEC_PATH, root).values())
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if "oneOf" in node:
                unions.append(node["oneOf"])
            pending.extend(value for key, value in node.items() if key != "$ref")
    assert unions or root == "CreateEmbeddingRequest"
    for branches in unions:
        for i, first in enumerate(branches):
            for second in branches[i + 1:]:
                assert _disjoint(first, second), f"{root}: oneOf branches {first} and {second} may both match"


def test_the_disjointness_check_sees_overlap() -> None:
    assert not _disjoint({"type": "string"}, {"type": "string"})
    assert not _disjoint({"type": "object", "properties": {"role": {"enum": ["a"]}}},
                         {"type": "object", "properties": {"role": {"enum": ["a", "b"]}}})
    assert not _disjoint({"type": "array", "items": {"type": "string"}},
                         {"type": "array", "items": {"type": "integer"}})
    assert _disjoint({"type": "array", "minItems": 1, "items": {"type": "string"}},
                     {"type": "array", "minItems": 1, "items": {"type": "integer"}})
