"""The DLP engine's errors; none of their messages ever contains a detected value.

    Exception
    ├── DlpBlocked      dlp_blocked       a `block` policy found sensitive data (the proxy answers 400)
    ├── DlpError        dlp_error         the engine itself failed; fail closed (the proxy answers 500)
    └── DlpConfigError  dlp_config_error  the policy file is invalid (raised at startup, names the policy)
"""

from __future__ import annotations


class DlpBlocked(Exception):
    """The request holds data that its key's `block` policy refuses to send upstream."""

    code = "dlp_blocked"

    def __init__(self, *, detector: str, detectors: tuple[str, ...] = (), policy: str = "") -> None:
        self.detector = detector
        self.detectors = detectors or (detector,)
        self.policy = policy
        found = ", ".join(self.detectors)
        super().__init__(f"request blocked by data-loss-prevention policy '{policy}': it contains {found}; "
                         "remove that data or ask an admin to change the key's dlp_policy")


class DlpError(Exception):
    """The engine failed unexpectedly; the request must not be sent (never a partially redacted body)."""

    code = "dlp_error"

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"data-loss-prevention engine failed ({where}); the request was not sent")


class DlpConfigError(Exception):
    """The DLP policy file is unreadable or invalid."""

    code = "dlp_config_error"


def failure_site(exc: BaseException) -> str:
    """`ExcType at file.py:line` of the innermost frame: enough to debug, never the exception's own text."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(exc).__name__
    filename = tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {filename}:{tb.tb_lineno}"
