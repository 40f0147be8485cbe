"""The emulator's OpenAI bodies and stream chunks parse strictly under the official `openai` SDK's types, and
carry no field those types do not declare (the SDK's models allow extras, so undeclared keys are looked for)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from services.emulator import openai_format as oa

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
REQUESTS: dict[str, dict[str, Any]] = {
    "text": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Describe a harbor."}]},
    "reasoning": {"model": "o4-mini", "messages": [{"role": "user", "content": "Think."}]},
    "truncated": {"model": "gpt-5", "messages": [{"role": "user", "content": "Long."}], "max_completion_tokens": 3},
    "tool": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL]},
}


def undeclared(value: object, path: str = "$") -> list[str]:
    """JSON paths of keys a parsed SDK object kept as extras, i.e. fields its type does not declare."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += undeclared(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += undeclared(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += undeclared(item, f"{path}.{key}")
    return found


def strict(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    parsed = model.model_validate(body, strict=True)
    assert undeclared(parsed) == [], f"fields the {model.__name__} type does not declare"
    return parsed


def test_the_check_finds_an_undeclared_field() -> None:
    reply = oa.plan_reply(REQUESTS["text"])
    body = oa.completion_body(reply, completion_id="chatcmpl-1", created=1)
    body["choices"][0]["message"]["emulator_only"] = True
    assert undeclared(ChatCompletion.model_validate(body, strict=True)) == ["$.choices[0].message.emulator_only"]


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_completion_bodies_parse_strictly(kind: str) -> None:
    reply = oa.plan_reply(REQUESTS[kind])
    parsed = strict(ChatCompletion, oa.completion_body(reply, completion_id="chatcmpl-1", created=1))
    assert isinstance(parsed, ChatCompletion) and parsed.usage is not None
    details = parsed.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == reply.reasoning_tokens
    assert parsed.choices[0].finish_reason == reply.finish_reason


@pytest.mark.parametrize("kind", sorted(REQUESTS))
@pytest.mark.parametrize(("usage", "obfuscation"), [(True, True), (False, False)])
def test_stream_chunks_parse_strictly(kind: str, usage: bool, obfuscation: bool) -> None:
    reply = oa.plan_reply(REQUESTS[kind])
    chunks = [strict(ChatCompletionChunk, chunk) for chunk in oa.stream_chunks(
        reply, completion_id="chatcmpl-1", created=1, include_usage=usage, include_obfuscation=obfuscation)]
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    last = chunks[-1]
    assert isinstance(last, ChatCompletionChunk)
    assert (last.usage is not None and last.choices == []) is usage


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embedding_and_model_bodies_parse_strictly(encoding: str) -> None:
    body = oa.embedding_body({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8,
                              "encoding_format": encoding})
    parsed = strict(CreateEmbeddingResponse, body) if encoding == "float" else None
    if parsed is None:  # the SDK types `embedding` as floats; it decodes base64 itself before parsing
        assert all(isinstance(item["embedding"], str) for item in body["data"])
        strict(CreateEmbeddingResponse, {**body, "data": [{**item, "embedding": [0.0]} for item in body["data"]]})
    for model in oa.models_body()["data"]:
        strict(Model, model)
