"""The proxy's error tree and the one place errors become OpenAI-style JSON responses.

    ProxyError (status, type, code)
    ├── InvalidRequest      400 invalid_request_error
    │   └── BodyTooLarge    413
    ├── AuthError           401 invalid_api_key / invalid_admin_token
    ├── NotFound            404 (unknown model, trace or path)
    ├── MethodNotAllowed    405
    ├── UpstreamError       upstream's own status, passed through
    ├── UpstreamUnavailable 502 connect error / 504 timeout
    └── ServiceUnavailable  503 (a Routeur dependency is down)

A request aiohttp cannot parse as HTTP at all (CR/LF or NUL inside a header, a bad request line, a header
over 8 KiB) never reaches a route: aiohttp answers it 400 itself and closes the connection;
services.common.logs.ProtocolLog keeps the offending bytes out of the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from proto import codec
from services.common.logs import get_logger

log = get_logger()


class ProxyError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    headers: dict[str, str] = {}

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class AuthError(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class UpstreamError(ProxyError):
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(ProxyError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


def error_response(error: ProxyError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    """Render any ProxyError as the OpenAI error JSON with the request id header."""
    all_headers = {"x-request-id": request_id, **error.headers}
    if headers:
        all_headers.update(headers)
    return web.Response(status=error.status, body=codec.encode(error.body()), content_type="application/json",
                        headers=all_headers)



ErrorRenderer = Callable[[ProxyError, str], web.Response]
"""(error, request id) → the error response in an endpoint's own format (`error_response` is OpenAI's)."""
