"""Bedrock adapter against the ground truth (issue 21): each finding's test, with botocore's own service model as the
judge of what Converse accepts, and the catalog's capabilities driving what each model is sent."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from catalog import loader
from catalog.schema import Capabilities, Model
from services.common.settings import Secret
from services.emulator import bedrock_validate as bv
from services.proxy import chat
from services.proxy.adapters import bedrock as ad
from services.proxy.adapters.bedrock import BedrockDialect
from services.proxy.adapters.errors import StreamBroken
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target

SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
CATALOG = loader.load()
_SONNET_45 = CATALOG.model("claude-sonnet-4.5")
assert _SONNET_45 is not None
SONNET_45: Model = _SONNET_45
SONNET_45_ID = next(r.upstream_model for r in SONNET_45.routes if r.provider == "bedrock")
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Top song on WZPZ?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "top_song", "arguments": "{\"sign\":\"WZPZ\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Elemental Hotel"},
    {"role": "user", "content": "Thanks. And who sings it?"},
]
DIALECT = BedrockDialect(secret_key="secret", region="us-east-1")
TARGET = Target("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com", Secret("AKIDEXAMPLE"), "bedrock",
                emulated=False)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4.5", "messages": [{"role": "user", "content": "Hi"}], **extra}


def botocore_refusal(model_id: str, converse: dict[str, Any]) -> str | None:
    report = ParamValidator().validate({"modelId": model_id, **converse},
                                       SERVICE.operation_model("Converse").input_shape)
    return report.generate_report() if report.has_errors() else None


# --------------------------------------------------------------------------- catalog: inference profiles


def test_every_claude_route_on_bedrock_is_an_inference_profile() -> None:
    routes = [r.upstream_model for m in CATALOG.models for r in m.routes if r.provider == "bedrock"]
    assert routes and all(r.startswith(bv.PROFILE_PREFIXES) for r in routes if ".anthropic.claude" in r or
                          r.startswith("anthropic.")), routes


# --------------------------------------------------------------------------- sampling


def test_temperature_and_top_p_together_are_a_400_naming_top_p_for_models_that_take_one() -> None:
    with pytest.raises(InvalidRequest) as raised:
        DIALECT.request(TARGET, chat_body(temperature=0.5, top_p=0.9), SONNET_45_ID,
                        capabilities=SONNET_45.capabilities)
    assert raised.value.param == "top_p"
    for one in ({"temperature": 0.5}, {"top_p": 0.9}):
        DIALECT.request(TARGET, chat_body(**one), SONNET_45_ID, capabilities=SONNET_45.capabilities)
    _, both = ad.to_upstream(chat_body(temperature=0.5, top_p=0.9), LLAMA)  # a model that takes both
    assert both["inferenceConfig"] == {"temperature": 0.5, "topP": 0.9}


# --------------------------------------------------------------------------- tools


def test_a_history_with_tool_calls_but_no_tools_declares_the_tools_it_used() -> None:
    _, converse = ad.to_upstream(chat_body(messages=HISTORY), SONNET_45_ID, capabilities=SONNET_45.capabilities)
    assert converse["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "top_song", "description": ad.HISTORY_TOOL_DESCRIPTION, "inputSchema": {"json": {"type": "object"}}}}]}
    assert botocore_refusal(SONNET_45_ID, converse) is None
    assert bv.check_model(CATALOG, SONNET_45_ID, converse) is None
    from services.emulator import bedrock_format as bf
    assert bf.validate_request(converse) is None  # "toolConfig must be defined" otherwise


def test_tool_result_status_is_sent_only_to_models_whose_capabilities_take_it() -> None:
    _, claude = ad.to_upstream(chat_body(messages=HISTORY), SONNET_45_ID, capabilities=SONNET_45.capabilities)
    assert claude["messages"][2]["content"][0]["toolResult"]["status"] == "success"
    _, llama = ad.to_upstream(chat_body(messages=HISTORY), LLAMA)
    assert "status" not in llama["messages"][2]["content"][0]["toolResult"]
    assert bv.check_model(CATALOG, LLAMA, llama) is None
    assert "status" in str(bv.check_model(CATALOG, LLAMA, claude))


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "top_song"}}])
def test_forcing_a_tool_is_a_400_for_models_without_forced_tool(choice: Any) -> None:
    tools = [{"type": "function", "function": {"name": "top_song", "parameters": {"type": "object"}}}]
    with pytest.raises(ad.UnsupportedParameter) as raised:
        ad.to_upstream(chat_body(tools=tools, tool_choice=choice), LLAMA, capabilities=Capabilities())
    assert raised.value.param == "tool_choice"
    _, claude = ad.to_upstream(chat_body(tools=tools, tool_choice=choice), SONNET_45_ID,
                               capabilities=SONNET_45.capabilities)
    assert set(claude["toolConfig"]["toolChoice"]) <= {"any", "tool"}
    assert bv.check_model(CATALOG, SONNET_45_ID, claude) is None


# --------------------------------------------------------------------------- stop sequences


@pytest.mark.parametrize("stop", ["", ["END", ""]])
def test_an_empty_stop_sequence_is_a_400_naming_stop(stop: Any) -> None:
    assert botocore_refusal(LLAMA, {"messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                                    "inferenceConfig": {"stopSequences": [""]}}) is not None
    with pytest.raises(ad.UnsupportedParameter) as raised:
        ad.to_upstream(chat_body(stop=stop), LLAMA)
    assert raised.value.param == "stop"


def test_no_stop_sends_no_stop_sequences() -> None:
    nothing: tuple[list[str] | None, ...] = (None, [])
    for stop in nothing:
        assert "inferenceConfig" not in ad.to_upstream(chat_body(stop=stop), LLAMA)[1]


# --------------------------------------------------------------------------- stop reasons


def test_every_stop_reason_of_botocores_model_is_mapped_deliberately() -> None:
    enum = set(SERVICE.shape_for("StopReason").enum)
    assert enum == set(ad.FINISH_REASONS) | ad.MALFORMED_STOPS, "a new StopReason: decide its finish_reason"
    assert not set(ad.FINISH_REASONS) & ad.MALFORMED_STOPS


@pytest.mark.parametrize("reason", sorted(ad.MALFORMED_STOPS))
def test_a_malformed_output_stop_is_an_error_not_a_normal_stop(reason: str) -> None:
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "{\"broken"}]}}, "stopReason": reason,
            "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}, "metrics": {"latencyMs": 1}}
    with pytest.raises(ad.MalformedOutput, match=reason):
        ad.from_upstream(body, model="m")
    translator = ad.StreamTranslator(model="m", include_usage=True)
    translator.feed("messageStart", {"role": "assistant"})
    with pytest.raises(StreamBroken) as raised:
        translator.feed("messageStop", {"stopReason": reason})
    assert raised.value.body["error"]["code"] == "upstream_generation_failed"


# --------------------------------------------------------------------------- errors


def test_the_proxy_reads_the_exception_from_the_error_type_header() -> None:
    raw = b'{"message":"Your request rate is too high."}'
    header = {"x-amzn-ErrorType": "ServiceQuotaExceededException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    failure = chat._upstream_failure(DIALECT, 429, raw, header)
    assert failure.code == "insufficient_quota"  # from the status alone it would be ThrottlingException's
    assert chat._upstream_failure(DIALECT, 429, raw, {}).code == "rate_limit_exceeded"


# --------------------------------------------------------------------------- reasoning


def test_reasoning_output_leaves_reasoning_tokens_unknown_not_zero() -> None:
    """Bedrock's TokenUsage has no reasoning count (its outputTokens include the reasoning), so the count the
    OpenAI usage would carry cannot be exact: it is left out, and completion_tokens (what AWS bills) stays exact."""
    assert "reasoning" not in " ".join(SERVICE.shape_for("TokenUsage").members).lower()
    body = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}}, {"text": "Answer."}]}},
        "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 40, "totalTokens": 45},
        "metrics": {"latencyMs": 1}}
    usage = ad.from_upstream(body, model="m")["usage"]
    assert usage["completion_tokens"] == 40 and "reasoning_tokens" not in usage["completion_tokens_details"]
    plain = ad.from_upstream({**body, "output": {"message": {"role": "assistant", "content": [{"text": "A."}]}}},
                             model="m")["usage"]
    assert plain["completion_tokens_details"]["reasoning_tokens"] == 0


def test_a_reasoning_stream_leaves_reasoning_tokens_unknown_too() -> None:
    translator = ad.StreamTranslator(model="m", include_usage=True)
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"text": "Think."}}, "contentBlockIndex": 0}),
        ("contentBlockDelta", {"delta": {"text": "Answer."}, "contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 5, "outputTokens": 40, "totalTokens": 45}, "metrics": {"latencyMs": 1}}),
    ]
    chunks = [chunk for kind, payload in events for chunk in translator.feed(kind, payload)]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 40 and "reasoning_tokens" not in usage["completion_tokens_details"]
