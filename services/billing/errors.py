"""Billing's error tree; every error carries a stable code, an HTTP status and an OpenAI error type.

    BillingError (status, type, code)
    ├── InvalidRequest       400 invalid_request_error  invalid_request (names the `param`)
    ├── AuthError            401 invalid_request_error  invalid_api_key
    │   └── AdminAuthError   401 invalid_request_error  invalid_admin_token
    ├── InsufficientQuota    402 insufficient_quota     insufficient_quota  (wallet − reservations)
    ├── NotFound             404 invalid_request_error  not_found / unknown_url
    ├── Conflict             409 invalid_request_error  already_exists
    ├── BudgetExceeded       429 budget_exceeded        budget_exceeded     (key maxSpend per period)
    ├── RateLimited          429 requests | tokens      rate_limit_exceeded (RPM / TPM; retry_after_s)
    └── LedgerUnavailable    503 server_error           ledger_unavailable  (JetStream did not ack)

Admission refusals are not raised on the hot path: `ledger.admit` returns them as values using the
same codes (the constants below), and `refusal(code)` gives their status and type.
"""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request"
INVALID_API_KEY = "invalid_api_key"
INVALID_ADMIN_TOKEN = "invalid_admin_token"  # noqa: S105 (an error code, not a password)
INSUFFICIENT_QUOTA = "insufficient_quota"
NOT_FOUND = "not_found"
ALREADY_EXISTS = "already_exists"
BUDGET_EXCEEDED = "budget_exceeded"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
LEDGER_UNAVAILABLE = "ledger_unavailable"


class BillingError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code
        if kind is not None:
            self.type = kind

    def body(self) -> dict[str, Any]:
        """The OpenAI-style error JSON."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(BillingError):
    status = 400
    type = "invalid_request_error"
    code = INVALID_REQUEST


class AuthError(BillingError):
    status = 401
    type = "invalid_request_error"
    code = INVALID_API_KEY


class AdminAuthError(AuthError):
    code = INVALID_ADMIN_TOKEN


class InsufficientQuota(BillingError):
    status = 402
    type = "insufficient_quota"
    code = INSUFFICIENT_QUOTA


class NotFound(BillingError):
    status = 404
    type = "invalid_request_error"
    code = NOT_FOUND


class Conflict(BillingError):
    status = 409
    type = "invalid_request_error"
    code = ALREADY_EXISTS


class BudgetExceeded(BillingError):
    status = 429
    type = "budget_exceeded"
    code = BUDGET_EXCEEDED


class RateLimited(BillingError):
    status = 429
    type = "requests"
    code = RATE_LIMIT_EXCEEDED


class LedgerUnavailable(BillingError):
    status = 503
    type = "server_error"
    code = LEDGER_UNAVAILABLE


_BY_CODE: dict[str, type[BillingError]] = {
    cls.code: cls for cls in (InvalidRequest, AuthError, AdminAuthError, InsufficientQuota, NotFound, Conflict,
                              BudgetExceeded, RateLimited, LedgerUnavailable)
}


def refusal(code: str) -> tuple[int, str]:
    """(HTTP status, OpenAI error type) of a stable code."""
    cls = _BY_CODE.get(code, BillingError)
    return cls.status, cls.type
