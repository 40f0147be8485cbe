"""The emulator's Gemini ground truth: bodies google-genai's types refuse are refused, the adapter's bodies are
not, the catalog's thinking rule holds, and the emulator's own answers parse under google-genai strictly."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from typing import Any

import pytest

from catalog import loader
from services.emulator import gemini_format as gf
from services.emulator import gemini_validate as gv
from services.proxy.adapters import gemini

HI: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
SIGNATURE = "CiQB0e2Kb1k1ZtlyaJp8sPvK1M4bE/dkW9YjM1A+fYxvYWmZ7ZM="  # canonical base64, as the SDK encodes bytes

RICH_OPENAI_BODY: dict[str, Any] = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'},
            "extra_content": {"google": {"thought_signature": SIGNATURE}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 21}'},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": ["string", "null"]},
                                         "when": {"type": "string", "format": "date-time"}},
        "required": ["city"]}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 300, "stop": ["END"], "seed": 7,
    "presence_penalty": 0.1, "frequency_penalty": 0.1, "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
        "type": "object", "properties": {"summary": {"type": "string"}}}}},
}


@pytest.mark.parametrize(("body", "message"), [
    ({**HI, "generationConfig": {"maxTokens": 5}}, 'Unknown name "maxTokens" at \'generation_config\''),
    ({**HI, "temperature": 0.5}, 'Unknown name "temperature": Cannot find field.'),
    ({"contents": [{"parts": [{"text": "hi", "bogus": 1}]}]}, "Unknown name \"bogus\" at 'contents[0].parts[0]'"),
    ({**HI, "generationConfig": {"routingConfig": {"autoMode": {}}}}, 'Unknown name "routingConfig"'),
    ({**HI, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, '"SOMETIMES"'),
    ({**HI, "safetySettings": [{"category": "HARM_CATEGORY_NOPE", "threshold": "BLOCK_NONE"}]}, "HARM_CATEGORY_NOPE"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]}, "inline_data.data"),
    ({**HI, "generationConfig": {"temperature": "hot"}}, "generation_config.temperature"),
])
def test_bodies_google_genai_refuses_are_refused(body: dict[str, Any], message: str) -> None:
    error = gv.check_request(body)
    assert error is not None and message in error


def test_embedding_bodies_are_checked_too() -> None:
    _, batch = gemini.embeddings_to_upstream({"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 8},
                                             "gemini-embedding-001")
    assert gv.check_embed_request(batch, batch=True) is None
    assert gv.check_embed_request(batch["requests"][0], batch=False) is None
    wrong = {"requests": [{**batch["requests"][0], "dimensions": 8}]}
    assert 'Unknown name "dimensions" at \'requests[0]\'' in (gv.check_embed_request(wrong, batch=True) or "")
    assert "content" in (gv.check_embed_request({"content": {"parts": "a"}}, batch=False) or "")


def test_snake_case_names_are_accepted_like_google_does() -> None:
    assert gv.check_request({"contents": [{"parts": [{"text": "hi"}]}],
                             "generation_config": {"max_output_tokens": 5, "thinking_config": {"thinking_budget": 0}},
                             "system_instruction": {"parts": [{"text": "x"}]}}) is None


def test_the_adapters_translation_passes_the_ground_truth() -> None:
    _, request = gemini.to_upstream(RICH_OPENAI_BODY, "gemini-2.5-flash")
    assert gv.check_request(request) is None
    assert gv.check_request({**request, "generationConfig": {**request["generationConfig"], "foo": 1}}) is not None


def test_the_emulator_refuses_thinking_off_for_a_model_that_always_thinks() -> None:
    catalog = loader.load()
    off = {**HI, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}
    assert gv.check_capabilities("gemini-2.5-pro", off, catalog) == gv.THINKING_REQUIRED
    assert gv.check_capabilities("gemini-2.5-flash", off, catalog) is None
    low = {**HI, "generationConfig": {"thinkingConfig": {"thinkingBudget": 128}}}
    assert gv.check_capabilities("gemini-2.5-pro", low, catalog) is None


def test_the_emulator_refuses_thinking_for_a_model_that_cannot_think() -> None:
    catalog = loader.load()
    low = {**HI, "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}
    assert gv.check_capabilities("gemini-2.0-flash", low, catalog) == gv.THINKING_UNSUPPORTED
    assert gv.check_capabilities("gemini-2.5-flash", low, catalog) is None
    assert gv.check_capabilities("gemini-2.0-flash", HI, catalog) is None


def _requests() -> list[tuple[str, dict[str, Any]]]:
    tool = {"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}
    return [
        ("gemini-2.5-flash", HI),
        ("gemini-2.0-flash", HI),
        ("gemini-2.5-flash", {**HI, "tools": [tool], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
        ("gemini-2.5-flash", {**HI, "generationConfig": {"responseMimeType": "application/json"}}),
        ("gemini-2.5-flash", {**HI, "generationConfig": {"maxOutputTokens": 3}}),
        ("gemini-2.5-pro", {**HI, "generationConfig": {"thinkingConfig": {"thinkingBudget": 256}}}),
    ]


@pytest.mark.parametrize(("model", "request_body"), _requests())
def test_the_emulators_answers_parse_under_google_genai_strictly(model: str, request_body: dict[str, Any]) -> None:
    normalised, error = gf.validate_generate_request(copy.deepcopy(request_body))
    assert error is None and normalised is not None
    answer = gf.plan(model, normalised)
    assert gv.check_response(gf.response_body(answer, response_id="r1")) is None
    chunks = list(gf.stream_chunks(answer, response_id="r1", chunk_words=2))
    assert chunks and all(gv.check_response(chunk) is None for chunk in chunks)


def test_the_response_check_is_strict() -> None:
    body = gf.response_body(gf.plan("gemini-2.5-flash", HI), response_id="r1")
    body["candidates"][0]["finishReason"] = "DONE"
    assert '"DONE"' in (gv.check_response(body) or "")
    body = gf.response_body(gf.plan("gemini-2.5-flash", HI), response_id="r1")
    body["usageMetadata"]["tokens"] = 3
    assert 'Unknown name "tokens"' in (gv.check_response(body) or "")


def test_a_missing_google_genai_fails_at_startup_naming_it_and_the_switch() -> None:
    """A real emulator app built in a fresh interpreter where `google.genai` cannot be imported."""
    script = ("import sys; sys.modules['google.genai'] = None\n"
              "from services.emulator import service, settings\n"
              "service.make_app(settings.load({}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=os.getcwd(), check=False)
    assert result.returncode != 0
    assert "google-genai" in result.stderr and "EMULATOR_VALIDATE=0" in result.stderr
    off = subprocess.run([sys.executable, "-c", script.replace("load({})", "load({'EMULATOR_VALIDATE': '0'})")],
                         capture_output=True, text=True, timeout=60, cwd=os.getcwd(), check=False)
    assert off.returncode == 0, off.stderr
