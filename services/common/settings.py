"""Typed casts from environment variables, used only by each service's settings.py."""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(Exception):
    """A required variable is missing or a value cannot be cast; the message names the variable."""


class Secret:
    """A string that prints as asterisks, so it never lands in a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


_MISSING = object()
ADMIN_TOKEN_VARIABLE = "ROUTEUR_ADMIN_TOKEN"  # noqa: S105 (a variable name, not a password)
MIN_ADMIN_TOKEN_CHARS = 32
ADMIN_TOKEN_RULE = (f"at least {MIN_ADMIN_TOKEN_CHARS} characters from at least two of: lower-case letters, "
                    "upper-case letters, digits, other characters")


def check_admin_token(token: Secret, *, variable: str = ADMIN_TOKEN_VARIABLE) -> None:
    """Refuse a guessable admin token (SettingsError naming the rule, never the token). `make run` generates
    `rt-admin-` + 32 URL-safe random characters; elsewhere e.g. `openssl rand -base64 32`."""
    value = token.reveal()
    classes = {("lower" if c.islower() else "upper" if c.isupper() else "digit" if c.isdigit() else "other")
               for c in value}
    if len(value) < MIN_ADMIN_TOKEN_CHARS or len(classes) < 2:
        raise SettingsError(f"environment variable {variable} is too weak: it must be {ADMIN_TOKEN_RULE} (got "
                            f"{len(value)} characters, {len(classes)} kind(s)); e.g. openssl rand -base64 32")


def env_str(environ: Mapping[str, str], name: str, default: str | object = _MISSING) -> str:
    value = environ.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise SettingsError(f"environment variable {name} is required but not set")
        return str(default)
    return value


def env_int(environ: Mapping[str, str], name: str, default: int | object = _MISSING) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        if default is _MISSING:
            raise SettingsError(f"environment variable {name} is required but not set")
        return int(default)  # type: ignore[call-overload,arg-type]
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_float(environ: Mapping[str, str], name: str, default: float | object = _MISSING) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        if default is _MISSING:
            raise SettingsError(f"environment variable {name} is required but not set")
        return float(default)  # type: ignore[arg-type]
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name} must be a number, got {raw!r}") from None


def env_bool(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"environment variable {name} must be true or false, got {raw!r}")


def env_secret(environ: Mapping[str, str], name: str, default: str | object = _MISSING) -> Secret:
    return Secret(env_str(environ, name, default))
