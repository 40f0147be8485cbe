"""Validation of admin and bus inputs (amounts, limits, ids); pure, raises errors.InvalidRequest."""

from __future__ import annotations

import re
from decimal import Decimal

import msgspec

from proto.billing import KeyLimits, KeySettings, Period
from services.billing import errors
from services.common.ids import new_ulid

ZERO = Decimal(0)
MAX_AMOUNT_USD = Decimal(1_000_000_000)
MONEY_PLACES = 12
SECRET_PREFIX = "rk-"  # noqa: S105 (the public prefix of API keys, not a secret)
_MIN_SECRET_CHARS = 43  # secrets.token_urlsafe(32): 32 random bytes
_ORG_ID = re.compile(r"org_[A-Za-z0-9_-]{1,64}")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DLP_POLICY = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class KeyPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Changes to a key: absent fields stay as they are; null removes a limit."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    max_spend_usd: Decimal | None | msgspec.UnsetType = msgspec.UNSET
    period: Period | msgspec.UnsetType = msgspec.UNSET
    rate_limit_rpm: int | None | msgspec.UnsetType = msgspec.UNSET
    token_limit_tpm: int | None | msgspec.UnsetType = msgspec.UNSET
    archive_payloads: bool | msgspec.UnsetType = msgspec.UNSET
    dlp_policy: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class OrgPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Changes to an organization's settings: absent fields stay as they are."""

    archive_payloads: bool | msgspec.UnsetType = msgspec.UNSET
    dlp_policy: str | msgspec.UnsetType = msgspec.UNSET


def money(value: Decimal, param: str, *, positive: bool = False, signed: bool = False) -> Decimal:
    """Check a USD amount: finite, at most 12 decimal places, within ±1e9; ≥ 0 (> 0 if `positive`)."""
    if not value.is_finite():
        raise errors.InvalidRequest(f"{param} must be a finite number", param=param)
    if value.copy_abs() > MAX_AMOUNT_USD:  # copy_abs: no context rounding, so 1E+999999999 cannot overflow
        raise errors.InvalidRequest(f"{param} must be at most {MAX_AMOUNT_USD} USD", param=param)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        raise errors.InvalidRequest(f"{param} has more than {MONEY_PLACES} decimal places", param=param)
    if positive and value <= 0:
        raise errors.InvalidRequest(f"{param} must be greater than 0", param=param)
    if not signed and value < 0:
        raise errors.InvalidRequest(f"{param} must not be negative", param=param)
    return value


def check_limits(limits: KeyLimits) -> KeyLimits:
    """Validate limits; raises InvalidRequest naming the field."""
    if limits.max_spend_usd is not None:
        money(limits.max_spend_usd, "max_spend_usd")
    for param, value in (("rate_limit_rpm", limits.rate_limit_rpm), ("token_limit_tpm", limits.token_limit_tpm)):
        if value is not None and not 1 <= value <= 1_000_000_000:
            raise errors.InvalidRequest(f"{param} must be between 1 and 1e9 (null for no limit)", param=param)
    return limits


def check_settings(settings: KeySettings) -> KeySettings:
    if not _DLP_POLICY.fullmatch(settings.dlp_policy):
        raise errors.InvalidRequest("dlp_policy must be a short lowercase policy name such as 'off'",
                                    param="dlp_policy")
    return settings


def check_name(value: str, param: str = "name") -> str:
    if len(value) > 200:
        raise errors.InvalidRequest(f"{param} must be at most 200 characters", param=param)
    return value


def token_id(value: str | None, param: str, now_ms: int) -> str:
    if value is None:
        return new_ulid(now_ms)
    if not _TOKEN_ID.fullmatch(value):
        raise errors.InvalidRequest(f"{param} must be 1–128 characters of A-Z a-z 0-9 _ . : -", param=param)
    return value


def check_org_id(org_id: str) -> str:
    if not _ORG_ID.fullmatch(org_id):
        raise errors.InvalidRequest("id must look like org_<1-64 of A-Z a-z 0-9 _ ->", param="id")
    return org_id


def check_secret(secret: str) -> str:
    """An imported key secret must look like one we would mint: `rk-` + 32 random bytes (url-safe base64)."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) < len(SECRET_PREFIX) + _MIN_SECRET_CHARS:
        raise errors.InvalidRequest(f"an imported secret must be '{SECRET_PREFIX}' + at least "
                                    f"{_MIN_SECRET_CHARS} characters (32 random bytes)", param="secret")
    return secret
