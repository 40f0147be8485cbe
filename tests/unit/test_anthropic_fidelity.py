"""Issue 21 for Anthropic: sampling by model capability, inbound /v1/messages refusing what it cannot honour, and the
emulator's ground truth (the `anthropic` SDK's param and response types) refusing what the API refuses."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from catalog import loader
from catalog.schema import Capabilities
from services.common.settings import Secret
from services.emulator import anthropic_format as af
from services.emulator import anthropic_validate as av
from services.emulator import openai_format as oa
from services.proxy.adapters import anthropic as ad
from services.proxy.adapters import anthropic_inbound as inbound
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target

CATALOG = loader.load()
ONE_OF = ("claude-sonnet-4.5", "claude-haiku-4.5", "claude-opus-4.1")
TARGET = Target(provider="anthropic", base_url="https://api.anthropic.com/v1", api_key=Secret("k"),
                format="anthropic", emulated=False)
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]


def capabilities(model_id: str) -> Capabilities:
    model = CATALOG.model(model_id)
    assert model is not None
    return model.capabilities


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **extra}


# --------------------------------------------------------------------------- sampling by capability


@pytest.mark.parametrize("model_id", ONE_OF)
def test_temperature_with_top_p_is_refused_naming_top_p_where_the_model_refuses_the_pair(model_id: str) -> None:
    with pytest.raises(ad.UnsupportedParameter, match="temperature or top_p, not both") as caught:
        ad.to_upstream(chat(temperature=0.5, top_p=0.9), "claude-x", capabilities=capabilities(model_id))
    assert caught.value.param == "top_p"
    with pytest.raises(InvalidRequest) as refused:
        ad.AnthropicDialect().request(TARGET, chat(temperature=0.5, top_p=0.9), "claude-x",
                                      capabilities=capabilities(model_id))
    assert refused.value.param == "top_p" and refused.value.code == "unsupported_parameter"


@pytest.mark.parametrize("model_id", ONE_OF)
def test_either_sampling_parameter_alone_is_sent(model_id: str) -> None:
    alone = [ad.to_upstream(chat(**one), "claude-x", capabilities=capabilities(model_id))
             for one in ({"temperature": 0.5}, {"top_p": 0.9}, {"temperature": 0.5, "top_p": None})]
    assert [{k: v for k, v in out.items() if k in ("temperature", "top_p")} for out in alone] == [
        {"temperature": 0.5}, {"top_p": 0.9}, {"temperature": 0.5}]


def test_models_that_take_both_get_both() -> None:
    out = ad.to_upstream(chat(temperature=0.5, top_p=0.9), "claude-sonnet-4-20250514",
                         capabilities=capabilities("claude-sonnet-4"))
    assert (out["temperature"], out["top_p"]) == (0.5, 0.9)
    assert av.check_body(out) is None


# --------------------------------------------------------------------------- inbound /v1/messages


INBOUND: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 64, "messages": MESSAGES}


@pytest.mark.parametrize(("extra", "param"), [
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "output_config.format"),
    ({"output_config": {"effort": "low"}}, "output_config.effort"),
    ({"speed": "fast"}, "speed"),
    ({"inference_geo": "us"}, "inference_geo"),
    ({"cache_control": {"type": "ephemeral"}}, "cache_control"),
    ({"container": "container_1"}, "container"),
    ({"diagnostics": {"previous_message_id": "msg_1"}}, "diagnostics"),
    ({"service_tier": "standard_only"}, "service_tier"),
    ({"user_profile_id": "up_1"}, "user_profile_id"),
    ({"workspace_id": "wrkspc_1"}, "workspace_id"),
    ({"top_k": 5}, "top_k"),
    ({"thinking": {"type": "adaptive"}}, "thinking"),
    ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
    ({"not_a_parameter": 1}, "not_a_parameter"),
])
def test_inbound_refuses_every_field_it_does_not_translate(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ad.UnsupportedParameter, match=f"'{param}' is not supported by model 'gpt-4o-mini'") as caught:
        inbound.request_to_openai({**INBOUND, **extra})
    assert caught.value.param == param


@pytest.mark.parametrize("extra", [
    {"speed": "standard"}, {"service_tier": "auto"}, {"thinking": {"type": "disabled"}}, {"inference_geo": None},
    {"output_config": {}}, {"output_config": {"effort": None, "format": None}}, {"mcp_servers": []},
])
def test_inbound_passes_fields_that_ask_for_nothing(extra: dict[str, Any]) -> None:
    assert inbound.request_to_openai({**INBOUND, **extra}) == inbound.request_to_openai(INBOUND)


# --------------------------------------------------------------------------- the emulator's ground truth


@pytest.mark.parametrize(("body", "message"), [
    ({**INBOUND, "frequency_penalty": 1}, "frequency_penalty: Extra inputs are not permitted"),
    ({"model": "m", "messages": MESSAGES}, "max_tokens: Field required"),
    ({**INBOUND, "max_tokens": "64"}, "max_tokens: Input should be a valid integer"),
    ({**INBOUND, "temperature": "hot"}, "temperature: Input should be a valid number"),
    ({**INBOUND, "top_k": 1.5}, "top_k: Input should be a valid integer"),
    ({**INBOUND, "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "bold": True}]}]},
     "messages.0.content.0.bold: Extra inputs are not permitted"),
    ({**INBOUND, "messages": [{"role": "user", "content": [{"type": "txt", "text": "a"}]}]},
     "messages.0.content.0.type: Input tag 'txt' does not match any of the expected tags"),
    ({**INBOUND, "messages": [{"role": "tool", "content": "a"}]},
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    ({**INBOUND, "tools": [{"name": "f", "parameters": {"type": "object"}}]}, "tools.0"),
    ({**INBOUND, "tool_choice": {"type": "tool"}}, "tool_choice.name: Field required"),
    ({**INBOUND, "metadata": {"user_id": "u", "session": "s"}}, "metadata.session: Extra inputs are not permitted"),
    ({**INBOUND, "stream": "yes"}, "stream: Input should be a valid boolean"),
    ({**INBOUND, "stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
])
def test_ground_truth_refuses_what_the_sdk_types_refuse(body: dict[str, Any], message: str) -> None:
    refused = av.check_body(body)
    assert refused is not None and refused.startswith(message), refused


def test_ground_truth_takes_the_documented_extras_and_what_the_adapter_sends() -> None:
    assert av.check_body({**INBOUND, "temperature": 1, "top_p": 0.5, "top_k": 40, "stream": True}) is None
    image = "data:image/png;base64,iVBORw0KGgo="
    body = chat(messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": image}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"at": "it"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}],
        tools=[{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
        tool_choice="required", parallel_tool_calls=False, stop=["END"], user="u-1", temperature=0.3, stream=True)
    assert av.check_body(ad.to_upstream(body, "claude-sonnet-4-20250514")) is None


def test_counting_tokens_has_its_own_params() -> None:
    assert av.check_body({"model": "m", "messages": MESSAGES}, counting=True) is None
    assert av.check_body(INBOUND, counting=True) == "max_tokens: Extra inputs are not permitted"


@pytest.mark.parametrize("model_id", ONE_OF)
def test_capabilities_refuse_the_pair_with_anthropics_message(model_id: str) -> None:
    model = CATALOG.model(model_id)
    assert model is not None
    upstream = next(r.upstream_model for r in model.routes if r.provider == "anthropic")
    both = {**INBOUND, "model": upstream, "temperature": 0.5, "top_p": 0.9}
    assert av.check_capabilities(both, CATALOG) == (
        "`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
    assert av.check_capabilities({**both, "top_p": None}, CATALOG) is None
    assert av.check_capabilities({**both, "model": "claude-sonnet-4-20250514"}, CATALOG) is None


def test_emulated_bodies_and_events_parse_strictly_under_the_sdk_types() -> None:
    text = af.plan_message({"model": "m", "max_tokens": 50, "messages": MESSAGES}, message_id="msg_01a")
    tool = af.plan_message({"model": "m", "max_tokens": 50, "messages": MESSAGES, "tool_choice": {"type": "any"},
                            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {
                                "q": {"type": "string"}}, "required": ["q"]}}]}, message_id="msg_01b")
    assert tool.tool_use is not None
    for message in (text, tool):
        av.check_message(af.message_body(message))
        for _, data in af.stream_events(message, chunk_words=2):
            av.check_event(data)
    av.check_event(af.status_error_body(529, model="m"))
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        av.check_message({**af.message_body(text), "latency_ms": 3})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        av.check_event({"type": "ping", "at": 1})


def test_inbound_replies_parse_strictly_under_the_sdk_types() -> None:
    """What /v1/messages callers get from an OpenAI-format route is an Anthropic Message / event, nothing more."""
    tool = {"name": "f", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    request = inbound.request_to_openai({**INBOUND, "tools": [tool]})
    for tools in (False, True):
        reply = oa.plan_reply(request if tools else {**request, "tools": None})
        completion = oa.completion_body(reply, completion_id="chatcmpl-abc", created=1)
        av.check_message(inbound.response_from_openai(completion, model="gpt-4o-mini"))
        stream = inbound.StreamToAnthropic(model="gpt-4o-mini")
        chunks = oa.stream_chunks(reply, completion_id="chatcmpl-abc", created=1, chunk_words=2, include_usage=True)
        for _, data in [event for chunk in chunks for event in stream.feed(chunk)] + stream.finish():
            av.check_event(data)


def test_the_emulator_takes_an_open_input_schema_as_the_sdk_does() -> None:
    """`input_schema` is `InputSchemaTyped | Dict[str, object]` with extra='allow': strict tools' keys pass."""
    from services.emulator import anthropic_validate

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "w", "description": "d", "input_schema": schema}]}
    assert anthropic_validate.check_body(body) is None
    body["tools"][0]["bogus"] = 1
    assert anthropic_validate.check_body(body) == "tools.0.bogus: Extra inputs are not permitted"
