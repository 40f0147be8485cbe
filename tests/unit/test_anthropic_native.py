"""The native /v1/messages pieces without a socket: upstream calls, Bedrock's event stream read back, the
capability checks, DLP restore in messages and events, and the emulator's prompt cache, thinking and InvokeModel
validation against the official ground truth (botocore, the anthropic SDK's Bedrock decoder and types)."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from catalog import loader
from catalog.schema import Capabilities
from proto import codec
from services.common.settings import Secret
from services.emulator import anthropic_format as af
from services.emulator import anthropic_validate as av
from services.emulator import bedrock_invoke as bi
from services.emulator import bedrock_validate as bv
from services.emulator.anthropic_cache import PromptCache
from services.emulator.settings import Settings
from services.proxy.adapters import anthropic_native as native
from services.proxy.dlp.anthropic_restore import EventRestorer, restore_message
from services.proxy.providers import Target

CATALOG = loader.load()
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4.5", "max_tokens": 4096, "stream": True, "top_k": 5,
    "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Hello there"}],
}


def target(fmt: str) -> Target:
    return Target(provider=fmt, base_url="https://bedrock-runtime.us-east-1.amazonaws.com" if fmt == "bedrock"
                  else "https://api.anthropic.com/v1", api_key=Secret("AKIDEXAMPLE"), format=fmt, emulated=False,
                  secret_key=Secret("secret"), region="us-east-1")


def test_anthropic_call_is_the_callers_body_with_the_routes_model_and_betas() -> None:
    call = native.request(target("anthropic"), BODY, "claude-sonnet-4-5-20250929",
                          {"anthropic-beta": "a-1,b-2", "anthropic-version": "2023-06-01"}, stream=True)
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers["anthropic-beta"] == "a-1,b-2" and call.headers["x-api-key"] == "AKIDEXAMPLE"
    assert json.loads(call.body) == {**BODY, "model": "claude-sonnet-4-5-20250929"}


def test_bedrock_call_is_what_the_anthropic_sdks_bedrock_client_sends() -> None:
    call = native.request(target("bedrock"), BODY, "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                          {"anthropic-beta": "a-1, b-2"}, stream=True)
    assert call.url.endswith("/model/global.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream")
    assert call.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    sent = json.loads(call.body)
    expected = {k: v for k, v in BODY.items() if k not in ("model", "stream")}
    assert sent == {**expected, "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["a-1", "b-2"]}
    assert bv.anthropic_body_problem(sent) is None
    assert bv.check_invoke("global.anthropic.claude-sonnet-4-5-20250929-v1:0", call.body, stream=True,
                           content_type="application/json", accept="application/json") is None


def test_capabilities_refuse_by_the_catalog() -> None:
    one_of = CATALOG.model("claude-sonnet-4.5")
    haiku = CATALOG.model("claude-3.5-haiku")
    assert one_of is not None and haiku is not None
    with pytest.raises(native.NativeUnsupported, match="'top_p'"):
        native.check({**BODY, "temperature": 0.5, "top_p": 0.9}, one_of.id, one_of.capabilities)
    with pytest.raises(native.NativeUnsupported, match="'thinking'"):
        native.check(BODY, haiku.id, haiku.capabilities)
    with pytest.raises(native.NativeUnsupported, match="'speed'"):
        native.check({**BODY, "speed": "fast"}, one_of.id, one_of.capabilities)
    native.check({**BODY, "temperature": 0.5, "top_p": 0.9}, "claude-sonnet-4", Capabilities())


def _events(message: af.Message) -> list[af.Event]:
    return [(n, d) for n, d in af.stream_events(message) if n != "ping"]


def test_bedrock_chunks_read_back_as_the_sdks_decoder_reads_them() -> None:
    """The emulator's InvokeModelWithResponseStream frames, decoded by the anthropic SDK's own Bedrock decoder
    (botocore's EventStreamBuffer + the ResponseStream shape) and by the proxy's reader, give the same events."""
    from anthropic.lib.bedrock._stream_decoder import AWSEventStreamDecoder

    message = af.plan_message({**BODY, "model": "m"}, message_id="msg_1")
    events = _events(message)
    frames = b"".join(bi.encode_chunk(data, i) for i, (_, data) in enumerate(events))
    sdk = [json.loads(sse.data) for sse in AWSEventStreamDecoder().iter_bytes(iter([frames[:37], frames[37:]]))]
    reader = native.StreamReader("bedrock")
    ours = [data for part in (frames[:100], frames[100:]) for _, _, data in reader.feed(part)]
    assert sdk == ours == [data for _, data in events]
    assert reader.done and reader.usage is not None and reader.usage.completion_tokens == message.output_tokens
    for data in sdk:
        av.check_event(data)


def test_an_anthropic_sse_stream_is_read_for_usage_with_cache_buckets() -> None:
    from services.emulator.anthropic_cache import CacheUsage

    message = af.plan_message({**BODY, "model": "m"}, message_id="msg_1", cache=CacheUsage(read=100, write_1h=7))
    raw = b"".join(af.encode_event(n, d) for n, d in af.stream_events(message))
    reader = native.StreamReader("anthropic")
    kinds = [kind for part in (raw[:50], raw[50:]) for _, kind, _ in reader.feed(part)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and reader.done
    usage = reader.usage
    assert usage is not None
    assert (usage.cached_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (100, 0, 7)
    assert usage.prompt_tokens == message.input_tokens + 107


def test_restore_in_a_message_leaves_thinking_alone() -> None:
    mapping = {"[EMAIL_1]": "jane@example.com"}
    message = {"content": [{"type": "thinking", "thinking": "[EMAIL_1]", "signature": "s"},
                           {"type": "text", "text": "Mail [EMAIL_1]."},
                           {"type": "tool_use", "id": "t", "name": "n", "input": {"to": ["[EMAIL_1]"]}}]}
    restored = restore_message(message, mapping)
    assert restored["content"][0]["thinking"] == "[EMAIL_1]"
    assert restored["content"][1]["text"] == "Mail jane@example.com."
    assert restored["content"][2]["input"] == {"to": ["jane@example.com"]}


def test_restore_in_events_holds_a_placeholder_split_across_deltas() -> None:
    restorer = EventRestorer({"[EMAIL_1]": "jane@example.com"})
    out: list[str] = []
    for piece in ["Mail [EM", "AIL_", "1] now [", "x [A"]:
        data = {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": piece}}
        changed = restorer.event("content_block_delta", data)
        out.extend([piece] if changed is None else [d["delta"]["text"] for _, d in changed])
    stop = restorer.event("content_block_stop", {"type": "content_block_stop", "index": 1})
    assert stop is not None and stop[-1][0] == "content_block_stop"
    out.extend(d["delta"]["text"] for n, d in stop if n == "content_block_delta")
    assert "".join(out) == "Mail jane@example.com now [x [A"  # the held "[A" is sent before the block stops
    thinking = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "[EM"}}
    assert restorer.event("content_block_delta", thinking) is None


def test_the_prompt_cache_writes_then_reads_and_splits_the_1h_ttl() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    body = {"tools": [{"name": "t", "input_schema": {}, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "system": [{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "q" * 100}]}
    first = cache.use(body, model="m", input_tokens=1000)
    assert first.read == 0 and first.write_1h > 0 and first.write_5m > 0 and first.write < 1000
    second = cache.use(body, model="m", input_tokens=1000)
    assert (second.read, second.write) == (first.write, 0)
    now[0] += 301  # the 5-minute prefix expired, the 1-hour one holds
    third = cache.use(body, model="m", input_tokens=1000)
    assert (third.read, third.write_5m, third.write_1h) == (first.write_1h, first.write_5m, 0)
    assert cache.use(body, model="other", input_tokens=1000).read == 0


def test_thinking_blocks_are_signed_and_checked_and_parse_under_the_sdk() -> None:
    body = {**BODY, "model": "claude-sonnet-4-5-20250929"}
    body.pop("stream")
    message = af.message_body(af.plan_message(body, message_id="msg_1"))
    av.check_message(message)
    assert message["content"][0]["type"] == "thinking"
    history = {**body, "messages": [*body["messages"], {"role": "assistant", "content": message["content"]},
                                    {"role": "user", "content": "more"}]}
    if message["content"][-1]["type"] == "text":
        assert af.validate_request(history) is None
    forged = {**message["content"][0], "thinking": "changed"}
    history["messages"][1] = {"role": "assistant", "content": [forged, *message["content"][1:]]}
    error = af.validate_request(history)
    assert error is not None and "Invalid `signature`" in error["error"]["message"]
    low = af.validate_request({**body, "thinking": {"type": "enabled", "budget_tokens": 512}})
    assert low is not None and "budget_tokens" in low["error"]["message"]


def test_invoke_refusals_follow_bedrock_and_the_sdk() -> None:
    settings = Settings(validate=True, catalog=CATALOG)
    profile = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    good = native.bedrock_body({k: v for k, v in BODY.items() if k != "stream"}, {})
    assert bi._refusal(settings, profile, good) is None
    assert "anthropic_version" in (bi._refusal(settings, profile, {**good, "anthropic_version": "2023-06-01"}) or "")
    assert "extraneous key [model]" in (bi._refusal(settings, profile, {**good, "model": "x"}) or "")
    assert "Extra inputs are not permitted" in (bi._refusal(settings, profile, {**good, "bogus": 1}) or "")
    assert "on-demand throughput" in (bi._refusal(settings, profile.split(".", 1)[1], good) or "")
    both = bi._refusal(settings, profile, {**good, "thinking": {"type": "disabled"}, "temperature": 0.5, "top_p": 0.5})
    assert both is not None and "top_p" in both
    assert bv.check_count_tokens(profile.split(".", 1)[1], {"input": {"invokeModel": {
        "body": base64.b64encode(codec.encode(good)).decode()}}}) is None
    assert bv.check_count_tokens("m", {"input": {"nope": {}}}) is not None


def test_usage_of_an_anthropic_reply_prices_each_bucket() -> None:
    usage = native.usage({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                          "cache_creation_input_tokens": 30,
                          "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 10}})
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (
        140, 100, 20, 10)
    assert msgspec.json.decode(codec.encode(usage))["prompt_tokens_details"]["cache_write_tokens"] == 20


def test_the_native_check_is_held_to_the_sdks_param_types() -> None:
    import typing

    from anthropic.types import content_block_param, message_create_params, tool_param

    from services.proxy.adapters import anthropic_check as ac

    base = message_create_params.MessageCreateParamsBase
    assert ac.TOP_LEVEL == set(typing.get_type_hints(base)) | set(av.DOCUMENTED_EXTRAS) | {"stream"}
    assert ac.TOOL_KEYS == set(typing.get_type_hints(tool_param.ToolParam))
    tags = {}
    for option in typing.get_args(content_block_param.ContentBlockParam):
        tag = typing.get_args(typing.get_type_hints(option)["type"])[0]
        tags[tag] = set(typing.get_type_hints(option))
    assert set(tags) == set(ac.BLOCK_KEYS) | ac.OTHER_BLOCKS
    for tag, keys in ac.BLOCK_KEYS.items():
        assert keys == tags[tag], tag
    for key in ac.NOT_NULL - set(av.DOCUMENTED_EXTRAS) - {"stream"}:  # the SDK's own: a null is refused
        assert av.check_body({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
                              key: None}) is not None, key


@pytest.mark.parametrize(("change", "param"), [
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"system": None}, "system"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "id": 1}]}]}, "messages.0.content.0.id"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
    ({"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}]},
     "messages.0.content.0.signature"),
    ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "max_tokens"),
    ({"tools": [{"name": "t", "input_schema": {}, "cache_control": {"type": "persistent"}}]}, "tools.0.cache_control"),
    ({"metadata": {"user_id": "u", "x": 1}}, "metadata"),
])
def test_what_anthropic_refuses_is_refused_before_the_call(change: dict[str, Any], param: str) -> None:
    from services.proxy.adapters import anthropic_check as ac

    body = {k: v for k, v in BODY.items()} | change
    with pytest.raises(ac.Refused) as caught:
        ac.check(body)
    assert caught.value.param == param
    ac.check(BODY)


def test_with_betas_the_beta_apis_fields_are_taken_as_claude_code_sends_them() -> None:
    import typing

    from anthropic.types import message_create_params
    from anthropic.types.beta import message_create_params as beta_params

    from services.proxy.adapters import anthropic_check as ac

    stable = set(typing.get_type_hints(message_create_params.MessageCreateParamsBase))
    assert ac.BETA_TOP_LEVEL == set(typing.get_type_hints(beta_params.MessageCreateParamsBase)) - stable - {"betas"}
    body = {**BODY, "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}
    with pytest.raises(ac.Refused, match="context_management"):
        ac.check(body)
    ac.check(body, beta=True)
    upstream = {**body, "model": "claude-sonnet-4-5-20250929"}
    assert av.check_body(upstream, beta=True) is None and av.check_body(upstream) is not None
