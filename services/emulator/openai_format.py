"""OpenAI chat-completions/embeddings/models wire format: validation, deterministic replies, bodies, chunks."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

KNOWN_MODELS: tuple[tuple[str, int], ...] = (
    ("gpt-4o", 1715367049),
    ("gpt-4o-mini", 1721172741),
    ("gpt-4.1", 1744316542),
    ("gpt-4.1-mini", 1744318173),
    ("gpt-4.1-nano", 1744321707),
    ("gpt-5", 1754425777),
    ("gpt-5-mini", 1754425928),
    ("gpt-5-nano", 1754426384),
    ("o3", 1744225308),
    ("o3-mini", 1737146383),
    ("o4-mini", 1744225351),
    ("text-embedding-3-small", 1705948997),
    ("text-embedding-3-large", 1705953180),
    ("text-embedding-ada-002", 1671217299),
)
"""Model ids listed by GET /v1/models with their `created` times; requests may name any model."""

REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
"""Models whose usage reports hidden reasoning tokens (counted in completion_tokens and max budget)."""

MESSAGE_ROLES = ("system", "assistant", "user", "function", "tool", "developer")

IMAGE_PART_TOKENS = 85
"""Tokens charged per image content part (OpenAI's low-detail image cost)."""

_VOCAB = (
    "amber", "bright", "cedar", "delta", "ember", "fable", "garden", "harbor",
    "island", "jasper", "kettle", "lantern", "meadow", "north", "orchard", "pebble",
    "quartz", "river", "summit", "timber", "upland", "valley", "willow", "yonder",
    "zephyr", "across", "before", "calm", "distant", "early", "quiet", "gentle",
    "the", "a", "of", "and", "to", "in", "with", "under",
    "light", "stone", "cloud", "field", "path", "window", "signal", "bridge",
    "morning", "evening", "spring", "autumn", "copper", "silver", "golden", "velvet",
    "moves", "rests", "turns", "glows", "waits", "drifts", "echoes", "settles",
)  # fmt: skip
_SEED_ENCODER = msgspec.json.Encoder(order="deterministic")
_ENCODER = msgspec.json.Encoder()


class ToolCall(msgspec.Struct, frozen=True):
    """One function call the emulated model makes."""

    id: str
    name: str
    arguments: str


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The whole deterministic answer to one request; bodies and stream chunks are both built from it."""

    model: str
    content: str | None
    tool_call: ToolCall | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    system_fingerprint: str = "fp_emulator"


# --------------------------------------------------------------------------- errors


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid_json_body() -> dict[str, Any]:
    return error_body(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
    )


def missing_key_body() -> dict[str, Any]:
    return error_body(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using "
        "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )


def not_found_body(method: str, path: str) -> dict[str, Any]:
    return error_body(f"Invalid URL ({method} {path})")


def azure_missing_key_body() -> dict[str, Any]:
    """Azure OpenAI's 401 for a missing or wrong `api-key` (its own shape: `code` is the status as a string)."""
    return {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. "
                      "Make sure to provide a valid key for an active subscription and use a correct regional API "
                      "endpoint for your resource."}}


def azure_bearer_refused_body() -> dict[str, Any]:
    """Azure OpenAI's 401 for an `Authorization: Bearer` value that is not a valid Microsoft Entra ID token."""
    return {"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or has expired."}


def azure_not_found_body() -> dict[str, Any]:
    """Azure OpenAI's 404 for a path it does not serve, e.g. one without `api-version`."""
    return {"error": {"code": "404", "message": "Resource not found"}}


_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (emulated fault)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} on requests per min (RPM). Please try again later.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}


def status_error_body(
    status: int, *, model: str, type: str | None = None, code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The error body OpenAI sends with `status`; `type`/`code`/`message` override the defaults."""
    fallback = ("invalid_request_error" if status < 500 else "server_error", None, f"Emulated HTTP {status} error.")
    default_type, default_code, default_message = _STATUS_ERRORS.get(status, fallback)
    return error_body(
        message if message is not None else default_message.format(model=model),
        type=type if type is not None else default_type,
        code=code if code is not None else default_code,
    )


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid_type(param: str, expected: str, value: object) -> dict[str, Any]:
    return error_body(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> dict[str, Any]:
    return error_body(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _missing_model() -> dict[str, Any]:
    return error_body("you must provide a model parameter")


def _check_max(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return _invalid_type(name, "an integer", value)
    if value < 1:
        return error_body(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return None


# --------------------------------------------------------------------------- chat: validation


def validate_chat_request(body: object) -> dict[str, Any] | None:
    """An OpenAI error body for a request OpenAI would reject with 400, else None."""
    if not isinstance(body, dict):
        return invalid_json_body()
    model = body.get("model")
    if model is None or model == "":
        return _missing_model()
    if not isinstance(model, str):
        return _invalid_type("model", "a string", model)
    if "messages" not in body:
        return _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        return _invalid_type("messages", "an array", messages)
    if not messages:
        return error_body(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return _invalid_type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role is None:
            return _missing(f"messages[{i}].role")
        if role not in MESSAGE_ROLES:
            supported = ", ".join(f"'{r}'" for r in MESSAGE_ROLES[:-1]) + f", and '{MESSAGE_ROLES[-1]}'"
            return error_body(
                f"Invalid value: '{role}'. Supported values are: {supported}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    for name in ("max_tokens", "max_completion_tokens"):
        if (error := _check_max(body, name)) is not None:
            return error
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            return _invalid_type("stream_options", "an object", options)
        if not stream:
            return error_body(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return _invalid_type("tools", "an array", tools)
    return None


# --------------------------------------------------------------------------- chat: the deterministic reply


def count_tokens(text: str) -> int:
    """Tokenizer-free estimate: one token per started group of four characters."""
    return (len(text) + 3) // 4


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += count_tokens(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind in ("image_url", "input_image", "image"):
                total += IMAGE_PART_TOKENS
            else:
                for key in ("text", "refusal"):
                    value = part.get(key)
                    if isinstance(value, str):
                        total += count_tokens(value)
    return total


def _message_tokens(message: Mapping[str, Any]) -> int:
    tokens = 3 + _content_tokens(message.get("content"))
    name = message.get("name")
    if isinstance(name, str):
        tokens += count_tokens(name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    value = function.get(key)
                    if isinstance(value, str):
                        tokens += count_tokens(value)
    return tokens


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens for a validated request: 3 per message plus its text, 3 for priming, plus the tools."""
    total = 3 + sum(_message_tokens(m) for m in body["messages"])
    tools = body.get("tools")
    if tools:
        total += count_tokens(_ENCODER.encode(tools).decode())
    return total


def _seed(body: Mapping[str, Any]) -> bytes:
    key = _SEED_ENCODER.encode([body.get("model"), body.get("messages")])
    return hashlib.blake2b(key, digest_size=32).digest()


ECHO_MARKER = "[[echo]]"
"""A last user message containing this marker is answered with its own text, marker removed (tests use it
to see what the provider was sent and to put chosen text in the answer)."""


def _echo_text(body: Mapping[str, Any]) -> str | None:
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    if isinstance(content, list):
        content = "".join(part["text"] for part in content
                          if isinstance(part, dict) and isinstance(part.get("text"), str))
    if last.get("role") != "user" or not isinstance(content, str) or ECHO_MARKER not in content:
        return None
    return content.replace(ECHO_MARKER, "").strip()


def _compose_text(seed: bytes) -> str:
    """Between 12 and 40 vocabulary words in sentences, chosen by the seed (never the prompt's words)."""
    n_words = 12 + seed[0] % 29
    stream = hashlib.shake_256(b"text:" + seed).digest(2 * n_words)
    words: list[str] = []
    sentence_len = 0
    for i in range(n_words):
        word = _VOCAB[stream[2 * i] % len(_VOCAB)]
        if sentence_len == 0:
            word = word.capitalize()
        sentence_len += 1
        if i == n_words - 1 or (sentence_len >= 5 and stream[2 * i + 1] % 4 == 0):
            word += "."
            sentence_len = 0
        words.append(word)
    return " ".join(words)


def _word(key: str) -> str:
    return _VOCAB[hashlib.blake2b(key.encode(), digest_size=1).digest()[0] % len(_VOCAB)]


_STRING_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "12:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_value(schema: object, path: str = "$", depth: int = 0) -> Any:
    """A deterministic JSON value that fits a JSON-schema fragment (enum, const, types, nesting)."""
    if not isinstance(schema, dict) or depth > 8:
        return _word(path)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_value(usable[0] if usable else options[0], path, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    digest = hashlib.blake2b(path.encode(), digest_size=2).digest()
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: example_value(sub, f"{path}.{name}", depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = schema.get("minItems", 1)
        count = count if isinstance(count, int) and 0 < count <= 4 else 1
        return [example_value(schema.get("items"), f"{path}[{i}]", depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value: float = digest[0] % 100 + 1
        if isinstance(low, (int, float)) and value < low:
            value = low
        if isinstance(high, (int, float)) and value > high:
            value = high
        if kind == "integer":
            return int(value)
        return value + 0.5 if not isinstance(high, (int, float)) or value + 0.5 <= high else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _STRING_FORMATS:
        return _STRING_FORMATS[fmt]
    return _word(path)


def _pick_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function the model calls, or None when it should answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice == "none" or body["messages"][-1].get("role") != "user":
        return None
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("function"), dict)
    ]
    functions = [f for f in functions if isinstance(f.get("name"), str)]
    if isinstance(choice, dict):
        named = choice.get("function")
        wanted = named.get("name") if isinstance(named, dict) else None
        for function in functions:
            if function["name"] == wanted:
                return function
    return functions[0] if functions else None


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    """The completion budget: `max_completion_tokens`, else the legacy `max_tokens`, else None."""
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return value if isinstance(value, int) else None


def plan_reply(body: Mapping[str, Any]) -> Reply:
    """The deterministic answer to a request that passed `validate_chat_request`."""
    model: str = body["model"]
    seed = _seed(body)
    budget = max_tokens_of(body)
    reasoning = 16 + seed[1] % 112 if model.startswith(REASONING_PREFIXES) else 0
    truncated = False
    if budget is not None and reasoning >= budget:
        reasoning, truncated = budget, True
    room = None if budget is None else budget - reasoning
    fingerprint = "fp_" + hashlib.blake2b(model.encode(), digest_size=5).hexdigest()

    function = _pick_tool(body)
    tool_call: ToolCall | None = None
    content: str | None
    if function is not None:
        arguments = _ENCODER.encode(example_value(function.get("parameters"), function["name"])).decode()
        if room is not None and count_tokens(arguments) > room:
            arguments, truncated = arguments[: room * 4], True
        call_id = "call_" + hashlib.blake2b(b"call:" + seed, digest_size=12).hexdigest()
        tool_call = ToolCall(id=call_id, name=function["name"], arguments=arguments)
        content, visible = None, count_tokens(arguments)
    else:
        echo = _echo_text(body)
        content = "" if truncated else echo if echo is not None else _compose_text(seed)
        if room is not None and count_tokens(content) > room:
            content, truncated = content[: room * 4], True
        visible = count_tokens(content)
    finish = "length" if truncated else "tool_calls" if tool_call is not None else "stop"
    return Reply(
        model=model,
        content=content,
        tool_call=tool_call,
        finish_reason=finish,
        prompt_tokens=prompt_tokens(body),
        completion_tokens=visible + reasoning,
        reasoning_tokens=reasoning,
        system_fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------- chat: bodies and chunks


def usage_body(reply: Reply) -> dict[str, Any]:
    """The CompletionUsage object; identical for the streamed and the non-streamed answer."""
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def completion_body(reply: Reply, *, completion_id: str, created: int) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None, "annotations": []}
    if reply.tool_call is not None:
        message["tool_calls"] = [_tool_call_body(reply.tool_call)]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage_body(reply),
        "service_tier": "default",
        "system_fingerprint": reply.system_fingerprint,
    }


def _text_pieces(text: str, words: int) -> list[str]:
    """Split `text` into pieces of `words` words whose concatenation is exactly `text`."""
    parts = text.split(" ")
    pieces = []
    for start in range(0, len(parts), words):
        piece = " ".join(parts[start : start + words])
        pieces.append(piece if start == 0 else " " + piece)
    return [p for p in pieces if p]


def _obfuscation(completion_id: str, index: int, payload: int) -> str:
    """Padding like OpenAI's `obfuscation` field, so chunk sizes do not reveal the token lengths."""
    length = max(1, 16 - payload % 16)
    return hashlib.blake2b(f"{completion_id}:{index}".encode(), digest_size=12).hexdigest()[:length]


def stream_chunks(
    reply: Reply,
    *,
    completion_id: str,
    created: int,
    chunk_words: int = 3,
    include_usage: bool = False,
    include_obfuscation: bool = True,
) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects OpenAI streams for `reply`, in order, without `[DONE]`.

    Role delta first, then content (or tool-call argument) deltas, then an empty delta carrying
    `finish_reason`, then, with `include_usage`, a chunk with `choices: []` and the usage.
    """
    deltas: list[dict[str, Any]] = []
    if reply.tool_call is not None:
        call = reply.tool_call
        head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})
        size = max(1, chunk_words) * 4
        for start in range(0, len(call.arguments), size):
            fragment = call.arguments[start : start + size]
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
    else:
        deltas.append({"role": "assistant", "content": "", "refusal": None})
        deltas.extend({"content": piece} for piece in _text_pieces(reply.content or "", max(1, chunk_words)))

    def chunk(index: int, choices: list[dict[str, Any]], usage: dict[str, Any] | None, payload: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "service_tier": "default",
            "system_fingerprint": reply.system_fingerprint,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        if include_obfuscation:
            body["obfuscation"] = _obfuscation(completion_id, index, payload)
        return body

    for index, delta in enumerate(deltas):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        yield chunk(index, [choice], None, len(delta.get("content") or ""))
    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}
    yield chunk(len(deltas), [final], None, 0)
    if include_usage:
        yield chunk(len(deltas) + 1, [], usage_body(reply), 0)


# --------------------------------------------------------------------------- models


def model_body(model_id: str) -> dict[str, Any]:
    """One `model` object; unknown ids are described too, since the emulator serves any model."""
    created = dict(KNOWN_MODELS).get(model_id, 1700000000)
    return {"id": model_id, "object": "model", "created": created, "owned_by": "system"}


def models_body() -> dict[str, Any]:
    """The `list` of models GET /v1/models returns."""
    return {"object": "list", "data": [model_body(model_id) for model_id, _ in KNOWN_MODELS]}


# --------------------------------------------------------------------------- embeddings


def _embedding_inputs(value: object) -> list[str | list[int]] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return list(value)
    return None


def validate_embedding_request(body: object) -> dict[str, Any] | None:
    """An OpenAI error body for an embeddings request OpenAI would reject with 400, else None."""
    if not isinstance(body, dict):
        return invalid_json_body()
    model = body.get("model")
    if model is None or model == "":
        return _missing_model()
    if not isinstance(model, str):
        return _invalid_type("model", "a string", model)
    if "input" not in body:
        return _missing("input")
    inputs = _embedding_inputs(body["input"])
    if inputs is None or any(item == "" for item in inputs):
        return error_body(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        return error_body(
            f"Invalid value for 'dimensions' = {dimensions}. Must be a positive integer.", param="dimensions"
        )
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return error_body(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format", code="invalid_value"
        )
    return None


def _vector(model: str, item: str | list[int], dims: int) -> list[float]:
    """A deterministic unit vector for `item`, rounded to float32 like OpenAI's."""
    raw = hashlib.shake_256(_ENCODER.encode([model, item])).digest(2 * dims)
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in values))))


def embedding_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `list` of embeddings for a request that passed `validate_embedding_request`."""
    model: str = body["model"]
    inputs = _embedding_inputs(body["input"]) or []
    dims = body.get("dimensions") or (3072 if model.endswith("-large") else 1536)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        tokens += count_tokens(item) if isinstance(item, str) else len(item)
        vector = _vector(model, item, dims)
        embedding: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
