"""The DLP step of the pipeline: the key's policy applied to the request body before any upstream call.

Fails closed: an unknown policy name or any error inside the engine answers 500 and nothing is sent
upstream; `block` answers 400 `content_policy_violation` naming the detector, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.logs import get_logger
from services.proxy import dlp
from services.proxy.errors import InvalidRequest, ProxyError

log = get_logger()


class ScreeningFailed(ProxyError):
    status = 500
    type = "server_error"
    code = "dlp_error"


def screen(policies: Mapping[str, dlp.Policy], policy_name: str, body: dict[str, Any]) -> dlp.Redaction:
    """The body to send upstream (redacted per the policy), with the substitution count and restore map."""
    policy = policies.get(policy_name)
    if policy is None:
        log.error("dlp_policy_unknown", policy=policy_name)
        raise ScreeningFailed(f"the key's DLP policy {policy_name!r} is not defined on this gateway; the request "
                              "was not sent upstream")
    try:
        return dlp.apply(body, policy)
    except dlp.DlpBlocked as exc:
        raise InvalidRequest(str(exc), code="content_policy_violation") from None
    except Exception as exc:  # the engine's own DlpError or anything unexpected: fail closed
        log.error("dlp_engine_failed", policy=policy_name, error=type(exc).__name__)
        raise ScreeningFailed("the request could not be screened for sensitive data, so it was not sent "
                              "upstream") from None
