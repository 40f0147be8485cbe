"""Gemini's per-model thinking rule through the real stack (proxy → emulator), with the official openai SDK."""

from __future__ import annotations

from typing import Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from launcher.stack import Stack

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is a river delta?"}]


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def test_thinking_off_is_refused_naming_reasoning_effort_for_a_model_that_always_thinks(
        client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini-2.5-pro", messages=MESSAGES, reasoning_effort="none")
    error = caught.value.response.json()["error"]
    assert error["param"] == "reasoning_effort" and error["code"] == "unsupported_parameter"
    assert "gemini-2.5-pro" in error["message"]


@pytest.mark.parametrize(("model", "effort"), [("gemini-2.5-flash", "none"), ("gemini-2.5-pro", "low")])
def test_efforts_the_model_can_take_are_answered(client: openai.OpenAI, model: str,
                                                effort: Literal["none", "low"]) -> None:
    completion = client.chat.completions.create(model=model, messages=MESSAGES, reasoning_effort=effort)
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    details = completion.usage.completion_tokens_details if completion.usage else None
    reasoning = details.reasoning_tokens if details else None
    assert (reasoning == 0) == (effort == "none")
