"""Pure OpenAI wire helpers used on the proxy's hot path."""

from __future__ import annotations

import pytest

from services.proxy import openai_wire as wire
from services.proxy.errors import InvalidRequest

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


def test_valid_body_parses() -> None:
    assert wire.parse_body(BODY)["model"] == "m"
    edges = (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 2, "top_p": 0, '
             b'"frequency_penalty": -2}')
    assert wire.parse_body(edges)["temperature"] == 2


@pytest.mark.parametrize(("raw", "param"), [
    (b"{", None),
    (b"[]", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "m", "messages": []}', "messages"),
    (b'{"model": "m", "messages": ["hi"]}', "messages[0].role"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}', "temperature"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": -0.1}', "top_p"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 3}', "presence_penalty"),
    (b'\xff\xfe', None),
])
def test_invalid_bodies_name_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        wire.parse_body(raw)
    assert caught.value.param == param and caught.value.status == 400


def test_upstream_body_swaps_model_and_always_asks_for_stream_usage() -> None:
    body = wire.parse_body(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}')
    out = wire.upstream_body(body, "upstream-m")
    assert out["model"] == "upstream-m" and out["stream_options"] == {"include_usage": True}
    assert body["model"] == "m" and "stream_options" not in body
    assert not wire.wants_usage_chunk(body)


def test_split_events_keeps_partial_event_in_buffer() -> None:
    buffer = bytearray(b'data: {"a":1}\n\ndata: {"b"')
    assert wire.split_events(buffer) == [b'data: {"a":1}\n\n']
    buffer += b':2}\n\ndata: [DONE]\n\n'
    events = wire.split_events(buffer)
    assert events == [b'data: {"b":2}\n\n', b"data: [DONE]\n\n"] and not buffer
    assert wire.is_done(events[1])


def test_event_usage_reads_only_usage_chunks() -> None:
    assert wire.event_usage(b'data: {"choices":[{"delta":{}}],"usage":null}\n\n') == (None, False)
    usage, only = wire.event_usage(
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,'
        b'"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n')
    assert only and usage is not None and (usage.prompt_tokens, usage.cached_tokens, usage.total_tokens) == (5, 1, 7)


def test_upstream_error_body_is_normalised() -> None:
    assert wire.upstream_error_body(b"<html>bad gateway</html>", 502)["error"]["code"] == "upstream_error"
    body = wire.upstream_error_body(b'{"error": {"message": "slow down", "type": "rate_limit", "code": "rl"}}', 429)
    assert body["error"] == {"message": "slow down", "type": "rate_limit", "param": None, "code": "rl"}
