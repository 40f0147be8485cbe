"""What the proxy accepts on /v1/chat/completions and forwards to an OpenAI-format provider must be what
OpenAI's own OpenAPI description accepts (else OpenAI answers 400 after an upstream round trip), and the other
way round: what the spec accepts, the proxy accepts (apart from the few refusals openai_request.py documents:
an integral float such as 1.0 is not an integer to the proxy). Hand-picked cases: tests/unit/test_openai_request.py."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.emulator.openai_validate import OpenAIValidator
from services.proxy import openai_wire as wire
from services.proxy.errors import InvalidRequest
from tests import fuzz
from tests.openapi import SPEC_PATH


@st.composite
def _with_junk_parameter(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(fuzz.chat_body())
    body[draw(st.sampled_from(fuzz.OPTIONAL_PARAMS))] = draw(fuzz.json_values)
    return body


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(fuzz.chat_body(), fuzz.loose_chat_body, _with_junk_parameter()))
def test_every_body_the_proxy_forwards_is_one_openai_accepts(body: dict[str, Any]) -> None:
    try:
        checked = wire.parse_body(json.dumps(body).encode())
    except InvalidRequest:
        return
    assert OpenAIValidator(SPEC_PATH).chat(checked) is None


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(fuzz.loose_chat_body, _with_junk_parameter()))
def test_every_body_openai_accepts_the_proxy_accepts(body: dict[str, Any]) -> None:
    try:
        refusal = OpenAIValidator(SPEC_PATH).chat(body)
    except TypeError:  # jsonschema's best_match cannot order some error paths (mixed int/str): a refusal anyway
        return
    if refusal is None and not _integral_float(body):
        assert wire.parse_body(json.dumps(body).encode()) == body


def _integral_float(value: Any) -> bool:
    """Whether a float with no fraction (an integer to JSON Schema, not to the proxy) is anywhere in `value`."""
    if isinstance(value, float):
        return value.is_integer()
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_integral_float(item) for item in items)


def test_the_bodies_the_fuzz_calls_valid_are_valid_for_openai() -> None:
    """The fuzz's own valid chat bodies pass the spec (so a leak is the proxy's, never the generator's)."""
    validator = OpenAIValidator(SPEC_PATH)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(fuzz.chat_body())
    def check(body: dict[str, Any]) -> None:
        assert validator.chat(body) is None

    check()
