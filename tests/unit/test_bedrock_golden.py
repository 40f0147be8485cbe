"""Golden samples nobody here wrote (tests/fixtures/providers/bedrock/SOURCES.md), replayed through the proxy's
Bedrock adapter: our reading of their bytes must be their documented meaning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catalog.schema import Capabilities
from services.proxy.adapters import bedrock as ad
from services.proxy.adapters.eventstream import EventStreamDecoder, EventStreamError
from tests.openapi import validate

GOLDEN = Path(__file__).parents[1] / "fixtures" / "providers" / "bedrock"
FRAMES = json.loads((GOLDEN / "botocore_eventstream_frames.json").read_text())
WALK = json.loads((GOLDEN / "tool_use_walkthrough.json").read_text())
CLAUDE = Capabilities(tool_result_status=True, forced_tool=True)


def _meaning(value: Any) -> Any:
    return bytes.fromhex(value["bytes_hex"]) if isinstance(value, dict) else value


@pytest.mark.parametrize("case", FRAMES["positive"], ids=lambda c: c["name"])
def test_botocores_frames_decode_to_their_documented_headers_and_payload(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["frame_hex"])
    decoder = EventStreamDecoder()
    messages = decoder.feed(frame[:7]) + decoder.feed(frame[7:])  # split mid-prelude, as a socket may
    ((headers, payload),) = messages
    assert {k: (v if not isinstance(v, bytearray) else bytes(v)) for k, v in headers.items()} == \
        {k: _meaning(v) for k, v in case["headers"].items()}
    assert payload == bytes.fromhex(case["payload_hex"])


@pytest.mark.parametrize("case", FRAMES["negative"], ids=lambda c: c["name"])
def test_frames_botocore_refuses_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes.fromhex(case["frame_hex"]))


def test_the_user_guides_tool_walkthrough_is_what_the_adapter_sends_and_reads() -> None:
    tool = WALK["step1_tool_config"]["tools"][0]["toolSpec"]
    ask = {"model": "claude-3.5-haiku", "messages": [{"role": "user", "content": "What is the most popular song on "
                                                                                 "WZPZ?"}],
           "tools": [{"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                                       "parameters": tool["inputSchema"]["json"]}}],
           "tool_choice": {"type": "function", "function": {"name": "top_song"}}}
    _, sent = ad.to_upstream(ask, "us.anthropic.claude-3-5-haiku-20241022-v1:0", capabilities=CLAUDE)
    assert sent == {"messages": WALK["step1_messages"],
                    "toolConfig": {**WALK["step1_tool_config"], "toolChoice": WALK["step1_tool_choice"]}}

    asked = ad.from_upstream(WALK["step2_response"], model="claude-3.5-haiku", created=1, response_id="chatcmpl-1")
    validate("CreateChatCompletionResponse", asked)
    choice = asked["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" and call["function"]["name"] == "top_song"
    assert json.loads(call["function"]["arguments"]) == {"sign": "WZPZ"}

    result = WALK["step3_tool_result"]["content"][0]["toolResult"]
    follow = {**ask, "messages": [*ask["messages"], choice["message"],
                                  {"role": "tool", "tool_call_id": call["id"],
                                   "content": json.dumps(result["content"][0]["json"])}]}
    follow.pop("tool_choice")
    _, sent = ad.to_upstream(follow, "us.anthropic.claude-3-5-haiku-20241022-v1:0", capabilities=CLAUDE)
    mine = sent["messages"][2]["content"][0]["toolResult"]
    # OpenAI tool content is a string: it travels as a text block where the guide sent a json block.
    assert mine["toolUseId"] == result["toolUseId"] and json.loads(mine["content"][0]["text"]) == \
        result["content"][0]["json"]
    assert sent["messages"][1] == WALK["step2_response"]["output"]["message"]

    answered = ad.from_upstream(WALK["step4_response"], model="claude-3.5-haiku")
    validate("CreateChatCompletionResponse", answered)
    assert answered["choices"][0]["message"]["content"] == \
        WALK["step4_response"]["output"]["message"]["content"][0]["text"]
    assert answered["choices"][0]["finish_reason"] == "stop"
