"""One model of each family through the official openai SDK: answers, streams, tool calls, exact cost."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import pytest

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import trace_row, wait_for
from tests.openapi import validate

FAMILY_MODELS = ["gpt-4o-mini", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-chat", "mistral-small",
                 "llama-3.3-70b"]
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is a river delta?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TRACE = {"Routeur-Trace": "true"}


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def _cost(model_id: str, usage: Any) -> Decimal:
    model = loader.load().model(model_id)
    assert model is not None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0
    return pricing.cost_usd(model.routes[0], prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens, cached_tokens=cached or 0,
                            reasoning_tokens=reasoning or 0)


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
def test_family_answers_and_trace_is_exact(stack: Stack, client: openai.OpenAI, model_id: str) -> None:
    primary = loader.load().model(model_id).routes[0]  # type: ignore[union-attr]
    completion = client.chat.completions.create(model=model_id, messages=MESSAGES, extra_headers=TRACE)
    body = completion.model_dump(exclude_unset=True)
    inline = body.pop("routeur_trace")
    validate("CreateChatCompletionResponse", body)
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert (inline["provider"], inline["upstream_model"]) == (primary.provider, primary.upstream_model)
    assert (inline["prompt_tokens"], inline["completion_tokens"]) == (completion.usage.prompt_tokens,
                                                                      completion.usage.completion_tokens)
    assert Decimal(str(inline["cost_usd"])) == _cost(model_id, completion.usage) > 0
    row = wait_for(lambda: trace_row(stack, inline["request_id"]))
    assert row["provider"] == primary.provider and row["total_tokens"] == completion.usage.total_tokens
    assert Decimal(str(row["cost_usd"])) == _cost(model_id, completion.usage)

    chunks = list(client.chat.completions.create(model=model_id, messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}, extra_headers=TRACE))
    for chunk in chunks:
        payload = chunk.model_dump(exclude_unset=True)
        payload.pop("routeur_trace", None)
        validate("CreateChatCompletionStreamResponse", payload)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].total_tokens == completion.usage.total_tokens
    streamed = chunks[-1].model_extra["routeur_trace"]
    assert streamed["stream"] is True and streamed["total_tokens"] == completion.usage.total_tokens
    assert Decimal(str(streamed["cost_usd"])) == Decimal(str(inline["cost_usd"]))


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_family_tool_call_round_trip(client: openai.OpenAI, model_id: str, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Lyon?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS, stream=True))
        calls: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                entry["name"] = (delta.function.name if delta.function else None) or entry["name"]
                entry["arguments"] += (delta.function.arguments if delta.function else None) or ""
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
            ["tool_calls"]
        call = calls[0]
    else:
        first = client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS)
        assert first.choices[0].finish_reason == "tool_calls"
        tool_call = first.choices[0].message.tool_calls[0]
        call = {"id": tool_call.id, "name": tool_call.function.name, "arguments": tool_call.function.arguments}
    assert call["name"] == "get_weather" and call["id"]
    assert isinstance(json.loads(call["arguments"])["city"], str)
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]})
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 12}'})
    second = client.chat.completions.create(model=model_id, messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_unsupported_parameter_names_parameter_and_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-sonnet-4.5", messages=MESSAGES, logprobs=True)
    error = caught.value.response.json()["error"]
    assert error["param"] == "logprobs" and "claude" in error["message"] and error["code"] == "unsupported_parameter"

