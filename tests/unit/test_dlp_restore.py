"""Restoring placeholders in answers: whole completions and SSE streams split at every possible point."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pytest

from services.proxy.dlp import BUILTIN_POLICIES, DlpError, StreamRestorer, apply, restore_completion, restore_text

MAPPING = {"[EMAIL_1]": "bob@x.com", "[EMAIL_2]": "jane@y.org", "[CARD_1]": "4111 1111 1111 1111",
           "[NOTE_1]": 'he said "hi"\nthen left \\ ok'}
HEAD = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-x"}


def event(*choices: dict[str, Any], **extra: Any) -> bytes:
    return b"data: " + json.dumps({**HEAD, "choices": list(choices), **extra}).encode() + b"\n\n"


def content(text: str | None, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {} if text is None else {"content": text}
    return {"index": index, "delta": delta, "finish_reason": finish}


def tool_args(text: str, index: int = 0, call: int = 0, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": {"tool_calls": [{"index": call, "function": {"arguments": text}}]},
            "finish_reason": finish}


def decode(raw: bytes) -> dict[str, Any]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return cast(dict[str, Any], json.loads(raw[6:]))


def streamed_text(events: list[bytes], index: int = 0) -> str:
    """The content of choice `index` over events (skips empty ones)."""
    out = []
    for raw in events:
        if not raw:
            continue
        for choice in decode(raw)["choices"]:
            if choice["index"] == index:
                out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


def streamed_arguments(events: list[bytes], call: int = 0) -> str:
    out = []
    for raw in events:
        if not raw:
            continue
        for choice in decode(raw)["choices"]:
            for tool_call in choice.get("delta", {}).get("tool_calls") or []:
                if tool_call["index"] == call:
                    out.append(tool_call.get("function", {}).get("arguments") or "")
    return "".join(out)


def splits(text: str) -> list[list[str]]:
    """`text` cut at every single point and at every pair of points."""
    n = len(text)
    cuts = [[i] for i in range(1, n)] + [[i, j] for i in range(1, n) for j in range(i + 1, n)]
    return [[text[a:b] for a, b in zip([0, *c], [*c, n], strict=True)] for c in cuts]


def test_restore_text() -> None:
    text = "to [EMAIL_1], not [EMAIL_3] or [email_1]"
    assert restore_text(text, MAPPING) == "to bob@x.com, not [EMAIL_3] or [email_1]"
    assert restore_text('{"n": "[NOTE_1]"}', MAPPING, is_json=True) == '{"n": "he said \\"hi\\"\\nthen left \\\\ ok"}'
    unchanged = "no placeholder [here]"
    assert restore_text(unchanged, MAPPING) is unchanged


def test_restore_completion_content_refusal_and_valid_tool_arguments() -> None:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Mailing [EMAIL_1].", "refusal": "not [CARD_1]",
            "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "send", "arguments": '{"to": "[EMAIL_1]", "note": "[NOTE_1]"}'}}]}},
        {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "nothing here"}},
    ], "usage": {"prompt_tokens": 3}}
    before = copy.deepcopy(body)
    out = restore_completion(body, MAPPING)
    assert body == before
    message = out["choices"][0]["message"]
    assert message["content"] == "Mailing bob@x.com." and message["refusal"] == "not 4111 1111 1111 1111"
    arguments = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"to": "bob@x.com", "note": MAPPING["[NOTE_1]"]}
    assert out["choices"][1] is body["choices"][1] and out["usage"] is body["usage"]
    assert restore_completion(body, {}) is body


def test_redact_then_restore_round_trip_keeps_tool_arguments_valid() -> None:
    arguments = json.dumps({"to": "bob@x.com", "key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"})
    request = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]}
    redaction = apply(request, BUILTIN_POLICIES["redact_restore"])
    sent = redaction.body["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"to": "[EMAIL_1]", "key": "[PRIVATE_KEY_1]"}
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "done", "tool_calls": [
        {"id": "d", "type": "function", "function": {"name": "f", "arguments": sent}}]}}]}
    restored = restore_completion(answer, redaction.mapping)
    assert json.loads(restored["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == json.loads(
        arguments)


@pytest.mark.parametrize("text", ["Contact [EMAIL_1] now", "[EMAIL_1][CARD_1]", "x [EMAIL_1]", "[NOTE_1]!",
                                  "a [EMA] b [EMPTY] [EMAIL_1"])
def test_stream_content_split_anywhere(text: str) -> None:
    expected = restore_text(text, MAPPING)
    for pieces in splits(text):
        restorer = StreamRestorer(MAPPING)
        events = [restorer.event(event(content(piece))) for piece in pieces]
        events.append(restorer.finish())
        assert streamed_text(events) == expected, pieces


def test_stream_tool_arguments_split_anywhere_stay_valid_json() -> None:
    arguments = '{"to": "[EMAIL_1]", "note": "[NOTE_1]"}'
    for pieces in splits(arguments):
        restorer = StreamRestorer(MAPPING)
        events = [restorer.event(event(tool_args(piece))) for piece in pieces]
        events.append(restorer.event(event(content(None, finish="tool_calls"))))
        assert restorer.finish() == b""
        assert json.loads(streamed_arguments(events)) == {"to": "bob@x.com", "note": MAPPING["[NOTE_1]"]}, pieces


def test_stream_holds_per_choice_and_per_tool_call() -> None:
    restorer = StreamRestorer(MAPPING)
    events = [
        restorer.event(event(content("to [EM", 0), content("pay [CA", 1))),
        restorer.event(event(tool_args('{"a": "[EMA', 0, call=0), tool_args('{"b": "[CARD', 0, call=1))),
        restorer.event(event(content("AIL_1]!", 0))),
        restorer.event(event(content("RD_1].", 1))),
        restorer.event(event(tool_args('IL_2]"}', 0, call=0), tool_args('_1]"}', 0, call=1))),
    ]
    assert streamed_text(events, 0) == "to bob@x.com!"
    assert streamed_text(events, 1) == "pay 4111 1111 1111 1111."
    assert json.loads(streamed_arguments(events, 0)) == {"a": "jane@y.org"}
    assert json.loads(streamed_arguments(events, 1)) == {"b": "4111 1111 1111 1111"}


def test_a_finish_reason_flushes_that_choice_only() -> None:
    restorer = StreamRestorer(MAPPING)
    restorer.event(event(content("see [EMA", 0), content("and [CA", 1)))
    flushed = decode(restorer.event(event(content(None, 0, finish="stop"))))
    assert flushed["choices"][0]["delta"] == {"content": "[EMA"} and flushed["choices"][0]["finish_reason"] == "stop"
    completed = decode(restorer.event(event(content("RD_1]", 1, finish="length"))))
    assert completed["choices"][0]["delta"]["content"] == "4111 1111 1111 1111"
    assert restorer.finish() == b""


def test_finish_returns_what_is_still_held_with_the_last_chunks_identity() -> None:
    restorer = StreamRestorer(MAPPING)
    assert restorer.finish() == b""
    restorer.event(event(content("bye [EMAIL_", 0), tool_args('{"x": "[CARD', 1, call=2)))
    chunk = decode(restorer.finish())
    assert {k: chunk[k] for k in HEAD} == HEAD
    assert chunk["choices"] == [
        {"index": 0, "delta": {"content": "[EMAIL_"}, "finish_reason": None},
        {"index": 1, "delta": {"tool_calls": [{"index": 2, "function": {"arguments": "[CARD"}}]},
         "finish_reason": None},
    ]
    assert restorer.finish() == b""


@pytest.mark.parametrize("raw", [
    b"data: [DONE]\n\n",
    b'data: {"error": {"message": "upstream [EMAIL_1] failed", "type": "server_error"}}\n\n',
    b'event: error\ndata: {"choices": [{"index": 0, "delta": {"content": "[EMAIL_1]"}}]}\n\n',
    b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n\n',
    b"data: {not json [EMAIL_1]\n\n",
    b": keep-alive [EMAIL_1]\n\n",
])
def test_other_events_pass_through_untouched(raw: bytes) -> None:
    restorer = StreamRestorer(MAPPING)
    restorer.event(event(content("held [EM")))
    assert restorer.event(raw) is raw


def test_fast_paths_return_the_same_bytes() -> None:
    restorer = StreamRestorer(MAPPING)
    no_bracket = b'data: {"choices": {"0": "x"}}\n\n'
    assert restorer.event(no_bracket) is no_bracket
    plain = event(content("a list [x] and [1] but no placeholder"))
    assert restorer.event(plain) is plain
    unknown = event(content("[EMAIL_7] is not ours"))
    assert restorer.event(unknown) is unknown
    empty = StreamRestorer({})
    raw = event(content("[EMAIL_1]"))
    assert empty.event(raw) is raw and empty.finish() == b""


def test_text_that_only_looks_like_a_placeholder_is_not_held_back() -> None:
    restorer = StreamRestorer(MAPPING)
    out = decode(restorer.event(event(content("list [EMAIL_"))))  # could still become [EMAIL_1]: held
    assert out["choices"][0]["delta"]["content"] == "list "
    raw = event(content("[X"))  # no placeholder starts with "[X": passes at once
    assert decode(StreamRestorer(MAPPING).event(raw))["choices"][0]["delta"]["content"] == "[X"


def test_odd_indexes_do_not_break_the_stream() -> None:
    restorer = StreamRestorer(MAPPING)
    out = restorer.event(b'data: {"choices": [{"index": [0], "delta": {"content": "[EMAIL_1] [EMA"}}]}\n\n')
    assert decode(out)["choices"][0]["delta"]["content"] == "bob@x.com "
    assert decode(restorer.finish())["choices"] == [{"index": 0, "delta": {"content": "[EMA"}, "finish_reason": None}]


def test_a_restore_failure_is_a_dlp_error() -> None:
    broken = cast(dict[str, str], {"[EMAIL_1]": 5})  # a value that is not text makes the engine itself fail
    body = {"choices": [{"index": 0, "message": {"content": "[EMAIL_1]"}}]}
    with pytest.raises(DlpError, match="TypeError"):
        restore_completion(body, broken)
    with pytest.raises(DlpError, match="TypeError"):
        StreamRestorer(broken).event(event(content("[EMAIL_1]")))
