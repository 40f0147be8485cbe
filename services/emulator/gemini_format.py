"""Google Gemini v1beta wire format for the emulator: request validation, deterministic bodies, SSE chunks, errors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from services.emulator import openai_format as oa

_ENCODER = msgspec.json.Encoder()
_SEED_ENCODER = msgspec.json.Encoder(order="deterministic")

# A field is a scalar/free-form value (None), a message ("Name"), a repeated message (["Name"]) or a map ({"Name"}).
_SCHEMA: dict[str, Any] = {
    "type": None, "format": None, "title": None, "description": None, "nullable": None, "enum": None,
    "maxItems": None, "minItems": None, "properties": {"Schema"}, "required": None, "minProperties": None,
    "maxProperties": None, "minLength": None, "maxLength": None, "pattern": None, "example": None,
    "anyOf": ["Schema"], "propertyOrdering": None, "default": None, "items": "Schema", "minimum": None, "maximum": None,
}
MESSAGES: dict[str, dict[str, Any]] = {
    "GenerateContentRequest": {
        "model": None, "contents": ["Content"], "systemInstruction": "Content", "tools": ["Tool"],
        "toolConfig": "ToolConfig", "generationConfig": "GenerationConfig", "safetySettings": None,
        "cachedContent": None,
    },
    "Content": {"role": None, "parts": ["Part"]},
    "Part": {
        "text": None, "inlineData": "Blob", "fileData": None, "functionCall": "FunctionCall",
        "functionResponse": "FunctionResponse", "thought": None, "thoughtSignature": None, "executableCode": None,
        "codeExecutionResult": None, "videoMetadata": None,
    },
    "Blob": {"mimeType": None, "data": None},
    "FunctionCall": {"id": None, "name": None, "args": None},
    "FunctionResponse": {"id": None, "name": None, "response": None, "willContinue": None, "scheduling": None,
                         "parts": None},
    "Tool": {"functionDeclarations": ["FunctionDeclaration"], "googleSearch": None, "googleSearchRetrieval": None,
             "codeExecution": None, "urlContext": None, "fileSearch": None, "googleMaps": None, "computerUse": None},
    "FunctionDeclaration": {"name": None, "description": None, "parameters": "Schema", "parametersJsonSchema": None,
                            "response": "Schema", "responseJsonSchema": None, "behavior": None},
    "Schema": _SCHEMA,
    "ToolConfig": {"functionCallingConfig": "FunctionCallingConfig", "retrievalConfig": None},
    "FunctionCallingConfig": {"mode": None, "allowedFunctionNames": None},
    "GenerationConfig": {
        "stopSequences": None, "responseMimeType": None, "responseSchema": "Schema", "responseJsonSchema": None,
        "responseModalities": None, "candidateCount": None, "maxOutputTokens": None, "temperature": None,
        "topP": None, "topK": None, "seed": None, "presencePenalty": None, "frequencyPenalty": None,
        "responseLogprobs": None, "logprobs": None, "enableEnhancedCivicAnswers": None, "speechConfig": None,
        "thinkingConfig": "ThinkingConfig", "imageConfig": None, "mediaResolution": None,
    },
    "ThinkingConfig": {"thinkingBudget": None, "includeThoughts": None, "thinkingLevel": None},
    "EmbedContentRequest": {"model": None, "content": "Content", "taskType": None, "title": None,
                            "outputDimensionality": None},
    "BatchEmbedContentsRequest": {"requests": ["EmbedContentRequest"]},
}
"""The v1beta request messages the emulator accepts (Google rejects unknown names with 400)."""

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_STATUS_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
         "valid authentication credential.",
    403: "The caller does not have permission",
    404: "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call "
         "ListModels to see the list of available models and their supported methods.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
_MIME_TYPES = ("text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum")
_CONTENT_FILTER_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})


class GeminiReply(msgspec.Struct, frozen=True, kw_only=True):
    """One deterministic Gemini answer: the shared OpenAI reply plus Gemini's thinking and finish reason."""

    reply: oa.Reply
    thoughts: int
    finish_reason: str
    thought_signature: str | None


# --------------------------------------------------------------------------- errors


def error_body(code: int, message: str, status: str | None = None) -> dict[str, Any]:
    """A Google API error object: `{"error": {"code", "message", "status"}}`."""
    return {"error": {"code": code, "message": message, "status": status or STATUS_NAMES.get(code, "UNKNOWN")}}


def status_error_body(status: int, *, model: str, message: str | None = None,
                      google_status: str | None = None) -> dict[str, Any]:
    """The error Gemini sends with HTTP `status` (for fault injection); `message`/`google_status` override."""
    default = _STATUS_MESSAGES.get(status, f"Emulated HTTP {status} error.").format(model=model)
    return error_body(status, message if message is not None else default, google_status)


def missing_key_body() -> dict[str, Any]:
    return error_body(403, "Method doesn't allow unregistered callers (callers without established identity). "
                           "Please use API Key or other form of API consumer identity to call this API.")


def invalid_json_body(detail: str) -> dict[str, Any]:
    return error_body(400, f"Invalid JSON payload received. {detail}")


# --------------------------------------------------------------------------- validation


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


class _Invalid(Exception):
    pass


def _normalise(value: object, message: str, path: str) -> dict[str, Any]:
    """`value` checked against `message`, with snake_case field names (which Google accepts) made camelCase."""
    where = f" at '{path}'" if path else ""
    if not isinstance(value, dict):
        raise _Invalid(f"Invalid JSON payload received. Expected an object{where}.")
    fields = MESSAGES[message]
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else _camel(key)
        if name not in fields:
            raise _Invalid(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')
        kind = fields[name]
        child = f"{path}.{_snake(name)}" if path else _snake(name)
        if kind is None or item is None:
            out[name] = item
        elif isinstance(kind, str):
            out[name] = _normalise(item, kind, child)
        elif isinstance(kind, list):
            if not isinstance(item, list):
                raise _Invalid(f'Invalid JSON payload received. Unknown name "{key}"{where}: '
                               "Proto field is repeated, cannot start object.")
            out[name] = [_normalise(element, kind[0], f"{child}[{i}]") for i, element in enumerate(item)]
        else:
            if not isinstance(item, dict):
                raise _Invalid(f"Invalid JSON payload received. Expected an object at '{child}'.")
            (element_type,) = kind
            out[name] = {k: _normalise(v, element_type, f"{child}[{i}].value") for i, (k, v) in enumerate(item.items())}
    return out


def _check_schema(schema: Mapping[str, Any], path: str) -> str | None:
    kind = str(schema.get("type", "")).upper()
    if kind == "OBJECT" and "properties" in schema and not schema["properties"]:
        return f"* GenerateContentRequest.{path}.properties: should be non-empty for OBJECT type\n"
    if kind == "STRING" and schema.get("format") not in (None, "enum", "date-time"):
        return f"* GenerateContentRequest.{path}.format: only 'enum' and 'date-time' are supported for STRING type\n"
    for i, (_, sub) in enumerate((schema.get("properties") or {}).items()):
        if (error := _check_schema(sub, f"{path}.properties[{i}].value")) is not None:
            return error
    items = schema.get("items")
    return _check_schema(items, f"{path}.items") if isinstance(items, dict) else None


def _check_contents(contents: list[dict[str, Any]]) -> str | None:
    previous: dict[str, Any] | None = None
    for i, content in enumerate(contents):
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            return "Please use a valid role: user, model."
        parts = content.get("parts") or []
        if not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
        for j, part in enumerate(parts):
            path = f"contents[{i}].parts[{j}]"
            if not any(k in part for k in ("text", "inlineData", "fileData", "functionCall", "functionResponse",
                                           "executableCode", "codeExecutionResult")):
                return f"* GenerateContentRequest.{path}.data: required oneof field 'data' must have one " \
                       "initialized field\n"
            blob = part.get("inlineData")
            if blob is not None:
                try:
                    base64.b64decode(str(blob.get("data", "")), validate=True)
                except (binascii.Error, ValueError):
                    return f"Invalid value at '{path}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
            response = part.get("functionResponse")
            if response is not None and not isinstance(response.get("response"), dict):
                return f"Invalid value at '{path}.function_response.response' (type.googleapis.com/" \
                       "google.protobuf.Struct)"
        responses = sum(1 for p in parts if "functionResponse" in p)
        calls = sum(1 for p in (previous or {}).get("parts", []) if "functionCall" in p)
        if responses and responses != calls:
            return "Please ensure that the number of function response parts is equal to the number of function " \
                   "call parts of the function call turn."
        if any("functionCall" in p for p in parts) and previous is not None and previous.get("role") == "model":
            return "Please ensure that function call turn comes immediately after a user turn or after a function " \
                   "response turn."
        previous = content
    return None


def validate_generate_request(body: object) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(normalised request, None) when Gemini would accept `body`, else (None, the 400 error body)."""
    try:
        request = _normalise(body, "GenerateContentRequest", "")
    except _Invalid as exc:
        return None, error_body(400, str(exc))
    contents = request.get("contents")
    if not contents:
        return None, error_body(400, "* GenerateContentRequest.contents: contents is not specified\n")
    message = _check_contents(contents)
    for i, tool in enumerate(request.get("tools") or []):
        for j, declaration in enumerate(tool.get("functionDeclarations") or []):
            path = f"tools[{i}].function_declarations[{j}]"
            if not declaration.get("name"):
                message = message or f"* GenerateContentRequest.{path}.name: Name cannot be empty.\n"
            if isinstance(declaration.get("parameters"), dict):
                message = message or _check_schema(declaration["parameters"], f"{path}.parameters")
    mode = ((request.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if mode is not None and mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        message = message or ("Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
                              f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"')
    config = request.get("generationConfig") or {}
    if config.get("responseMimeType") not in (None, *_MIME_TYPES):
        message = message or ("* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes "
                              "are `text/plain`, `application/json`, `application/xml`, `application/yaml` and "
                              "`text/x.enum`.\n")
    return (None, error_body(400, message)) if message else (request, None)


# --------------------------------------------------------------------------- the deterministic reply


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["text"] for p in parts if isinstance(p.get("text"), str))


_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _lower_types(schema: object) -> Any:
    """Gemini's `Type` enum is upper case (`OBJECT`); JSON Schema's, which openai_format reads, is lower case."""
    if isinstance(schema, list):
        return [_lower_types(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: v.lower() if k == "type" and isinstance(v, str) else _lower_types(v) for k, v in schema.items()}


def openai_view(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI-shaped body whose `openai_format` reply and token counts this Gemini request gets."""
    messages: list[dict[str, Any]] = []
    system = request.get("systemInstruction")
    if system:
        messages.append({"role": "system", "content": _text(system.get("parts") or [])})
    for content in request["contents"]:
        parts = content.get("parts") or []
        if content.get("role") == "model":
            calls = [{"id": "", "type": "function", "function": {
                "name": p["functionCall"].get("name", ""),
                "arguments": _ENCODER.encode(p["functionCall"].get("args") or {}).decode()}}
                for p in parts if "functionCall" in p]
            message: dict[str, Any] = {"role": "assistant", "content": _text(parts) or None}
            messages.append({**message, "tool_calls": calls} if calls else message)
            continue
        for part in parts:
            if "functionResponse" in part:
                result = part["functionResponse"]
                messages.append({"role": "tool", "name": result.get("name", ""),
                                 "content": _ENCODER.encode(result.get("response")).decode()})
        pieces = [{"type": "text", "text": p["text"]} if "text" in p else {"type": "image_url"}
                  for p in parts if "text" in p or "inlineData" in p or "fileData" in p]
        if pieces:
            messages.append({"role": "user", "content": pieces})
    view: dict[str, Any] = {"model": model, "messages": messages or [{"role": "user", "content": ""}]}
    declarations = [d for tool in request.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    if declarations:
        view["tools"] = [{"type": "function", "function": {
            "name": d.get("name"), "description": d.get("description", ""),
            "parameters": _lower_types(d.get("parameters") or d.get("parametersJsonSchema") or _NO_PARAMETERS)}}
            for d in declarations]
    calling = (request.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "NONE":
        view["tool_choice"] = "none"
    elif calling.get("mode") == "ANY":
        names = calling.get("allowedFunctionNames") or []
        view["tool_choice"] = {"type": "function", "function": {"name": names[0]}} if names else "required"
    return view


def thinks_by_default(model: str) -> bool:
    """Gemini 2.5 (but Flash-Lite) and 3 models think unless the thinking budget is 0."""
    return ("2.5" in model or model.startswith("gemini-3")) and "flash-lite" not in model


def plan(model: str, request: Mapping[str, Any]) -> GeminiReply:
    """The deterministic answer to a request that passed `validate_generate_request`."""
    view = openai_view(model, request)
    config = request.get("generationConfig") or {}
    budget = config.get("maxOutputTokens") if isinstance(config.get("maxOutputTokens"), int) else None
    thinking = (config.get("thinkingConfig") or {}).get("thinkingBudget")
    seed = hashlib.blake2b(_SEED_ENCODER.encode([model, view["messages"]]), digest_size=8).digest()
    thoughts = 0
    if thinking != 0 and (thinks_by_default(model) or (isinstance(thinking, int) and thinking > 0)):
        thoughts = 16 + seed[0] % 112
        if isinstance(thinking, int) and thinking > 0:
            thoughts = min(thoughts, thinking)
    if budget is not None and thoughts >= budget:
        reply = oa.Reply(model=model, content="", tool_call=None, finish_reason="length",
                         prompt_tokens=oa.prompt_tokens(view), completion_tokens=0)
        return GeminiReply(reply=reply, thoughts=budget, finish_reason="MAX_TOKENS", thought_signature=None)
    room = None if budget is None else budget - thoughts
    reply = oa.plan_reply({**view, "max_tokens": room} if room is not None else view)
    if config.get("responseMimeType") == "application/json" and reply.tool_call is None:
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        value = oa.example_value(_lower_types(schema), "$") if schema else {"answer": oa.plan_reply(view).content}
        text = _ENCODER.encode(value).decode()
        truncated = room is not None and oa.count_tokens(text) > room
        text = text[: room * 4] if truncated and room is not None else text
        reply = msgspec.structs.replace(reply, content=text, completion_tokens=oa.count_tokens(text),
                                        finish_reason="length" if truncated else "stop")
    signature = None
    if reply.tool_call is not None and thoughts:
        signature = base64.b64encode(hashlib.blake2b(b"signature:" + seed, digest_size=48).digest()).decode()
    finish = "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"
    return GeminiReply(reply=reply, thoughts=thoughts, finish_reason=finish, thought_signature=signature)


# --------------------------------------------------------------------------- bodies and chunks


def usage_metadata(answer: GeminiReply, candidates_tokens: int | None = None) -> dict[str, Any]:
    """`usageMetadata` with proto3 JSON's habit of leaving out zero counts; the final stream chunk equals the body."""
    prompt = answer.reply.prompt_tokens
    candidates = answer.reply.completion_tokens if candidates_tokens is None else candidates_tokens
    metadata: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates:
        metadata["candidatesTokenCount"] = candidates
    metadata["totalTokenCount"] = prompt + candidates + answer.thoughts
    metadata["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if answer.thoughts:
        metadata["thoughtsTokenCount"] = answer.thoughts
    return metadata


def _candidate(parts: list[dict[str, Any]], finish_reason: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    candidate: dict[str, Any] = {"content": content}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    return candidate


def _call_part(answer: GeminiReply) -> dict[str, Any]:
    call = answer.reply.tool_call
    assert call is not None
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": msgspec.json.decode(call.arguments or "{}")}}
    if answer.thought_signature is not None:
        part["thoughtSignature"] = answer.thought_signature
    return part


def response_body(answer: GeminiReply, *, response_id: str) -> dict[str, Any]:
    """The non-streaming `GenerateContentResponse`."""
    if answer.reply.tool_call is not None:
        parts = [_call_part(answer)]
    else:
        parts = [{"text": answer.reply.content}] if answer.reply.content else []
    return {
        "candidates": [_candidate(parts, answer.finish_reason)],
        "usageMetadata": usage_metadata(answer),
        "modelVersion": answer.reply.model,
        "responseId": response_id,
    }


def stream_chunks(answer: GeminiReply, *, response_id: str, chunk_words: int = 3) -> Iterator[dict[str, Any]]:
    """The `GenerateContentResponse` objects `streamGenerateContent` sends, in order.

    Every chunk carries usageMetadata with the candidate tokens so far; the last one has the finishReason
    and exactly the usage of the non-streaming body.
    """
    def chunk(parts: list[dict[str, Any]], finish: str | None, tokens: int | None) -> dict[str, Any]:
        return {"candidates": [_candidate(parts, finish)], "usageMetadata": usage_metadata(answer, tokens),
                "modelVersion": answer.reply.model, "responseId": response_id}

    if answer.reply.tool_call is not None:
        yield chunk([_call_part(answer)], answer.finish_reason, None)
        return
    words = (answer.reply.content or "").split(" ")
    size = max(1, chunk_words)
    pieces = [" ".join(words[i: i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]
    pieces = [p for p in pieces if p]
    if not pieces:
        yield chunk([], answer.finish_reason, None)
        return
    sent = ""
    for index, piece in enumerate(pieces):
        sent += piece
        last = index == len(pieces) - 1
        yield chunk([{"text": piece}], answer.finish_reason if last else None,
                    None if last else oa.count_tokens(sent))


# --------------------------------------------------------------------------- embeddings


def _embed_texts(request: Mapping[str, Any], path: str) -> tuple[list[str] | None, str | None]:
    content = request.get("content")
    if not content or not content.get("parts"):
        return None, f"* {path}.content: content is not specified\n"
    texts = [p["text"] for p in content["parts"] if isinstance(p.get("text"), str)]
    if len(texts) != len(content["parts"]) or not "".join(texts):
        return None, f"* {path}.content.parts: only non-empty text parts can be embedded\n"
    return texts, None


def _vector(model: str, text: str, dims: int) -> list[float]:
    body = oa.embedding_body({"model": model, "input": [text], "dimensions": dims})
    return list(body["data"][0]["embedding"])


def default_dimensions(model: str) -> int:
    return 3072 if model.startswith("gemini-embedding") else 768


def embed_body(model: str, body: object, *, batch: bool) -> tuple[int, dict[str, Any]]:
    """(status, body) for `embedContent` (batch=False) or `batchEmbedContents` (batch=True)."""
    try:
        request = _normalise(body, "BatchEmbedContentsRequest" if batch else "EmbedContentRequest", "")
    except _Invalid as exc:
        return 400, error_body(400, str(exc))
    requests = request.get("requests") if batch else [request]
    if not requests:
        return 400, error_body(400, "* BatchEmbedContentsRequest.requests: requests is not specified\n")
    values = []
    for i, item in enumerate(requests):
        path = f"BatchEmbedContentsRequest.requests[{i}]" if batch else "EmbedContentRequest"
        if item.get("model") not in (None, f"models/{model}", model):
            return 400, error_body(400, f"* {path}.model: model must match the parent model models/{model}\n")
        texts, error = _embed_texts(item, path)
        if error is not None or texts is None:
            return 400, error_body(400, error or "")
        dims = item.get("outputDimensionality") or default_dimensions(model)
        values.append({"values": _vector(model, " ".join(texts), int(dims))})
    return 200, ({"embeddings": values} if batch else {"embedding": values[0]})
