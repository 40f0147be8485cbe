"""Google Gemini `generateContent` / `streamGenerateContent?alt=sse` / embeddings ↔ OpenAI: translations, and the
GeminiDialect the proxy calls them through."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from catalog.schema import Capabilities
from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters import errors
from services.proxy.adapters.base import StreamDecoder, UpstreamCall, invalid_request, sse_event

if TYPE_CHECKING:
    from services.proxy.providers import Target

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
ANY_MODEL = Capabilities()
"""The catalog's default capabilities (a model no rule restricts)."""

IGNORED_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "user", "metadata", "store", "service_tier",
    "parallel_tool_calls", "safety_identifier", "prompt_cache_key",
})
"""OpenAI request fields that are accepted and need no Gemini counterpart."""

_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
"""The OpenAPI-subset `Schema` fields Gemini's function `parameters` accept; anything else is rejected upstream."""
_FORMATS = frozenset({"enum", "date-time", "int32", "int64", "float", "double"})
"""String formats other than `enum` and `date-time` are rejected by Gemini; numeric ones are accepted."""

_FINISH_REASONS = {
    # a natural end (UNSPECIFIED: Gemini names no reason, so nothing says the answer is cut)
    "STOP": "stop", "FINISH_REASON_UNSPECIFIED": "stop",
    # the token limit (CONTINUATION: the per-request limit, the answer goes on in another request)
    "MAX_TOKENS": "length", "CONTINUATION": "length",
    # a policy or filter withheld the content
    "SAFETY": "content_filter", "RECITATION": "content_filter", "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter", "MODEL_ARMOR": "content_filter", "ESCALATION": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
}
"""Gemini `FinishReason` → OpenAI finish_reason, for the reasons that end an answer the caller can use."""
FAILED_REASONS = {
    "MALFORMED_FUNCTION_CALL": "the model generated a function call that cannot be parsed",
    "UNEXPECTED_TOOL_CALL": "the model called a function that is not declared or not enabled",
    "TOO_MANY_TOOL_CALLS": "the model made too many tool calls before giving an answer",
    "MISSING_THOUGHT_SIGNATURE": "a function call in the request lacks its thought signature "
                                 "(send back tool_calls[].extra_content.google.thought_signature)",
    "MALFORMED_RESPONSE": "the model's response was malformed",
    "OTHER": "the model stopped for a reason Gemini does not specify",
    "IMAGE_OTHER": "image generation stopped for a reason Gemini does not specify",
    "NO_IMAGE": "the model was expected to generate an image but did not",
}
"""Gemini finish reasons meaning the generation failed: no OpenAI finish_reason says that, so the proxy answers
with an upstream error (502 `upstream_generation_failed`; in a stream, that error event) instead of a false
`stop`."""
_REASONING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL)
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


class UnsupportedParameter(errors.UnsupportedParameter):
    """A request field Gemini cannot honour; the proxy answers 400 naming `param` and `model`."""

    api = "Google Gemini"


class StreamError(errors.StreamBroken):
    """Gemini sent an error object inside the event stream; `body` is the OpenAI-shaped error."""


class GenerationFailed(errors.GenerationFailed):
    """A candidate ended with one of FAILED_REASONS; the message names the Gemini reason and what it means."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Gemini stopped without an answer: {reason} ({FAILED_REASONS[reason]})")
        self.reason = reason


# --------------------------------------------------------------------------- request


def model_path(upstream_model: str) -> str:
    """`models/<name>` (tuned and already-qualified names are kept)."""
    return upstream_model if upstream_model.startswith(("models/", "tunedModels/")) else f"models/{upstream_model}"


def to_upstream(body: Mapping[str, Any], upstream_model: str,
                *, capabilities: Capabilities = ANY_MODEL) -> tuple[str, dict[str, Any]]:
    """An OpenAI chat-completions request → (path under `/v1beta/`, Gemini `GenerateContentRequest`).

    Raises UnsupportedParameter naming the first field that has no faithful Gemini translation, or that the
    model's catalog `capabilities` rule out (and the model the caller asked for).
    """
    model = str(body.get("model") or upstream_model)
    _check_params(body, model)
    effort = body.get("reasoning_effort")
    if effort not in (None, "none") and not capabilities.thinking:
        raise UnsupportedParameter("reasoning_effort", model, "this model does not think (Gemini refuses a "
                                                              "thinkingConfig for it); leave reasoning_effort out")
    if effort == "none" and capabilities.thinking and not capabilities.thinking_off:
        raise UnsupportedParameter("reasoning_effort", model, "this model cannot switch thinking off (Gemini "
                                                              "refuses thinkingBudget 0); use 'minimal' or leave "
                                                              "reasoning_effort out")
    system_parts: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(body["messages"]):
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.extend({"text": t} for t in _texts(message.get("content"), f"messages[{i}].content", model))
        elif role == "user":
            parts = _user_parts(message.get("content"), i, model)
            if parts:
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            parts = _assistant_parts(message, i, model, call_names)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            name = message.get("name") if role == "function" else call_names.get(message.get("tool_call_id", ""))
            if not isinstance(name, str):
                raise UnsupportedParameter(f"messages[{i}].tool_call_id", model,
                                           "it matches no tool call of an earlier assistant message, and Gemini "
                                           "needs the function name of every result")
            part = {"functionResponse": {"name": name, "response": _function_response(message.get("content"))}}
            previous = contents[-1] if contents else None
            if previous and previous["role"] == "user" and all("functionResponse" in p for p in previous["parts"]):
                previous["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            raise UnsupportedParameter(f"messages[{i}].role", model)
    if not contents:
        raise UnsupportedParameter("messages", model, "Gemini needs at least one user or assistant message "
                                                      "besides system messages")
    request: dict[str, Any] = {"contents": contents}
    if system_parts:
        request["systemInstruction"] = {"parts": system_parts}
    tools, tool_config = _tools(body, model)
    if tools:
        request["tools"] = tools
    if tool_config:
        request["toolConfig"] = tool_config
    config = _generation_config(body, model, thinking=capabilities.thinking)
    if config:
        request["generationConfig"] = config
    action = ":streamGenerateContent?alt=sse" if body.get("stream") else ":generateContent"
    return model_path(upstream_model) + action, request


def _check_params(body: Mapping[str, Any], model: str) -> None:
    known = IGNORED_PARAMS | {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
        "frequency_penalty", "seed", "response_format", "tools", "tool_choice", "functions", "function_call",
        "reasoning_effort", "n", "logprobs", "top_logprobs", "logit_bias", "modalities",
    }
    for name, value in body.items():
        if value is None:
            continue
        unsupported = (
            name not in known
            or (name == "n" and value != 1)
            or (name == "logprobs" and value is not False)
            or name == "top_logprobs"
            or (name == "logit_bias" and value != {})
            or (name == "modalities" and value != ["text"])
            or (name == "reasoning_effort" and value not in _REASONING_BUDGETS)
        )
        if unsupported:
            raise UnsupportedParameter(name, model)


def _texts(content: object, param: str, model: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise UnsupportedParameter(param, model)
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            text = part.get(part["type"])
            if isinstance(text, str) and text:
                texts.append(text)
        else:
            raise UnsupportedParameter(f"{param}[{j}]", model)
    return texts


def _blob(url: object, param: str, model: str) -> dict[str, Any]:
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise UnsupportedParameter(param, model, "only data: URLs (base64) can be sent; Gemini cannot fetch "
                                                 "remote URLs")
    data = match["data"] if match["b64"] else base64.b64encode(urllib.parse.unquote_to_bytes(match["data"])).decode()
    return {"inlineData": {"mimeType": match["mime"] or "application/octet-stream", "data": data}}


def _user_parts(content: object, i: int, model: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": t} for t in _texts(content, f"messages[{i}].content", model)]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_blob(image.get("url") if isinstance(image, dict) else None, f"{param}.image_url", model))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = _AUDIO_MIME.get(audio.get("format", ""))
            if mime is None or not isinstance(audio.get("data"), str):
                raise UnsupportedParameter(f"{param}.input_audio", model)
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            parts.append(_blob(file.get("file_data"), f"{param}.file", model))
        else:
            raise UnsupportedParameter(param, model)
    return parts


def _assistant_parts(
    message: Mapping[str, Any], i: int, model: str, call_names: dict[str, str]
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": t} for t in _texts(message.get("content"), f"messages[{i}].content", model)]
    calls = list(message.get("tool_calls") or [])
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append({"id": "", "type": "function", "function": legacy})
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UnsupportedParameter(f"messages[{i}].tool_calls[{j}]", model)
        raw = function.get("arguments") or "{}"
        try:
            args = _DECODER.decode(raw)
        except (msgspec.DecodeError, TypeError):
            args = None
        if not isinstance(args, dict):
            raise UnsupportedParameter(f"messages[{i}].tool_calls[{j}].function.arguments", model,
                                       "Gemini needs tool call arguments that are a JSON object")
        if call.get("id"):
            call_names[call["id"]] = function["name"]
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if isinstance(signature, str):
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(content: object) -> dict[str, Any]:
    """Gemini wants a JSON object: a JSON-object result is sent as is, anything else as `{"output": ...}`."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str):
        try:
            parsed = _DECODER.decode(content)
        except msgspec.DecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"output": content if content is not None else ""}


def clean_schema(schema: object, root: Mapping[str, Any] | None = None, depth: int = 0) -> dict[str, Any]:
    """A JSON Schema reduced to Gemini's OpenAPI subset: `$ref`s inlined, `["x","null"]` → nullable, rest dropped."""
    if not isinstance(schema, dict):
        return {}
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < 8:
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        merged = {**(target if isinstance(target, dict) else {}), **{k: v for k, v in schema.items() if k != "$ref"}}
        return clean_schema(merged, root, depth + 1)
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        if len(non_null) < len(kind):
            out["nullable"] = True
        kind = non_null[0] if non_null else None
    if isinstance(kind, str):
        out["type"] = kind
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key == "type" or (key == "nullable" and key in out):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: clean_schema(sub, root, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = clean_schema(value, root, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            options = [o for o in value if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(options) < len(value):
                out["nullable"] = True
            if len(options) == 1:
                out.update({k: v for k, v in clean_schema(options[0], root, depth + 1).items() if k not in out})
            elif options:
                out[key] = [clean_schema(o, root, depth + 1) for o in options]
        elif key == "enum":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[key] = value
        elif key == "format":
            if value in _FORMATS:
                out[key] = value
        else:
            out[key] = value
    if "const" in schema and isinstance(schema["const"], str):
        out["enum"] = [schema["const"]]
    if out.get("type") == "object" and not out.get("properties"):
        out.pop("properties", None)
        out.pop("required", None)
    return out


def _declaration(function: object, param: str, model: str) -> dict[str, Any]:
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UnsupportedParameter(param, model)
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = clean_schema(function.get("parameters"))
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _tools(body: Mapping[str, Any], model: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    declarations = []
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise UnsupportedParameter(f"tools[{i}]", model, "only function tools can be translated")
        declarations.append(_declaration(tool.get("function"), f"tools[{i}].function", model))
    for i, function in enumerate(body.get("functions") or []):
        declarations.append(_declaration(function, f"functions[{i}]", model))
    choice = body.get("tool_choice")
    if choice is None:
        legacy = body.get("function_call")
        choice = {"type": "function", "function": legacy} if isinstance(legacy, dict) else legacy
    config: dict[str, Any] | None = None
    if choice in ("none", "auto", "required"):
        config = {"mode": {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise UnsupportedParameter("tool_choice", model)
        config = {"mode": "ANY", "allowedFunctionNames": [name]}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = [t["function"]["name"] for t in allowed.get("tools", []) if isinstance(t.get("function"), dict)]
        config = {"mode": "ANY" if allowed.get("mode") == "required" else "AUTO", "allowedFunctionNames": names}
    elif choice is not None:
        raise UnsupportedParameter("tool_choice", model)
    tools = [{"functionDeclarations": declarations}] if declarations else []
    return tools, ({"functionCallingConfig": config} if config and tools else None)


def _generation_config(body: Mapping[str, Any], model: str, *, thinking: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                           ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(source) is not None:
            config[target] = body[source]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    spec: Mapping[str, Any] = response_format if isinstance(response_format, dict) else {}
    kind = spec.get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (spec.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    elif response_format is not None and kind != "text":
        raise UnsupportedParameter("response_format", model)
    effort = body.get("reasoning_effort")
    if effort is not None and thinking:  # "none" for a model that cannot think already holds: nothing to send
        config["thinkingConfig"] = {"thinkingBudget": _REASONING_BUDGETS[effort]}
    return config


# --------------------------------------------------------------------------- response


def usage_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI `CompletionUsage` from Gemini `usageMetadata` (absent counts are 0: proto3 JSON omits zeros).

    prompt = promptTokenCount (+ toolUsePromptTokenCount), completion = candidates + thoughts, cached and
    reasoning as details; total is their sum (= Gemini's totalTokenCount).
    """
    prompt = int(metadata.get("promptTokenCount", 0)) + int(metadata.get("toolUsePromptTokenCount", 0))
    thoughts = int(metadata.get("thoughtsTokenCount", 0))
    completion = int(metadata.get("candidatesTokenCount", 0)) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(metadata.get("cachedContentTokenCount", 0))},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def tool_call_id(response_id: str, candidate: int, ordinal: int, name: str, arguments: str) -> str:
    """A stable `call_…` id; the same for the streamed and the non-streamed form of one response."""
    key = f"{response_id}\x00{candidate}\x00{ordinal}\x00{name}\x00{arguments}".encode()
    return "call_" + hashlib.blake2b(key, digest_size=12).hexdigest()


def _tool_call(part: Mapping[str, Any], response_id: str, candidate: int, ordinal: int) -> dict[str, Any]:
    call = part["functionCall"]
    arguments = _ENCODER.encode(call.get("args") or {}).decode()
    name = str(call.get("name", ""))
    body: dict[str, Any] = {
        "id": call.get("id") or tool_call_id(response_id, candidate, ordinal, name, arguments),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if isinstance(part.get("thoughtSignature"), str):
        body["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return body


def finish_reason(gemini_reason: str | None, *, has_tool_calls: bool) -> str:
    """OpenAI finish_reason for a Gemini finishReason; raises GenerationFailed for one of FAILED_REASONS.

    A reason newer than this table is a ValueError too (the proxy answers 502): it is never passed off as `stop`.
    """
    name = gemini_reason or "STOP"
    if name in FAILED_REASONS:
        raise GenerationFailed(name)
    reason = _FINISH_REASONS.get(name)
    if reason is None:
        raise ValueError(f"Gemini sent the finish reason {name!r}, which Routeur does not know")
    return "tool_calls" if reason == "stop" and has_tool_calls else reason


def from_upstream(resp: Mapping[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """A Gemini `GenerateContentResponse` → an OpenAI `chat.completion` object named `model`."""
    response_id = str(resp.get("responseId") or uuid.uuid4().hex)
    choices = []
    for position, candidate in enumerate(resp.get("candidates") or []):
        index = int(candidate.get("index", position))
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                calls.append(_tool_call(part, response_id, index, len(calls)))
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                                   "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        reason = finish_reason(candidate.get("finishReason"), has_tool_calls=bool(calls))
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": reason})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        message = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    return {
        "id": "chatcmpl-" + response_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "usage": usage_from_metadata(resp.get("usageMetadata") or {}),
    }


class StreamTranslator:
    """Gemini SSE data objects → OpenAI `chat.completion.chunk`s: `feed` each event, `finish` at the end."""

    def __init__(self, *, model: str, include_usage: bool, completion_id: str | None = None,
                 created: int | None = None) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = completion_id
        self._created = int(time.time()) if created is None else created
        self._response_id = ""
        self._started = False
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}
        self._metadata: Mapping[str, Any] | None = None
        self._blocked = False

    @property
    def usage(self) -> dict[str, Any] | None:
        """OpenAI usage from the last `usageMetadata` seen (Gemini's final one is authoritative), or None."""
        return usage_from_metadata(self._metadata) if self._metadata is not None else None

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model, "choices": choices}
        if self._include_usage:
            chunk["usage"] = usage
        return chunk

    def _delta(self, index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}])

    def feed(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one Gemini stream event; raises StreamError for an in-stream error object."""
        if isinstance(data.get("error"), dict):
            raise StreamError(error_to_openai(int(data["error"].get("code") or 500), _ENCODER.encode(data)))
        if not self._response_id:
            self._response_id = str(data.get("responseId") or uuid.uuid4().hex)
            self._id = self._id or "chatcmpl-" + self._response_id
        if isinstance(data.get("usageMetadata"), dict):
            self._metadata = data["usageMetadata"]
        if (data.get("promptFeedback") or {}).get("blockReason"):
            self._blocked = True
        out = []
        if not self._started:
            self._started = True
            out.append(self._delta(0, {"role": "assistant", "content": ""}))
        for position, candidate in enumerate(data.get("candidates") or []):
            index = int(candidate.get("index", position))
            for part in (candidate.get("content") or {}).get("parts") or []:
                if "functionCall" in part:
                    ordinal = self._calls.get(index, 0)
                    self._calls[index] = ordinal + 1
                    out.append(self._delta(index, {"tool_calls": [
                        {"index": ordinal, **_tool_call(part, self._response_id, index, ordinal)}]}))
                elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                    out.append(self._delta(index, {"content": part["text"]}))
            if candidate.get("finishReason") and index not in self._finished:
                self._finished.add(index)
                try:
                    reason = finish_reason(candidate["finishReason"], has_tool_calls=bool(self._calls.get(index)))
                except GenerationFailed as exc:
                    raise StreamError(exc.body()) from None
                except ValueError as exc:
                    raise errors.upstream_bad_response(str(exc)) from None
                out.append(self._delta(index, {}, reason))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The closing chunks: a finish_reason if none came, then the usage chunk when asked for and known."""
        out = [] if self._started else self.feed({})
        if not self._finished:
            reason = "content_filter" if self._blocked else "tool_calls" if self._calls.get(0) else "stop"
            self._finished.add(0)
            out.append(self._delta(0, {}, reason))
        if self._include_usage and self._metadata is not None:
            out.append(self._chunk([], self.usage))
        return out


def split_sse_data(buffer: bytearray) -> list[dict[str, Any]]:
    """Remove every complete SSE event from `buffer` and return its decoded JSON `data`.

    Gemini ends events with CRLF CRLF (`data: {...}\\r\\n\\r\\n`); LF and CR line ends are accepted too.
    """
    events: list[dict[str, Any]] = []
    while True:
        match = re.search(rb"(\r\n|\r(?!\n)|\n)(\r\n|\r(?!\n)|\n)", buffer)
        if match is None or (match.end() == len(buffer) and buffer.endswith(b"\r")):
            return events
        block = bytes(buffer[: match.start()])
        del buffer[: match.end()]
        lines = [line[5:].removeprefix(b" ") for line in re.split(rb"\r\n|\r|\n", block) if line.startswith(b"data:")]
        if lines:
            value = _DECODER.decode(b"\n".join(lines))
            if isinstance(value, dict):
                events.append(value)


# --------------------------------------------------------------------------- errors


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                404: "invalid_request_error", 429: "rate_limit_error"}


def error_to_openai(status: int, body: bytes) -> dict[str, Any]:
    """A Gemini error body (`{"error": {"code", "message", "status", "details"}}`, or a list of them) → OpenAI's."""
    try:
        parsed: Any = _DECODER.decode(body) if body else None
    except msgspec.DecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return {"error": {"message": f"Gemini returned HTTP {status}", "type": "upstream_error", "param": None,
                          "code": "upstream_error"}}
    google_status = str(error.get("status") or "")
    reasons = {d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)}
    code = "invalid_api_key" if "API_KEY_INVALID" in reasons or status == 401 else (google_status.lower() or None)
    if status == 429:
        code = "rate_limit_exceeded"
    return {"error": {"message": str(error.get("message") or f"Gemini returned HTTP {status}"),
                      "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                      "param": None, "code": code}}


# --------------------------------------------------------------------------- embeddings


def embeddings_to_upstream(body: Mapping[str, Any], upstream_model: str) -> tuple[str, dict[str, Any]]:
    """An OpenAI `/v1/embeddings` request → (path, Gemini `BatchEmbedContentsRequest`); strings only."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise UnsupportedParameter("input", upstream_model, "'input' must be a string or an array of strings; "
                                                            "Gemini takes no token arrays")
    for name, value in body.items():
        if name not in ("model", "input", "dimensions", "encoding_format", "user") and value is not None:
            raise UnsupportedParameter(name, upstream_model)
    path = model_path(upstream_model)
    requests = []
    for text in inputs:
        request: dict[str, Any] = {"model": path, "content": {"parts": [{"text": text}]}}
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return f"{path}:batchEmbedContents", {"requests": requests}


def estimate_tokens(text: str) -> int:
    """Tokenizer-free estimate (one token per started four characters), used when Gemini reports no usage."""
    return (len(text) + 3) // 4


def embeddings_from_upstream(
    resp: Mapping[str, Any], *, model: str, inputs: Sequence[str] = (), encoding_format: str = "float"
) -> tuple[dict[str, Any], bool]:
    """Gemini `(batch)EmbedContentResponse` → (OpenAI `CreateEmbeddingResponse`, usage_estimated).

    Gemini's embeddings responses usually carry no token counts; then usage is estimated from `inputs`.
    """
    vectors = resp.get("embeddings") if "embeddings" in resp else [resp.get("embedding") or {}]
    data = []
    for index, vector in enumerate(vectors or []):
        values = [float(v) for v in vector.get("values") or []]
        embedding: list[float] | str = values
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    metadata = resp.get("usageMetadata")
    reported = metadata.get("promptTokenCount") if isinstance(metadata, dict) else None
    estimated = not isinstance(reported, int)
    tokens = sum(estimate_tokens(t) for t in inputs) if estimated else int(reported)  # type: ignore[arg-type]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}, estimated


# --------------------------------------------------------------------------- the proxy's dialect


class _GeminiStream:
    def __init__(self, model: str) -> None:
        self._translator = StreamTranslator(model=model, include_usage=True, created=int(time.time()))
        self._finished = False
        self._buffer = bytearray()

    def events(self, buffer: bytearray) -> list[bytes]:
        self._buffer = buffer
        out: list[bytes] = []
        for data in split_sse_data(buffer):
            chunks = self._translator.feed(data)  # StreamError is a StreamBroken
            self._finished = (self._finished or any(c.get("finishReason") for c in data.get("candidates") or [])
                              or bool((data.get("promptFeedback") or {}).get("blockReason")))
            out.extend(sse_event(chunk) for chunk in chunks)
        return out

    def close(self) -> list[bytes]:
        out: list[bytes] = []
        rest = bytes(self._buffer).strip()
        if rest:  # a last event without its blank line, which google-genai's reader yields at the end too
            try:
                out = self.events(bytearray(rest + b"\n\n"))
            except msgspec.DecodeError:  # cut inside the event: the stream is unfinished
                return []
        if not self._finished:
            return out
        return [*out, *(sse_event(chunk) for chunk in self._translator.finish()), wire.DONE]


class GeminiDialect:
    """Google Gemini `generateContent` / `streamGenerateContent?alt=sse` (`x-goog-api-key`)."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = ANY_MODEL) -> UpstreamCall:
        try:
            path, translated = to_upstream(body, upstream_model, capabilities=capabilities)
        except errors.TranslationError as exc:
            raise invalid_request(exc) from None
        return UpstreamCall(f"{target.base_url}/{path}",
                            {"x-goog-api-key": target.api_key.reveal(), "Content-Type": "application/json"},
                            codec.encode(translated))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(from_upstream(_DECODER.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _GeminiStream(model)

    def error(self, status: int, raw: bytes,
              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return status, error_to_openai(status, raw)
