"""POST /v1/embeddings through the openai SDK: OpenAI-compatible and Gemini routes, traced at exact cost."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import http_json, trace_row, wait_for
from tests.openapi import validate


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


@pytest.mark.parametrize(("model_id", "estimated"), [("text-embedding-3-small", False), ("mistral-embed", False),
                                                     ("gemini-embedding-001", True)])
def test_embeddings_are_openai_shaped_and_traced(stack: Stack, client: openai.OpenAI, model_id: str,
                                                 estimated: bool) -> None:
    raw = client.embeddings.with_raw_response.create(model=model_id, input=["first text", "second text"],
                                                      encoding_format="float")
    result = raw.parse()
    validate("CreateEmbeddingResponse", result.model_dump(exclude_unset=True))
    assert len(result.data) == 2 and len(result.data[0].embedding) > 10
    assert result.usage.prompt_tokens > 0
    row = wait_for(lambda: trace_row(stack, raw.headers["x-request-id"]))
    route = loader.load().model(model_id).routes[0]  # type: ignore[union-attr]
    assert (row["endpoint"], row["model"], row["provider"]) == ("/v1/embeddings", model_id, route.provider)
    assert row["prompt_tokens"] == result.usage.prompt_tokens and row["completion_tokens"] == 0
    assert row["usage_estimated"] is estimated
    expected = pricing.cost_usd(route, prompt_tokens=result.usage.prompt_tokens, completion_tokens=0)
    assert Decimal(str(row["cost_usd"])) == expected > 0


def test_models_are_used_only_for_their_kind(stack: Stack) -> None:
    key = stack.secrets["ROUTEUR_API_KEY"]
    status, body = http_json("POST", f"{stack.proxy_url}/v1/embeddings", token=key,
                             body={"model": "gpt-4o-mini", "input": "x"})
    assert status == 400 and body["error"]["code"] == "model_not_supported"
    status, body = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", token=key,
                             body={"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and body["error"]["code"] == "model_not_supported"
    status, body = http_json("POST", f"{stack.proxy_url}/v1/embeddings", token=key,
                             body={"model": "text-embedding-3-small", "input": []})
    assert status == 400 and body["error"]["param"] == "input"
    validate("ErrorResponse", body)
