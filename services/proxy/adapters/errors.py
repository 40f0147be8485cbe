"""Errors shared by the provider adapters: a request that cannot be expressed in a provider's format.

    TranslationError (ValueError; .message, .param)   → the proxy answers 400 naming `param`
    └── UnsupportedParameter (.model)                  → 400 `unsupported_parameter`
"""

from __future__ import annotations


class TranslationError(ValueError):
    """A request that cannot be expressed in the provider's wire format; the proxy answers 400 naming `param`."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedParameter(TranslationError):
    """A parameter the target model's API has no equivalent for; `api` names that API in the message."""

    api = ""

    def __init__(self, param: str, model: str, detail: str = "") -> None:
        where = f" ({self.api})" if self.api else ""
        super().__init__(f"'{param}' is not supported by model '{model}'{where}" + (f": {detail}" if detail else ""),
                         param=param)
        self.model = model
