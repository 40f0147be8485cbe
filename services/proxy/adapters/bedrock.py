"""AWS Bedrock Converse / ConverseStream <-> OpenAI chat completions: translations, errors, SigV4 signing, and the
BedrockDialect the proxy calls them through."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from catalog.schema import SAMPLING_ONE_OF, Capabilities
from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters import errors
from services.proxy.adapters.base import DEFAULT_CAPABILITIES, StreamDecoder, UpstreamCall, invalid_request, sse_event
from services.proxy.adapters.errors import StreamBroken, TranslationError, upstream_bad_response
from services.proxy.adapters.eventstream import EventStreamDecoder, EventStreamError
from services.proxy.adapters.shared import (
    check_unsupported,
    function_tools,
    nonblank,
    texts,
    to_turns,
    tool_call_id,
    tool_calls,
)
from services.proxy.adapters.shared import tool_arguments as _arguments

if TYPE_CHECKING:
    from services.proxy.providers import Target

SIGNING_NAME = "bedrock"
"""SigV4 service name: the endpoint is `bedrock-runtime.{region}.amazonaws.com`, the signing scope `bedrock`."""
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/csv": "csv", "text/html": "html", "text/plain": "txt",
                    "text/markdown": "md"}
_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_.:-]")
HISTORY_TOOL_DESCRIPTION = "A tool called earlier in this conversation."
"""The description of a tool Routeur declares from the history (see `history_tools`)."""

# OpenAI parameters with no Converse equivalent, and the values that mean "not used" (those pass silently).
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (None, 1), "seed": (None,), "logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
    "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "functions": (None, []), "function_call": (None,), "web_search_options": (None,),
    "reasoning_effort": (None,),
}
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                  "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
"""OpenAI finish_reason for each Converse StopReason that ends a usable answer."""
MALFORMED_STOPS = frozenset({"malformed_model_output", "malformed_tool_use"})
"""StopReasons of an answer Bedrock itself flags as unusable (the model's output or tool call did not parse):
OpenAI has no finish_reason for that, so the proxy answers with an error (`upstream_generation_failed`) the caller
can retry, rather than pass broken text or tool arguments off as a normal completion. Together with
FINISH_REASONS this covers botocore's whole StopReason enum (a test holds it to that)."""
# Bedrock exception -> (OpenAI type, OpenAI code, HTTP status the proxy should answer with)
_ERRORS: dict[str, tuple[str, str | None, int]] = {
    "ValidationException": ("invalid_request_error", None, 400),
    "ServiceQuotaExceededException": ("insufficient_quota", "insufficient_quota", 429),
    "AccessDeniedException": ("permission_error", "permission_denied", 403),
    "UnrecognizedClientException": ("authentication_error", "invalid_api_key", 401),
    "InvalidSignatureException": ("authentication_error", "invalid_api_key", 401),
    "IncompleteSignatureException": ("authentication_error", "invalid_api_key", 401),
    "MissingAuthenticationTokenException": ("authentication_error", "invalid_api_key", 401),
    "ExpiredTokenException": ("authentication_error", "invalid_api_key", 401),
    "ResourceNotFoundException": ("invalid_request_error", "model_not_found", 404),
    "ModelTimeoutException": ("server_error", "timeout", 504),
    "ThrottlingException": ("rate_limit_error", "rate_limit_exceeded", 429),
    "ModelNotReadyException": ("server_error", "model_not_ready", 503),
    "ModelErrorException": ("server_error", "model_error", 502),
    "ModelStreamErrorException": ("server_error", "model_error", 502),
    "InternalServerException": ("server_error", "internal_error", 500),
    "ServiceUnavailableException": ("server_error", "overloaded", 503),
}
ERROR_TYPES_BY_STATUS = {400: "ValidationException", 401: "UnrecognizedClientException",
                         403: "AccessDeniedException", 404: "ResourceNotFoundException",
                         408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
                         500: "InternalServerException", 503: "ServiceUnavailableException"}
"""The Bedrock exception for an HTTP status, when neither the `x-amzn-ErrorType` header nor the body says."""
_DECODER = msgspec.json.Decoder()


class UnsupportedParameter(errors.UnsupportedParameter):
    api = "AWS Bedrock"


class MalformedOutput(errors.GenerationFailed):
    """Bedrock ended the answer with a StopReason of MALFORMED_STOPS."""

    def __init__(self, stop_reason: str) -> None:
        super().__init__(f"the model's output on AWS Bedrock was malformed (stopReason {stop_reason}); retry")
        self.stop_reason = stop_reason


# --------------------------------------------------------------------------- OpenAI request -> Converse


def model_path(upstream_model: str, *, stream: bool) -> str:
    """`model/{id}/converse[-stream]` with the id percent-encoded as one path segment, as boto3 does."""
    return f"model/{quote(upstream_model, safe='')}/{'converse-stream' if stream else 'converse'}"


def tool_use_id(call_id: str) -> str:
    """An OpenAI tool-call id as a valid `toolUseId` (`[a-zA-Z0-9_.:-]{1,64}`); the same input gives the same id."""
    return (_TOOL_USE_ID.sub("_", call_id) or "call")[:64]


def _data_url(url: object, where: str, formats: Mapping[str, str], model: str) -> tuple[str, str]:
    """(Converse format, base64 data) of a base64 data URL; Bedrock cannot fetch http(s) URLs."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise UnsupportedParameter(where, model, "only base64 data URLs can be sent; Bedrock cannot fetch URLs")
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or media_type not in formats:
        raise TranslationError(f"'{where}' must be a base64 data URL of type {', '.join(sorted(formats))}",
                               param=where)
    return formats[media_type], data


def _user_blocks(content: object, where: str, model: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": t} for t in texts(content, where)]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if nonblank(part.get("text")):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            fmt, data = _data_url(url, f"{at}.image_url.url", IMAGE_FORMATS, model)
            blocks.append({"image": {"format": fmt, "source": {"bytes": data}}})
        elif kind == "file" and isinstance(part.get("file"), dict):
            fmt, data = _data_url(part["file"].get("file_data"), f"{at}.file.file_data", DOCUMENT_FORMATS, model)
            blocks.append({"document": {"format": fmt, "name": f"document {len(blocks) + 1}",
                                        "source": {"bytes": data}}})
        else:
            raise UnsupportedParameter(f"{at}.type", model, f"content parts of type '{kind}' cannot be translated")
    return blocks


def _assistant_blocks(message: Mapping[str, Any], where: str, model: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"text": t} for t in texts(message.get("content"), f"{where}.content")]
    for call in tool_calls(message, where, model, UnsupportedParameter):
        blocks.append({"toolUse": {"toolUseId": tool_use_id(call.id), "name": call.name, "input": call.arguments}})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = tool_call_id(message, where)
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(texts(content, f"{where}.content"))
    blocks = [{"text": text}] if nonblank(text) else []  # Bedrock rejects blank text, even in a tool result
    return {"toolResult": {"toolUseId": tool_use_id(call_id), "content": blocks}}


def _with_status(messages: list[dict[str, Any]]) -> None:
    """`status: success` on every toolResult, for models that take it (an OpenAI tool message has no status, so
    success is all it can say; models without `capabilities.tool_result_status` get no status at all)."""
    for message in messages:
        for block in message["content"]:
            if "toolResult" in block:
                block["toolResult"]["status"] = "success"


def history_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool specs for the tools the conversation already called, in first-call order.

    Converse refuses toolUse/toolResult blocks in `messages` without a `toolConfig`, while OpenAI lets a request
    carry tool calls in its history and declare no `tools`. For such a request Routeur declares each tool named
    in the history, with HISTORY_TOOL_DESCRIPTION and an open object schema, so the history can be sent; the
    model may then call one of them again, which comes back as an ordinary tool call.
    """
    names: dict[str, None] = {}
    for message in messages:
        for block in message["content"]:
            if "toolUse" in block:
                names.setdefault(str(block["toolUse"]["name"]), None)
    return [{"toolSpec": {"name": name, "description": HISTORY_TOOL_DESCRIPTION,
                          "inputSchema": {"json": {"type": "object"}}}} for name in names]


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(body: Mapping[str, Any], messages: list[dict[str, Any]], model: str,
                 capabilities: Capabilities) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not tools:
        if body.get("tool_choice") not in (None, "none", "auto"):
            raise UnsupportedParameter("tool_choice", model, "a tool choice needs the tools it chooses from")
        return {"tools": history_tools(messages)} if _has_tool_blocks(messages) else None
    specs = []
    for tool in function_tools(tools, model, UnsupportedParameter):
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["inputSchema"] = {"json": tool.parameters}
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    choice = body.get("tool_choice")
    if (choice == "required" or isinstance(choice, dict)) and not capabilities.forced_tool:
        raise UnsupportedParameter("tool_choice", model, "this model chooses tools itself on Bedrock (Converse "
                                                         "toolChoice any/tool: Claude 3+ and Nova only); use 'auto'")
    if choice in (None, "auto"):
        pass  # `auto` is Converse's default, and the one choice every tool-using model accepts
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "none":
        if _has_tool_blocks(messages):
            raise UnsupportedParameter("tool_choice", model, "Converse has no 'none' choice; a conversation with "
                                                             "tool calls needs its tools, so omit tool_choice")
        return None
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name")}}
    else:
        raise UnsupportedParameter("tool_choice", model, "use 'auto', 'none', 'required' or a named function")
    return config


def _check_supported(body: Mapping[str, Any], model: str, capabilities: Capabilities) -> None:
    check_unsupported(body, model, _UNSUPPORTED, UnsupportedParameter)
    for param in ("temperature", "top_p"):
        value = body.get(param)
        if isinstance(value, (int, float)) and not 0 <= value <= 1:
            raise UnsupportedParameter(param, model, f"Bedrock accepts 0 to 1, got {value}")
    if (capabilities.sampling == SAMPLING_ONE_OF and body.get("temperature") is not None
            and body.get("top_p") is not None):
        raise UnsupportedParameter("top_p", model, "this model takes temperature or top_p, not both; send one")


def _stop_sequences(stop: object, model: str) -> list[str]:
    """Converse `stopSequences`; it refuses empty strings (botocore: each member min length 1), so one is a 400."""
    sequences = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else None
    if sequences is None or not all(isinstance(s, str) for s in sequences):
        raise TranslationError("'stop' must be a string or an array of strings", param="stop")
    if any(s == "" for s in sequences):
        raise UnsupportedParameter("stop", model, "Bedrock refuses empty stop sequences; remove them")
    return sequences


def to_upstream(body: Mapping[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> tuple[str, dict[str, Any]]:
    """An OpenAI chat-completions request -> (path under the endpoint, Converse request body).

    The path is `model/{id}/converse` or `model/{id}/converse-stream` (when `stream` is true). Parameters are
    mapped by the catalog model's `capabilities` (sampling, toolResult.status, a forced tool). Raises
    UnsupportedParameter / TranslationError (both ValueError with `.param`) for what cannot be sent.
    """
    model = str(body.get("model") or upstream_model)
    _check_supported(body, model, capabilities)
    system, messages = to_turns(body, model, user=_user_blocks, assistant=_assistant_blocks,
                                tool_result=_tool_result, unsupported=UnsupportedParameter, api="Converse")
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = [{"text": t} for t in system]
    inference: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        inference["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop is not None and stop != []:
        inference["stopSequences"] = _stop_sequences(stop, model)
    if inference:
        out["inferenceConfig"] = inference
    if capabilities.tool_result_status:
        _with_status(messages)
    tool_config = _tool_config(body, messages, model, capabilities)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return model_path(upstream_model, stream=bool(body.get("stream"))), out


# --------------------------------------------------------------------------- Converse response -> OpenAI


def usage_to_openai(usage: Mapping[str, Any] | None, *, reasoned: bool = False) -> dict[str, Any]:
    """OpenAI CompletionUsage from a Converse `usage`: `inputTokens` excludes cache reads and writes, so the
    prompt is their sum (= Bedrock's totalTokens - outputTokens) and cached_tokens = cacheReadInputTokens.

    Converse's TokenUsage has no reasoning count: `outputTokens` includes the reasoning (and is what AWS bills), so
    when the answer `reasoned` (reasoningContent blocks) `reasoning_tokens` is left out as unknown, never a false 0.
    """
    usage = usage or {}
    read = int(usage.get("cacheReadInputTokens") or 0)
    write = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + read + write
    completion = int(usage.get("outputTokens") or 0)
    details: dict[str, int] = {"audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    if not reasoned:
        details = {"reasoning_tokens": 0, **details}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "audio_tokens": 0,
                                  **({"cache_write_tokens": write} if write else {})},  # priced as cache writes
        "completion_tokens_details": details,
    }


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI finish_reason for a Converse stopReason; raises MalformedOutput for MALFORMED_STOPS. A value newer
    than this adapter reads as `stop` (the answer came whole)."""
    if stop_reason in MALFORMED_STOPS:
        raise MalformedOutput(stop_reason)
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def completion_id() -> str:
    """Converse answers carry no id (only the `x-amzn-RequestId` header), so the proxy makes one."""
    return "chatcmpl-" + uuid.uuid4().hex


def from_upstream(resp: Mapping[str, Any], *, model: str, created: int | None = None,
                  response_id: str | None = None) -> dict[str, Any]:
    """A Converse response as an OpenAI `chat.completion` answering for the public `model` id."""
    pieces: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoned = False
    message = ((resp.get("output") or {}).get("message") or {})
    for block in message.get("content") or []:
        if "reasoningContent" in block:
            reasoned = True  # chat completions has no place for the reasoning itself
        elif isinstance(block.get("text"), str):
            pieces.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"), "arguments": _arguments(use.get("input"))}})
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) if pieces or not calls else None,
                              "refusal": None, "annotations": []}
    if calls:
        answer["tool_calls"] = calls
    return {
        "id": response_id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": answer, "logprobs": None,
                     "finish_reason": finish_reason(resp.get("stopReason"))}],
        "usage": usage_to_openai(resp.get("usage"), reasoned=reasoned),
    }


class StreamTranslator:
    """ConverseStream events (`:event-type`, JSON payload) in, OpenAI `chat.completion.chunk` dicts out.

    `finished` after messageStop (the finish_reason chunk), `done` after metadata (the usage chunk).
    """

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None,
                 response_id: str | None = None) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = response_id or completion_id()
        self._tool_index: dict[int, int] = {}
        self._reasoned = False
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model, "choices": []}
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event_type: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one event (often none); unknown event types are ignored."""
        if event_type == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if event_type == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            index = self._tool_index.setdefault(int(payload.get("contentBlockIndex") or 0), len(self._tool_index))
            head = {"index": index, "id": use.get("toolUseId"), "type": "function",
                    "function": {"name": use.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [head]})]
        if event_type == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                return [self._chunk({"content": delta["text"]})]
            use = delta.get("toolUse")
            if isinstance(use, dict) and use.get("input"):
                index = self._tool_index.get(int(payload.get("contentBlockIndex") or 0), 0)
                return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": use["input"]}}]})]
            self._reasoned = self._reasoned or "reasoningContent" in delta
            return []  # reasoningContent and citation deltas have no chat-completions counterpart
        if event_type == "messageStop":
            try:
                finish = finish_reason(payload.get("stopReason"))
            except MalformedOutput as exc:
                raise StreamBroken(exc.body()) from None
            self.finished = True
            return [self._chunk({}, finish)]
        if event_type == "metadata":
            self.usage = usage_to_openai(payload.get("usage"), reasoned=self._reasoned)
            self.done = True
            return [{**self._chunk(None), "usage": self.usage}] if self._include_usage else []
        return []  # contentBlockStop, and event types added after this adapter was written


# --------------------------------------------------------------------------- errors


def exception_name(error_type: str | None, status: int) -> str:
    """`ThrottlingException` from an `x-amzn-ErrorType` value (`Name:namespace-uri`), a stream
    `:exception-type` (`throttlingException`) or, when neither is known, the status."""
    name = (error_type or "").split(":", 1)[0].strip()
    if name:
        return name[:1].upper() + name[1:]
    fallback = "InternalServerException" if status >= 500 else "ValidationException"
    return ERROR_TYPES_BY_STATUS.get(status, fallback)


def openai_status(status: int, error_type: str | None = None) -> int:
    """The status the proxy answers with (e.g. ModelTimeoutException's 408 becomes 504, 424 becomes 502)."""
    return _ERRORS.get(exception_name(error_type, status), ("", None, status))[2]


def error_to_openai(status: int, body: bytes, error_type: str | None = None) -> dict[str, Any]:
    """A Bedrock error (`{"message": ...}` plus the `x-amzn-ErrorType` header) as an OpenAI error body."""
    try:
        decoded = _DECODER.decode(body) if body else None
    except msgspec.DecodeError:
        decoded = None
    fields = decoded if isinstance(decoded, dict) else {}
    name = exception_name(error_type or fields.get("__type") or fields.get("code"), status)
    message = fields.get("message") or fields.get("Message") or f"AWS Bedrock returned HTTP {status} ({name})"
    openai_type, code, _ = _ERRORS.get(name, ("server_error" if status >= 500 else "invalid_request_error",
                                              name, status))
    return {"error": {"message": str(message), "type": openai_type, "param": None, "code": code}}


# --------------------------------------------------------------------------- SigV4


def region_of(url: str) -> str | None:
    """The region in a `https://bedrock-runtime.{region}.amazonaws.com` URL, or None for any other host."""
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    match = _HOST.match(host)
    return match.group(1) if match else None


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, *, access_key: str, secret_key: str,
         region: str, session_token: str | None = None) -> dict[str, str]:
    """`headers` plus `X-Amz-Date`, `Authorization` (and `X-Amz-Security-Token`), signed with botocore's SigV4.

    Sign the URL exactly as it goes on the wire: the path's percent-encoding is part of the signature.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(access_key, secret_key, session_token), SIGNING_NAME, region).add_auth(request)
    return {name: value.decode() if isinstance(value, bytes) else str(value) for name, value in request.headers.items()}


# --------------------------------------------------------------------------- the proxy's dialect


class _BedrockStream:
    """The binary event stream of ConverseStream in, OpenAI SSE events out."""

    def __init__(self, model: str) -> None:
        self._frames = EventStreamDecoder()
        self._translator = StreamTranslator(model=model, include_usage=True, created=int(time.time()))

    def events(self, buffer: bytearray) -> list[bytes]:
        data = bytes(buffer)
        buffer.clear()
        try:
            frames = self._frames.feed(data)
        except EventStreamError as exc:
            raise upstream_bad_response(f"the Bedrock event stream is corrupt: {exc}") from None
        out: list[bytes] = []
        for headers, payload in frames:
            kind = headers.get(":message-type")
            if kind == "exception":
                name = str(headers.get(":exception-type") or "")
                raise StreamBroken(error_to_openai(0, payload, name)) from None
            if kind == "error":
                message = str(headers.get(":error-message") or headers.get(":error-code") or "stream error")
                raise upstream_bad_response(f"Bedrock stream error: {message}")
            try:
                decoded = _DECODER.decode(payload) if payload else {}
            except msgspec.DecodeError:
                raise upstream_bad_response("Bedrock sent an event whose payload is not JSON") from None
            chunks = self._translator.feed(str(headers.get(":event-type") or ""), decoded)
            out.extend(sse_event(chunk) for chunk in chunks)
            if self._translator.done:
                out.append(wire.DONE)
        return out

    def close(self) -> list[bytes]:
        # messageStop came but the metadata event (usage) did not: the answer is whole, the usage is estimated.
        return [wire.DONE] if self._translator.finished and not self._translator.done else []


class BedrockDialect:
    """AWS Bedrock Converse API (`/model/{id}/converse[-stream]`), signed with SigV4 for service `bedrock`.

    The Target's api_key is the access key id; the secret, region and optional session token come from here.
    The region in a `bedrock-runtime.{region}.amazonaws.com` base URL wins over `region`, so the signature's
    scope always matches the endpoint called.
    """

    def __init__(self, *, secret_key: str, region: str, session_token: str | None = None) -> None:
        self._secret_key = secret_key
        self._region = region
        self._session_token = session_token or None

    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> UpstreamCall:
        try:
            path, translated = to_upstream(body, upstream_model, capabilities=capabilities)
        except TranslationError as exc:
            raise invalid_request(exc) from None
        # aiohttp sends a str URL as yarl re-quotes it (`%3A` -> `:`): sign exactly that form, since the
        # path's encoding is part of the canonical request AWS recomputes.
        url = str(URL(f"{target.base_url}/{path}"))
        payload = codec.encode(translated)
        headers = sign("POST", url, {"Content-Type": "application/json"}, payload,
                       access_key=target.api_key.reveal(), secret_key=self._secret_key,
                       region=region_of(url) or self._region, session_token=self._session_token)
        return UpstreamCall(url, headers, payload)

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(from_upstream(_DECODER.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _BedrockStream(model)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """`headers` (optional) lets the `x-amzn-ErrorType` header name the exception; else the status does."""
        error_type = (headers or {}).get("x-amzn-ErrorType") or (headers or {}).get("x-amzn-errortype")
        return openai_status(status, error_type), error_to_openai(status, raw, error_type)
