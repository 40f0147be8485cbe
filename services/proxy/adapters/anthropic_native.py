"""Claude routes served natively on /v1/messages (pure): the caller's Anthropic body goes upstream as written (after
DLP) to Anthropic's /v1/messages or to Bedrock's InvokeModel / InvokeModelWithResponseStream, and the replies and
events come back as Anthropic sent them, read only for usage and completion.

Bedrock takes the Anthropic body as the anthropic SDK's own Bedrock client sends it (anthropic/lib/bedrock/_client.py:
`model` and `stream` leave the body for the path, `anthropic_version: "bedrock-2023-05-31"` is added, the
`anthropic-beta` header becomes `anthropic_beta`); its stream is the AWS event stream whose `chunk` events hold, in
`bytes`, the JSON of Anthropic's stream events (botocore's bedrock-runtime `ResponseStream` shape).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from yarl import URL

from catalog.schema import SAMPLING_ONE_OF, Capabilities
from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic, bedrock
from services.proxy.adapters.base import UpstreamCall
from services.proxy.adapters.errors import UnsupportedParameter
from services.proxy.adapters.eventstream import EventStreamDecoder, EventStreamError

if TYPE_CHECKING:
    from services.proxy.providers import Target

FORMATS = frozenset({"anthropic", "bedrock"})
"""The wire formats that take an Anthropic Messages body as it is."""
BEDROCK_VERSION = "bedrock-2023-05-31"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
"""The caller's headers that travel upstream (Anthropic); on Bedrock the betas go in the body."""
_UNPRICED: dict[str, tuple[Any, ...]] = {
    "speed": (None, "standard"),  # "fast" is billed at a premium Routeur has no price for
    "inference_geo": (None, "global"),  # a pinned geography is billed at a premium Routeur has no price for
}
_DECODER = msgspec.json.Decoder()
_USAGE = msgspec.json.Decoder(wire.Usage)


class NativeUnsupported(UnsupportedParameter):
    api = "native Anthropic Messages"


def check(body: Mapping[str, Any], model: str, capabilities: Capabilities) -> None:
    """Refuse what the route's model cannot take by the catalog's capabilities, and what Routeur cannot price
    (raises NativeUnsupported naming the parameter); everything else goes upstream untouched."""
    if capabilities.sampling == SAMPLING_ONE_OF and body.get("temperature") is not None \
            and body.get("top_p") is not None:
        raise NativeUnsupported("top_p", model, "this model takes `temperature` or `top_p`, not both")
    thinking = body.get("thinking")
    if not capabilities.thinking and isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise NativeUnsupported("thinking", model, "this model cannot think")
    for param, allowed in _UNPRICED.items():
        if body.get(param) not in allowed:
            raise NativeUnsupported(param, model, "its price differs from the catalog's and Routeur cannot bill it")


def _betas(headers: Mapping[str, str]) -> list[str]:
    return [beta.strip() for beta in headers.get("anthropic-beta", "").split(",") if beta.strip()]


def anthropic_request(target: Target, body: Mapping[str, Any], upstream_model: str,
                      headers: Mapping[str, str]) -> UpstreamCall:
    """POST {base}/messages with the caller's body (model renamed to the route's) and its version and betas."""
    out = {**body, "model": upstream_model}
    sent = {"x-api-key": target.api_key.reveal(), "content-type": "application/json",
            "anthropic-version": headers.get("anthropic-version") or anthropic.ANTHROPIC_VERSION}
    if headers.get("anthropic-beta"):
        sent["anthropic-beta"] = headers["anthropic-beta"]
    return UpstreamCall(f"{target.base_url}/messages", sent, codec.encode(out))


def bedrock_body(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The InvokeModel body: the caller's without `model` and `stream`, with Bedrock's version and the betas."""
    out = {key: value for key, value in body.items() if key not in ("model", "stream")}
    out.setdefault("anthropic_version", BEDROCK_VERSION)
    if betas := _betas(headers):
        out.setdefault("anthropic_beta", betas)
    return out


def bedrock_request(target: Target, body: Mapping[str, Any], upstream_model: str, headers: Mapping[str, str], *,
                    stream: bool, secret_key: str, region: str, session_token: str | None) -> UpstreamCall:
    """POST {base}/model/{id}/invoke[-with-response-stream], SigV4-signed like the Converse calls."""
    action = "invoke-with-response-stream" if stream else "invoke"
    url = str(URL(f"{target.base_url}/model/{quote(upstream_model, safe='')}/{action}"))
    payload = codec.encode(bedrock_body(body, headers))
    accept = {"X-Amzn-Bedrock-Accept": "application/json"} if stream else {"Accept": "application/json"}
    signed = bedrock.sign("POST", url, {"Content-Type": "application/json", **accept}, payload,
                          access_key=target.api_key.reveal(), secret_key=secret_key,
                          region=bedrock.region_of(url) or region, session_token=session_token)
    return UpstreamCall(url, signed, payload)


def request(target: Target, body: Mapping[str, Any], upstream_model: str, headers: Mapping[str, str], *,
            stream: bool) -> UpstreamCall:
    """The native call for a target whose format is in FORMATS."""
    if target.format == "bedrock":
        return bedrock_request(target, body, upstream_model, headers, stream=stream,
                               secret_key=target.secret_key.reveal(), region=target.region or "us-east-1",
                               session_token=target.session_token.reveal() or None)
    return anthropic_request(target, body, upstream_model, headers)


def usage(anthropic_usage: Mapping[str, Any] | None) -> wire.Usage:
    """Anthropic's `usage` as the proxy's Usage: prompt = input + cache writes + cache reads, each bucket apart."""
    return _USAGE.decode(codec.encode(anthropic.usage_from_anthropic(anthropic_usage).to_openai()))


def encode_event(name: str, data: Mapping[str, Any]) -> bytes:
    """One Anthropic SSE event."""
    return b"event: " + name.encode() + b"\ndata: " + codec.encode(data) + b"\n\n"


Event = tuple[bytes, str, dict[str, Any]]
"""(the event's SSE bytes as the caller gets them, its type, its data)."""


class StreamReader:
    """Anthropic stream events from the upstream's bytes: SSE from Anthropic, event-stream frames from Bedrock.

    Keeps the usage (message_start's, updated by message_delta's cumulative counts), whether message_stop came,
    and the text length streamed (for an estimate when the stream is cut short)."""

    def __init__(self, wire_format: str) -> None:
        self._frames = EventStreamDecoder() if wire_format == "bedrock" else None
        self._buffer = bytearray()
        self._usage: dict[str, Any] = {}
        self.done = False
        self.failed = False
        self.streamed_chars = 0

    @property
    def usage(self) -> wire.Usage | None:
        return usage(self._usage) if self._usage else None

    def feed(self, data: bytes) -> list[Event]:
        """The complete events in `data` and what came before it."""
        if self._frames is None:
            self._buffer += data
            return [self._read(raw) for raw in wire.split_events(self._buffer) if _has_data(raw)]
        try:
            frames = self._frames.feed(data)
        except EventStreamError as exc:
            return [self._error("api_error", f"the Bedrock event stream is corrupt: {exc}")]
        events = []
        for headers, payload in frames:
            kind = headers.get(":message-type")
            if kind in ("exception", "error"):
                name = str(headers.get(":exception-type") or headers.get(":error-code") or "InternalServerException")
                events.append(self._error(bedrock_error_type(name), _message(payload) or name))
                continue
            if headers.get(":event-type") != "chunk":
                continue
            try:
                chunk = _DECODER.decode(payload)
                raw = base64.b64decode(chunk["bytes"])
                decoded = _DECODER.decode(raw)
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                events.append(self._error("api_error", "Bedrock sent a chunk that is not an Anthropic event"))
                continue
            if isinstance(decoded, dict):
                events.append(self._seen(encode_event(str(decoded.get("type", "")), decoded), decoded))
        return events

    def _read(self, raw: bytes) -> Event:
        parsed = anthropic.parse_event(raw) if raw.strip() else None
        if parsed is None:
            return self._seen(raw, {})
        return self._seen(raw, parsed[1], parsed[0])

    def _seen(self, raw: bytes, data: dict[str, Any], name: str | None = None) -> Event:
        kind = str(data.get("type") or name or "")
        if kind == "message_start":
            self._usage = dict((data.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.failed = True
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            self.streamed_chars += len(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
        return raw, kind, data

    def _error(self, error_type: str, message: str) -> Event:
        data = {"type": "error", "error": {"type": error_type, "message": message}}
        return self._seen(encode_event("error", data), data)


def _has_data(raw: bytes) -> bool:
    return b"data:" in raw


def _message(payload: bytes) -> str:
    try:
        decoded = _DECODER.decode(payload) if payload else None
    except msgspec.DecodeError:
        return ""
    return str(decoded.get("message") or "") if isinstance(decoded, dict) else ""


_BEDROCK_ERRORS = {"ThrottlingException": "rate_limit_error", "ServiceUnavailableException": "overloaded_error",
                   "ModelTimeoutException": "timeout_error", "ValidationException": "invalid_request_error",
                   "AccessDeniedException": "permission_error", "ResourceNotFoundException": "not_found_error"}


def bedrock_error_type(exception: str) -> str:
    """The Anthropic error type for a Bedrock exception name (in-stream exceptions and error responses)."""
    name = exception.rsplit("#", 1)[-1].split(":", 1)[0]  # `x-amzn-ErrorType` form, or a stream's member name
    return _BEDROCK_ERRORS.get(name[:1].upper() + name[1:], "api_error")
