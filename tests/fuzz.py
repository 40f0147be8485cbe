"""Fuzzing Routeur's HTTP edges: hypothesis strategies for requests (mostly valid bodies with one mutation,
plus junk) sent with tests/rawhttp.py (which sends what well-behaved clients refuse to: CR/LF or NUL in a
header, invalid UTF-8, unbalanced JSON), and the oracle every reply is judged by.

Each generated `Case` states what must happen: "ok" (valid by construction: 2xx), "refuse" (a 4xx) or "any"
(2xx/3xx/4xx). Never a 5xx; every error body has the route's error shape and no traceback or source path.
`kind` names the input class, so a test can show that each class was really sent.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from tests.rawhttp import Reply, request_bytes

# --------------------------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    kind: str  # the input class, e.g. "chat/max_tokens_bad", "header/crlf", "admin/topup_negative"
    service: str  # "proxy" or "billing"
    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    expect: str  # "ok" (2xx), "refuse" (4xx) or "any" (< 500)
    shape: str  # error shape: "openai", "anthropic", "page" (HTML form or OpenAI JSON) or "protocol"

    def raw(self) -> bytes:
        return request_bytes(self.method, self.target, headers=self.headers, body=self.body)


@dataclass(frozen=True)
class Targets:
    """What the strategies address: the fuzz key, the admin token and a sacrificial org and key to mutate."""

    organization: str
    api_key: str
    admin_token: str
    spare_org: str
    spare_key_id: str
    static_files: dict[str, bytes] = field(default_factory=dict)  # dashboard asset URL path -> bytes


# Models by wire format (OpenAI pass-through, Anthropic, Gemini, OpenAI-compatible hosts) with their output caps.
CHAT_MODELS = {"gpt-4o-mini": 16384, "claude-haiku-4.5": 64000, "gemini-2.5-flash": 65536, "deepseek-chat": 8192,
               "llama-3.1-8b": 8192}
MESSAGES_MODELS = ("claude-haiku-4.5", "gpt-4o-mini", "gemini-2.5-flash")
EMBEDDING_MODELS = ("text-embedding-3-small", "gemini-embedding-001")
OPTIONAL_PARAMS = ("reasoning_effort", "response_format", "tool_choice", "n", "seed", "logprobs", "top_logprobs",
                   "logit_bias", "parallel_tool_calls", "modalities", "service_tier", "metadata", "prediction",
                   "audio", "store", "functions", "function_call", "stop", "user", "dimensions", "verbosity",
                   "web_search_options", "max_completion_tokens")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")

# ------------------------------------------------------------------------------------------ value strategies


@functools.cache
def _choose(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def choose(options: Sequence[Any]) -> st.SearchStrategy[Any]:
    """st.sampled_from, built once per option list (building strategies is most of a case's generation time)."""
    options = tuple(options)
    try:
        return _choose(options)
    except TypeError:  # unhashable options
        return st.sampled_from(options)


_letters = choose("AbcXyzQ")
# Any Unicode text (control characters and NUL included, escaped by json.dumps), never blank: a blank text block
# is a 400 at Anthropic, which is a different test.
prose = st.builds(operator.add, _letters, st.text(st.characters(codec="utf-8"), max_size=40))
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
not_string = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
              | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=3))
not_list = st.one_of(scalars, st.dictionaries(st.text(max_size=5), scalars, max_size=3))
not_object = st.one_of(scalars, st.lists(scalars, max_size=3))
not_bool = st.one_of(st.integers(), st.text(max_size=5), st.lists(scalars, max_size=2),
                     st.floats(allow_nan=False, allow_infinity=False))
not_number = st.one_of(st.text(max_size=5), st.booleans(), st.lists(scalars, max_size=2), st.dictionaries(
    st.text(max_size=3), scalars, max_size=2))
unit_interval = st.floats(0, 1)
text_parts = st.lists(st.builds(lambda text: {"type": "text", "text": text}, prose), min_size=1, max_size=3)
contents = st.one_of(prose, text_parts)
stops = st.lists(prose, min_size=1, max_size=4)
tool_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
key_like = st.from_regex(r"[A-Za-z0-9_-]{0,60}", fullmatch=True)

# ------------------------------------------------------------------------------------------ valid bodies


@st.composite
def chat_body(draw: st.DrawFn) -> dict[str, Any]:
    """A valid chat-completions body for one of CHAT_MODELS (every parameter within every provider's range)."""
    model = draw(choose(sorted(CHAT_MODELS)))
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(prose)})
    content = draw(contents)
    messages.append({"role": "user", "content": content})
    if draw(st.booleans()):
        messages += [{"role": "assistant", "content": draw(prose)}, {"role": "user", "content": draw(prose)}]
    body: dict[str, Any] = {"model": model, "messages": messages}
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 256))
    sampler = draw(choose(["temperature", "top_p", None]))  # Anthropic takes one of the two
    if sampler:
        body[sampler] = draw(unit_interval)
    if draw(st.booleans()):
        body["stream"] = True
        if draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    if draw(st.booleans()):
        body["user"] = draw(prose)
    if draw(st.booleans()):
        body["stop"] = draw(stops)
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {
            "name": draw(tool_names), "description": draw(prose),
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    return body


@st.composite
def messages_body(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Anthropic Messages body."""
    content = draw(contents)
    body: dict[str, Any] = {"model": draw(choose(MESSAGES_MODELS)), "max_tokens": draw(st.integers(1, 256)),
                            "messages": [{"role": "user", "content": content}]}
    if draw(st.booleans()):
        body["system"] = draw(prose)
    if draw(st.booleans()):
        body["temperature"] = draw(unit_interval)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        body["stop_sequences"] = draw(stops)
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(prose)}
    return body


@st.composite
def embeddings_body(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(choose(EMBEDDING_MODELS))
    inputs = [prose, st.lists(prose, min_size=1, max_size=4)]
    if model.startswith("text-embedding"):  # token ids are OpenAI's only
        inputs.append(st.lists(st.integers(0, 100_000), min_size=1, max_size=8))
    body: dict[str, Any] = {"model": model, "input": draw(st.one_of(inputs))}
    if draw(st.booleans()):
        body["encoding_format"] = draw(choose(["float", "base64"]))
    return body


# ----------------------------------------------------------------------- loosely shaped bodies (any JSON inside)

_junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=5)
_loose_part = st.fixed_dictionaries({"type": choose(["text", "image_url", "input_audio", "file", "refusal", "x"])},
                                    optional={"text": _junk, "image_url": _junk, "file": _junk, "refusal": _junk})
_loose_call = st.fixed_dictionaries({}, optional={
    "id": _junk, "type": choose(["function", "custom"]) | _junk, "index": _junk,
    "function": st.fixed_dictionaries({}, optional={"name": _junk, "arguments": _junk}) | _junk})
_loose_content = st.one_of(_junk, st.lists(_loose_part, max_size=3))
_loose_message = st.one_of(
    st.fixed_dictionaries({"role": choose(["user", "system", "developer"]), "content": _loose_content},
                          optional={"name": _junk}),
    st.fixed_dictionaries({"role": st.just("assistant")}, optional={
        "content": _loose_content, "tool_calls": _junk | st.lists(_loose_call, max_size=2), "function_call": _junk,
        "refusal": _junk}),
    st.fixed_dictionaries({"role": choose(["tool", "function"])}, optional={
        "content": _loose_content, "tool_call_id": _junk, "name": _junk}))
_loose_tool = st.fixed_dictionaries({"type": choose(["function", "x"]) | _junk}, optional={
    "function": st.fixed_dictionaries({}, optional={"name": _junk, "description": _junk, "parameters": _junk,
                                                    "strict": _junk}) | _junk})
loose_chat_body = st.fixed_dictionaries(
    {"model": choose(sorted(CHAT_MODELS)), "messages": st.lists(_loose_message, min_size=1, max_size=4)},
    optional={"tools": st.lists(_loose_tool, max_size=2) | _junk, "tool_choice": _junk | choose(
        ["auto", "none", "required"]), "response_format": _junk | st.fixed_dictionaries(
        {"type": choose(["json_object", "json_schema", "text"])}, optional={"json_schema": _junk}),
        "stop": _junk, "n": _junk, "seed": _junk, "logit_bias": _junk, "logprobs": _junk, "reasoning_effort": _junk,
        "parallel_tool_calls": _junk, "stream": st.booleans(), "max_tokens": st.integers(1, 100), "user": _junk})
_loose_block = st.fixed_dictionaries({"type": choose(["text", "image", "document", "tool_use", "tool_result",
                                                     "thinking", "x"])}, optional={
    "text": _junk, "source": _junk | st.fixed_dictionaries({"type": choose(["base64", "url", "text"])}, optional={
        "media_type": _junk, "data": _junk, "url": _junk}), "id": _junk, "name": _junk, "input": _junk,
    "tool_use_id": _junk, "content": _junk | st.lists(st.fixed_dictionaries({"type": choose(["text", "image"])},
                                                                            optional={"text": _junk}), max_size=2),
    "cache_control": _junk})
loose_messages_body = st.fixed_dictionaries(
    {"model": choose(MESSAGES_MODELS), "max_tokens": st.integers(1, 100), "messages": st.lists(
        st.fixed_dictionaries({"role": choose(["user", "assistant"]), "content": _junk | st.lists(
            _loose_block, max_size=3)}), min_size=1, max_size=3)},
    optional={"system": _junk | st.lists(_loose_block, max_size=2), "tools": _junk | st.lists(
        st.fixed_dictionaries({}, optional={"name": _junk, "description": _junk, "input_schema": _junk,
                                            "type": _junk}), max_size=2),
        "tool_choice": _junk | st.fixed_dictionaries({"type": choose(["auto", "any", "tool", "none"])},
                                                     optional={"name": _junk}),
        "metadata": _junk, "stop_sequences": _junk, "temperature": _junk, "stream": st.booleans()})


# ------------------------------------------------------------------------------------------ mutations

Mutation = Callable[[st.DrawFn, dict[str, Any]], None]


def _message(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = body["messages"]
    return messages[draw(st.integers(0, len(messages) - 1))]


def _set(name: str, values: st.SearchStrategy[Any]) -> Mutation:
    def mutate(draw: st.DrawFn, body: dict[str, Any]) -> None:
        body[name] = draw(values)
    return mutate


def _translated(mutation: Mutation) -> Mutation:
    """`mutation` on a body for a model whose route translates /v1/messages (Claude routes take top_k and thinking
    natively; the translation cannot carry them)."""
    def mutate(draw: st.DrawFn, body: dict[str, Any]) -> None:
        body["model"] = draw(choose([m for m in MESSAGES_MODELS if not m.startswith("claude")]))
        mutation(draw, body)
    return mutate


def _drop(name: str) -> Mutation:
    def mutate(draw: st.DrawFn, body: dict[str, Any]) -> None:
        body.pop(name, None)
    return mutate


def _set_in_message(name: str, values: st.SearchStrategy[Any]) -> Mutation:
    def mutate(draw: st.DrawFn, body: dict[str, Any]) -> None:
        _message(draw, body)[name] = draw(values)
    return mutate


def _replace_message(values: st.SearchStrategy[Any]) -> Mutation:
    def mutate(draw: st.DrawFn, body: dict[str, Any]) -> None:
        messages = body["messages"]
        messages[draw(st.integers(0, len(messages) - 1))] = draw(values)
    return mutate


def _over_cap(draw: st.DrawFn, body: dict[str, Any]) -> None:
    cap = CHAT_MODELS[body["model"]]
    body[draw(choose(["max_tokens", "max_completion_tokens"]))] = draw(
        st.one_of(st.integers(cap + 1, 10**9), st.integers(10**9, 10**30).map(lambda n: n * 10**10)))


def _bad_range(draw: st.DrawFn, body: dict[str, Any]) -> None:
    name, low, high = draw(choose([("temperature", 0, 2), ("top_p", 0, 1), ("presence_penalty", -2, 2),
                                            ("frequency_penalty", -2, 2)]))
    body[name] = draw(st.one_of(st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False),
                                st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False),
                                not_number))


def _stream_options_without_stream(draw: st.DrawFn, body: dict[str, Any]) -> None:
    body["stream"] = draw(choose([False, None]))
    body["stream_options"] = {"include_usage": draw(st.booleans())}


def _unknown_model(draw: st.DrawFn, body: dict[str, Any]) -> None:
    body["model"] = "zz-" + draw(st.text(max_size=20))


CHAT_BREAKERS: dict[str, Mutation] = {
    "drop_model": _drop("model"),
    "drop_messages": _drop("messages"),
    "model_type": _set("model", not_string),
    "model_empty": _set("model", st.just("")),
    "model_unknown": _unknown_model,
    "model_embedding": _set("model", choose(EMBEDDING_MODELS)),
    "messages_type": _set("messages", not_list),
    "messages_empty": _set("messages", st.just([])),
    "message_type": _replace_message(not_object),
    "role_bad": _set_in_message("role", st.one_of(not_string, st.text(max_size=10).filter(lambda r: r not in ROLES))),
    "content_type": _set_in_message("content", st.one_of(st.booleans(), st.integers(),
                                                         st.floats(allow_nan=False, allow_infinity=False),
                                                         st.dictionaries(st.text(max_size=5), scalars, max_size=3))),
    "content_part": _set_in_message("content", st.lists(st.one_of(scalars, st.just({"text": "no type"})),
                                                        min_size=1, max_size=3)),
    "stream_type": _set("stream", not_bool),
    "max_tokens_bad": _set("max_tokens", st.one_of(st.integers(max_value=0), st.booleans(), st.text(max_size=5),
                                                   st.floats(allow_nan=False, allow_infinity=False))),
    "max_tokens_absurd": _over_cap,
    "range_bad": _bad_range,
    "stream_options_type": _set("stream_options", st.one_of(st.booleans(), st.integers(), st.text(max_size=5),
                                                            st.lists(scalars, max_size=2))),
    "stream_options_alone": _stream_options_without_stream,
    "tools_bad": _set("tools", st.one_of(st.booleans(), st.integers(), st.text(max_size=5),
                                         st.dictionaries(st.text(max_size=3), scalars, max_size=2),
                                         st.lists(not_object, min_size=1, max_size=2))),
}

MESSAGES_BREAKERS: dict[str, Mutation] = {
    "drop_model": _drop("model"),
    "drop_max_tokens": _drop("max_tokens"),
    "drop_messages": _drop("messages"),
    "model_type": _set("model", not_string),
    "model_unknown": _unknown_model,
    "max_tokens_bad": _set("max_tokens", st.one_of(st.integers(max_value=0), st.booleans(), st.text(max_size=5))),
    "max_tokens_absurd": _set("max_tokens", st.integers(10**6, 10**30)),
    "messages_type": _set("messages", not_list),
    "messages_empty": _set("messages", st.just([])),
    "message_type": _replace_message(not_object),
    "role_bad": _set_in_message("role", st.one_of(not_string, choose(["tool", "developer", "x"]))),
    "content_type": _set_in_message("content", st.one_of(st.none(), st.booleans(), st.integers(),
                                                         st.dictionaries(st.text(max_size=5), scalars, max_size=3))),
    "block_bad": _set_in_message("content", st.one_of(
        st.lists(not_object, min_size=1, max_size=2),
        st.builds(lambda text: [{"type": "text", "text": text}], not_string.filter(lambda v: v is not None)))),
    "system_type": _set("system", st.one_of(st.booleans(), st.integers(), st.dictionaries(
        st.text(max_size=3), scalars, max_size=2), st.lists(not_object, min_size=1, max_size=2))),
    "temperature_bad": _set("temperature", st.one_of(st.floats(min_value=1, exclude_min=True, allow_nan=False,
                                                               allow_infinity=False),
                                                     st.floats(max_value=0, exclude_max=True, allow_nan=False,
                                                               allow_infinity=False), not_number)),
    "stream_type": _set("stream", not_bool),
    "stop_sequences_bad": _set("stop_sequences", st.one_of(st.text(max_size=5), st.integers(),
                                                           st.lists(not_string, min_size=1, max_size=2))),
    "metadata_bad": _set("metadata", st.one_of(st.integers(), st.text(max_size=5), st.lists(scalars, max_size=2))),
    "tools_bad": _set("tools", st.one_of(st.integers(), st.text(max_size=5), st.lists(not_object, min_size=1,
                                                                                         max_size=2))),
    "top_k": _translated(_set("top_k", st.integers(0, 500))),
    "thinking": _translated(_set("thinking", st.just({"type": "enabled", "budget_tokens": 1024}))),
}

EMBEDDINGS_BREAKERS: dict[str, Mutation] = {
    "drop_model": _drop("model"),
    "drop_input": _drop("input"),
    "model_type": _set("model", not_string),
    "model_unknown": _unknown_model,
    "model_chat": _set("model", choose(sorted(CHAT_MODELS))),
    "input_empty": _set("input", choose(["", [], [""], [[]]])),
    "input_type": _set("input", st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                                          st.dictionaries(st.text(max_size=3), scalars, max_size=2),
                                          st.lists(st.one_of(st.booleans(), st.none(), st.floats(
                                              allow_nan=False, allow_infinity=False)), min_size=1, max_size=3))),
    "input_mixed": _set("input", st.just(["a", 1])),
    "input_tokens_bad": _set("input", st.lists(st.integers(max_value=-1), min_size=1, max_size=3)),
    "encoding_format_bad": _set("encoding_format", st.one_of(st.text(max_size=6).filter(
        lambda v: v not in ("float", "base64")), st.integers(), st.booleans())),
    "dimensions_bad": _set("dimensions", st.one_of(st.integers(max_value=0), st.booleans(), st.text(max_size=4))),
}


def _neutral_chat(draw: st.DrawFn, body: dict[str, Any]) -> None:
    """Changes that keep a chat body valid: new text anywhere (any Unicode, NUL included), sampling in range."""
    for _ in range(draw(st.integers(0, 2))):
        change = draw(choose(["text", "max_tokens", "sampler", "user"]))
        if change == "text":
            _message(draw, body)["content"] = draw(prose)
        elif change == "max_tokens":
            body["max_completion_tokens" if draw(st.booleans()) else "max_tokens"] = draw(
                st.integers(1, min(CHAT_MODELS[body["model"]], 4096)))
        elif change == "sampler":
            body.pop("temperature", None)
            body.pop("top_p", None)
            body[draw(choose(["temperature", "top_p"]))] = draw(unit_interval)
        else:
            body["user"] = draw(prose)


# --------------------------------------------------------------------------------- bodies as bytes

SURROGATE = "ROUTEUR_LONE_SURROGATE"


def _encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


BYTE_BREAKERS = ("truncated", "invalid_utf8", "nul_byte", "lone_surrogate", "deep_nesting", "not_object",
                 "junk_bytes", "junk_json", "empty")


@st.composite
def broken_bytes(draw: st.DrawFn, body: dict[str, Any], hows: Sequence[str] = BYTE_BREAKERS) -> tuple[str, bytes]:
    """A valid body's bytes broken at the byte level: never valid JSON, or nested past the proxy's limit
    (`junk_json` and `empty` are invalid for the model routes only)."""
    how = draw(choose(hows))
    raw = _encode(body)
    if how == "truncated":
        return how, raw[: draw(st.integers(1, len(raw) - 1))]
    if how in ("invalid_utf8", "nul_byte"):
        at = draw(st.integers(0, len(raw)))
        bad = b"\x00" if how == "nul_byte" else draw(choose(
            [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"]))
        return how, raw[:at] + bad + raw[at:]
    if how == "lone_surrogate":
        body = dict(body, user=SURROGATE)
        return how, _encode(body).replace(SURROGATE.encode(), draw(choose([b"\\ud800", b"\\udfff",
                                                                                    b"\\ud83d\\u0041"])))
    if how == "deep_nesting":
        depth = draw(st.integers(129, 20_000))
        opener, closer = draw(choose([(b"[", b"]"), (b'{"a":', b"}")]))
        return how, raw[:-1] + b', "nested": ' + opener * depth + b"1" + closer * depth + b"}"
    if how == "not_object":
        return how, _encode(draw(st.one_of(scalars, st.lists(json_values, max_size=3))))
    if how == "junk_bytes":
        return how, draw(st.binary(min_size=1, max_size=200))
    if how == "junk_json":
        return how, _encode(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5)))
    return how, b""


# --------------------------------------------------------------------------------- headers


HEADER_KINDS = ("wrong", "missing", "non_ascii", "basic", "empty_bearer", "crlf", "nul", "bad_name", "obs_fold")
_non_ascii = st.binary(min_size=1, max_size=6).map(lambda raw: bytes(c | 0x80 for c in raw))


@st.composite
def auth_headers(draw: st.DrawFn, key: str, choice: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """(expect, headers): the right credential ("good", "x_api_key"), a wrong one (→ 401), or one of the
    HEADER_KINDS aiohttp cannot parse ("protocol": CR/LF, NUL, a bad header name, an obsolete line fold)."""
    good = [(b"Authorization", b"Bearer " + key.encode())]
    if choice == "good":
        return "ok", good
    if choice == "x_api_key":
        return "ok", [(b"x-api-key", key.encode())]
    if choice == "wrong":
        return "refuse", [(b"Authorization", b"Bearer rk-" + draw(key_like).encode())]
    if choice == "missing":
        return "refuse", []
    if choice == "non_ascii":
        return "refuse", [(b"Authorization", b"Bearer " + key.encode()[:10] + draw(_non_ascii))]
    if choice == "basic":
        return "refuse", [(b"Authorization", b"Basic " + key.encode())]
    if choice == "empty_bearer":
        return "refuse", [(b"Authorization", b"Bearer ")]
    # Unparseable HTTP: aiohttp refuses it before any route (a 400 without our JSON; see services/proxy/errors.py)
    if choice == "bad_name":
        return "protocol", [*good, (draw(choose([b"Bad Name", b"X\x00", b"\xff", b"(x)"])), b"v")]
    value = {"crlf": choose([b"a\rb", b"a\nb", b"a\r\nno-colon", b"\r\r"]),
             "nul": choose([b"a\x00b", b"\x00", b"\x01\x7f"]), "obs_fold": st.just(b"a\r\n folded")}[choice]
    if draw(st.booleans()):
        return "protocol", [(b"Authorization", b"Bearer " + key.encode() + draw(value))]
    return "protocol", [*good, (b"X-Fuzz", draw(value))]


# --------------------------------------------------------------------------------- the request classes

LOOSE = {"chat": loose_chat_body, "messages": loose_messages_body}
ROUTES = {"chat": ("/v1/chat/completions", chat_body, CHAT_BREAKERS),
          "messages": ("/v1/messages", messages_body, MESSAGES_BREAKERS),
          "embeddings": ("/v1/embeddings", embeddings_body, EMBEDDINGS_BREAKERS)}
_new_keys = st.text(min_size=1, max_size=10)


@st.composite
def model_route_case(draw: st.DrawFn, targets: Targets, route: str, kind: str, header: str = "good") -> Case:
    """A POST to /v1/chat/completions, /v1/messages or /v1/embeddings. `kind`: "valid" (any neutral change),
    a breaker of the route (one field made invalid), one of BYTE_BREAKERS, "param_junk" (a documented optional
    parameter with any JSON value), "unknown_field" or "loose" (the route's structure with any JSON in every
    field: tool calls, content parts, blocks...); the last three may be served or refused, never a 5xx."""
    path, make, breakers = ROUTES[route]
    body = draw(LOOSE[route] if kind == "loose" else make())
    expect = "refuse"
    if kind == "loose":
        raw, expect = _encode(body), "any"
    elif kind == "valid":
        if route == "chat":
            _neutral_chat(draw, body)
        raw, expect = _encode(body), "ok"
    elif kind in breakers:
        breakers[kind](draw, body)
        raw = _encode(body)
    elif kind in BYTE_BREAKERS:
        raw = draw(broken_bytes(body, (kind,)))[1]
    elif kind == "param_junk":
        body[draw(choose(OPTIONAL_PARAMS))] = draw(json_values)
        raw, expect = _encode(body), "any"
    else:
        assert kind == "unknown_field", kind
        body[draw(_new_keys.filter(lambda name: name not in body))] = draw(json_values)
        raw, expect = _encode(body), "any"
    header_expect, headers = draw(auth_headers(targets.api_key, header))
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"Routeur-Trace", b"true"))
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"Content-Type", draw(choose([b"application/json", b"text/plain", b"x/y"]))))
    if route == "messages" and draw(st.booleans()):
        headers.append((b"anthropic-version", b"2023-06-01"))
    shape = "protocol" if header_expect == "protocol" else ("anthropic" if route == "messages" else "openai")
    label = f"{route}/{kind}" if header == "good" else f"header/{header}"
    return Case(label, "proxy", "POST", path, tuple(headers), raw, _combine(header_expect, expect), shape)


def _combine(header_expect: str, body_expect: str) -> str:
    return "refuse" if header_expect in ("refuse", "protocol") else body_expect


path_segments = st.one_of(
    choose(["..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fservice.py", "..%5c..%5cwin.ini",
                     "%00", "%ff%fe", "%c0%ae%c0%ae%2f", "....//....//etc/passwd", "%252e%252e%252f", ".%2e/.%2e/",
                     "../../../../../../etc/passwd", "..;/", "%u002e%u002e", "js/../../service.py", "/etc/passwd",
                     "01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FA", "x" * 500, "app.css", "js/logs.js"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
    st.lists(choose(["..", ".", "js", "vendor", "%2e%2e", "etc", "passwd", "app.css", ""]),
             min_size=1, max_size=6).map("/".join),
)
QUERY_NAMES = ("limit", "cursor", "model", "provider", "status_code", "api_key_id", "since_ms", "until_ms",
               "group_by", "bucket", "has_fallback", "organization_id", "route_reason", "org", "expires", "sig")
query_values = st.one_of(st.text(max_size=20), st.integers(-(10**20), 10**20).map(str),
                         choose(["-1", "0", "501", "99999999999999999999", "1e3", "true", "null", "' OR 1=1",
                                          "%00", "model", "key", "day", "hour", "..", "\x00", "\u202e"]))


READ_ROUTES = ("traces", "payloads", "logs", "usage", "models", "static", "dashboard", "keys_api", "wrong_method")
_queries = st.lists(st.tuples(choose(QUERY_NAMES), query_values), max_size=4).map(urlencode)


@st.composite
def read_case(draw: st.DrawFn, targets: Targets, route: str) -> Case:
    """A GET on a read route or the dashboard (one of READ_ROUTES) with hostile path segments and queries, or a
    method a route does not take."""
    segment, query = draw(path_segments), draw(_queries)
    headers: tuple[tuple[bytes, bytes], ...] = ((b"Authorization", b"Bearer " + targets.api_key.encode()),)
    shape, expect = "openai", "any"
    if route == "traces":
        target, expect = f"/v1/traces/{segment}", "refuse"
    elif route == "payloads":
        target, expect, headers = f"/v1/payloads/{segment}?{query}", "refuse", ()
    elif route in ("logs", "usage", "models"):
        target = f"/v1/{route}?{query}"
    elif route == "static":
        target = f"/dashboard/static/{segment}"
    elif route == "dashboard":
        target, shape = f"/dashboard/{segment}?{query}", "page"
    elif route == "keys_api":
        target = f"/dashboard/api/keys?{query}"
    else:
        method = draw(choose(["PUT", "DELETE", "PATCH", "GET"]))
        path = draw(choose(["/v1/chat/completions", "/v1/embeddings", "/v1/messages"]))
        return Case("read/wrong_method", "proxy", method, path, headers, b"", "refuse",
                    "anthropic" if path == "/v1/messages" else "openai")
    return Case(f"read/{route}", "proxy", "GET", target, headers, b"", expect, shape)


def _money(low: str, high: str) -> st.SearchStrategy[str]:
    return st.decimals(Decimal(low), Decimal(high), places=2, allow_nan=False, allow_infinity=False).map(str)


BAD_AMOUNTS = st.one_of(
    choose(["-1", "0", "-0", "NaN", "Infinity", "-Infinity", "1e999999999", "1E-999999999", "1000000001",
            "0.0000000000001", "", "ten", "1,5", "0x10", "1e9999", "sNaN"]),
    st.integers(max_value=0), st.booleans(), st.none(), st.lists(scalars, max_size=2))
BAD_LIMITS = st.one_of(st.integers(max_value=0), st.integers(min_value=10**9 + 1, max_value=10**30), st.booleans(),
                       st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False))
_too_long_name = st.text(min_size=201, max_size=260)


@dataclass(frozen=True)
class AdminAction:
    """One admin route: its method and path (`{org}`/`{key}` = the spare ones), valid bodies, and for each
    field the values that must be refused. With no valid body, every generated call must be refused."""

    method: str
    path: str
    valid: st.SearchStrategy[dict[str, Any]] | None
    bad: dict[str, st.SearchStrategy[Any]]


ADMIN_ACTIONS = {
    "topup": AdminAction("POST", "/v1/admin/organizations/{org}/topups", st.fixed_dictionaries(
        {"amount_usd": _money("0.01", "100")}, optional={"note": prose}), {
        "amount_usd": BAD_AMOUNTS, "note": st.one_of(st.integers(), _too_long_name),
        "topup_id": st.one_of(st.integers(), st.just(""), st.text(min_size=1, max_size=5).map(lambda v: v + " /"))}),
    "adjust": AdminAction("POST", "/v1/admin/organizations/{org}/adjustments", st.fixed_dictionaries(
        {"amount_usd": st.tuples(choose(["-", ""]), _money("0.01", "5")).map("".join), "reason": prose}), {
        "amount_usd": st.one_of(choose(["0", "-0", "NaN", "Infinity", "1e999999999", "-1000000001",
                                        "0.0000000000001", "", "ten"]), st.booleans(), st.none()),
        "reason": st.one_of(st.just("   "), st.integers(), _too_long_name)}),
    "patch_key": AdminAction("PATCH", "/v1/admin/keys/{key}", st.fixed_dictionaries({}, optional={
        "name": prose, "rate_limit_rpm": st.one_of(st.none(), st.integers(1, 10**9)),
        "token_limit_tpm": st.one_of(st.none(), st.integers(1, 10**9)),
        "max_spend_usd": st.one_of(st.none(), _money("0", "1000")), "period": choose(["total", "day", "month"]),
        "enabled": st.booleans(), "archive_payloads": st.booleans(), "dlp_policy": st.just("off")}), {
        "rate_limit_rpm": BAD_LIMITS, "token_limit_tpm": BAD_LIMITS,
        "max_spend_usd": st.one_of(choose(["-1", "NaN", "Infinity", "1e999999999", "1000000001", "0.0000000000001",
                                           "", "ten"]), st.integers(max_value=-1), st.booleans()),
        "period": st.one_of(st.text(max_size=6).filter(lambda v: v not in ("total", "day", "month")), st.integers()),
        "name": st.one_of(st.integers(), _too_long_name), "enabled": not_bool,
        "dlp_policy": st.one_of(choose(["", "UPPER", "a b", "x" * 40, "../x"]), st.integers())}),
    "patch_org": AdminAction("PATCH", "/v1/admin/organizations/{org}", st.fixed_dictionaries(
        {"archive_payloads": st.booleans(), "dlp_policy": st.just("off")}), {
        "archive_payloads": not_bool, "dlp_policy": st.one_of(choose(["", "A", "-x"]), st.integers())}),
    # never a valid body: a fuzz run must not fill billing with organizations and keys
    "create_org": AdminAction("POST", "/v1/admin/organizations", None, {
        "id": st.one_of(st.text(max_size=20).map(lambda v: "bad " + v), st.just("org_"), st.just("org_" + "x" * 65),
                        st.integers(), st.lists(scalars, max_size=2))}),
    "create_key": AdminAction("POST", "/v1/admin/organizations/{org}/keys", None, {
        "rate_limit_rpm": BAD_LIMITS, "token_limit_tpm": BAD_LIMITS, "period": st.text(max_size=4),
        "max_spend_usd": choose(["-1", "NaN", "1e999999999", "-0.5"]),
        "secret": st.one_of(st.text(max_size=40), st.just("rk-short"))}),
}
_admin_ids = st.tuples(choose(["/v1/admin/organizations/", "/v1/admin/keys/"]), path_segments).map("".join)
_unknown_keys = st.text(min_size=1, max_size=8)


@st.composite
def admin_case(draw: st.DrawFn, targets: Targets, kind: str) -> Case:
    """A call to billing's admin API. `kind`: an ADMIN_ACTIONS name (a valid change to the spare org or key),
    "<action>_<field>_bad", "<action>_unknown_field", "bytes_<how>", "auth_<header kind>", "auth_api_key",
    or "get" (hostile ids in the path)."""
    action_name, expect, header = kind, "refuse", "good"
    if kind.startswith(("bytes_", "auth_")):
        action_name = draw(choose(sorted(name for name, a in ADMIN_ACTIONS.items() if a.valid is not None)))
        header = kind.removeprefix("auth_") if kind.startswith("auth_") else "good"
    elif kind.endswith("_unknown_field"):
        action_name = kind.removesuffix("_unknown_field")
    elif kind.endswith("_bad"):
        action_name = next(name for name in ADMIN_ACTIONS if kind.startswith(name + "_"))
    body: dict[str, Any] | None = None
    if action_name == "get":
        method, target, expect = "GET", draw(_admin_ids), "any"
    else:
        action = ADMIN_ACTIONS[action_name]
        method, target = action.method, action.path.format(org=targets.spare_org, key=targets.spare_key_id)
        body = {} if action.valid is None else draw(action.valid)
        if kind == action_name:
            expect = "ok"
        elif kind.endswith("_bad"):
            name = kind.removeprefix(action_name + "_").removesuffix("_bad")
            body[name] = draw(action.bad[name])
        elif kind.endswith("_unknown_field"):
            body[draw(_unknown_keys.filter(lambda k: k not in body))] = draw(scalars)
        elif kind.startswith("auth_"):
            expect = "ok"
    raw = b"" if body is None else _encode(body)
    if kind.startswith("bytes_"):
        raw = draw(broken_bytes({"x": 1}, (kind.removeprefix("bytes_"),)))[1]
    if header == "api_key":
        header_expect, headers = "refuse", [(b"Authorization", b"Bearer " + targets.api_key.encode())]
    elif header == "x_api_key":
        header_expect, headers = "refuse", [(b"x-api-key", targets.admin_token.encode())]
    else:
        header_expect, headers = draw(auth_headers(targets.admin_token, header))
    shape = "protocol" if header_expect == "protocol" else "openai"
    return Case(f"admin/{kind}", "billing", method, target, tuple(headers), raw, _combine(header_expect, expect),
                shape)


def classes() -> list[str]:
    """Every input class, once; valid requests several times over, so that success is tested as much as refusal."""
    out = []
    for route, (_, _, breakers) in ROUTES.items():
        out += [f"{route}/valid"] * {"chat": 8, "messages": 4, "embeddings": 3}[route]
        out += [f"{route}/{name}" for name in (*breakers, *BYTE_BREAKERS, "unknown_field")]
        out += [f"{route}/param_junk"] if route != "messages" else []
        out += [f"{route}/loose"] if route in LOOSE else []
    out += [f"header/{name}" for name in HEADER_KINDS] + ["header/x_api_key"]
    out += [f"read/{route}" for route in READ_ROUTES for _ in range(2)]
    for name, action in ADMIN_ACTIONS.items():
        out += [f"admin/{name}", f"admin/{name}_unknown_field"] if action.valid is not None else []
        out += [f"admin/{name}_{field}_bad" for field in action.bad]
    out += [f"admin/bytes_{how}" for how in BYTE_BREAKERS[:-2]]  # junk JSON and an empty body can be valid here
    out += [f"admin/auth_{name}" for name in (*HEADER_KINDS, "api_key", "x_api_key")] + ["admin/get"] * 2
    return out


def case_of(kind: str, targets: Targets) -> st.SearchStrategy[Case]:
    """The strategy for one input class of `classes()`."""
    family, _, name = kind.partition("/")
    if family in ROUTES:
        return model_route_case(targets, family, name)
    if family == "header":  # a valid body on any model route, under a bad or odd header
        if name == "x_api_key":
            return model_route_case(targets, "messages", "valid", header=name)
        return choose(sorted(ROUTES)).flatmap(lambda route: model_route_case(targets, route, "valid", header=name))
    if family == "read":
        return read_case(targets, name)
    return admin_case(targets, name)


def sweeps(targets: Targets, size: int = 30) -> st.SearchStrategy[tuple[Case, ...]]:
    """About `size` classes of `classes()` (every n-th, so a slice mixes routes), one case each; which slice is
    drawn too. A run of N examples sends every class about N * size / len(classes()) times, each case drawn
    afresh. (One tuple of every class is too much data for one hypothesis example, and drawing each case's
    class at random leaves some classes unsent in a run.)"""
    kinds = classes()
    slices = -(-len(kinds) // size)
    return st.one_of(*(st.tuples(*(case_of(kind, targets) for kind in kinds[index::slices]))
                       for index in range(slices)))


# --------------------------------------------------------------------------------- the oracle

# A traceback, a source file in one (raw or JSON-escaped), the interpreter's or the checkout's directories.
_REPO = str(Path(__file__).resolve().parent.parent).encode()
_LEAKS = re.compile(rb'Traceback \(most recent call|File \\?"/|\.py\\?", line \d|/site-packages/|' + re.escape(_REPO))


def problems(case: Case, reply: Reply) -> list[str]:
    """Everything wrong with `reply` as the answer to `case` (empty when it is right)."""
    found = []
    status = reply.status
    if status == 0:
        found.append("no HTTP status line: the connection closed without an answer")
    elif status >= 500:
        found.append(f"HTTP {status}: a bad request must never be a server error")
    elif case.expect == "ok" and not 200 <= status < 300:
        found.append(f"HTTP {status} for a valid request")
    elif case.expect == "refuse" and not 400 <= status < 500:
        found.append(f"HTTP {status} for a request that must be refused with a 4xx")
    if leak := _LEAKS.search(reply.body):
        found.append(f"the body leaks {leak.group()!r}")
    if 400 <= status < 500 and case.shape != "protocol":
        found += _shape_problems(case.shape, reply)
    return found


def _shape_problems(shape: str, reply: Reply) -> list[str]:
    content_type = reply.headers.get("content-type", "")
    if shape == "page" and content_type.startswith("text/html"):
        return []
    body = reply.json()
    if shape == "anthropic":
        error = body.get("error") if isinstance(body, dict) else None
        if body is None or body.get("type") != "error" or not isinstance(error, dict) or not isinstance(
                error.get("type"), str) or not isinstance(error.get("message"), str):
            return [f"not an Anthropic error body: {reply.body[:200]!r}"]
        return []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not isinstance(
            error.get("type"), str) or not isinstance(error.get("code"), str):
        return [f"not an OpenAI error body {{error: {{message, type, code}}}}: {reply.body[:200]!r}"]
    return []
