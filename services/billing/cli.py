"""`python -m services.billing.cli`: organizations, top-ups, keys, limits and settings through billing's admin API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.billing.settings import CliSettings, load_cli
from services.common.settings import SettingsError


class CliError(Exception):
    """The admin API refused a call; the message is its error message."""


def _call(settings: CliSettings, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{settings.url}/v1/admin{path}", data=data, method=method,  # noqa: S310
                                     headers={"Authorization": f"Bearer {settings.admin_token.reveal()}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 (an operator-given URL)
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read())["error"]
            message = f"{error.code} {detail['code']}: {detail['message']}"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {error.code}"
        raise CliError(message) from None
    except (urllib.error.URLError, OSError) as error:
        raise CliError(f"cannot reach billing at {settings.url}: {error}") from None


def _limit(text: str) -> str | None:
    """`none` (or `null`, `unlimited`) removes a limit."""
    return None if text.lower() in ("none", "null", "unlimited") else text


def _int_limit(text: str) -> int | None:
    value = _limit(text)
    return None if value is None else int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.billing.cli", description=__doc__)
    parser.add_argument("--url", help="billing URL (default: $ROUTEUR_BILLING_URL or .data/run/env)")
    parser.add_argument("--token", help="admin token (default: $ROUTEUR_ADMIN_TOKEN or .data/run/env)")
    parser.add_argument("--env-file", type=Path, default=Path(".data/run/env"), help="written by `make up`")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    sub = command("create-org", "create an organization (and its empty wallet)")
    sub.add_argument("--id", help="org_… id (default: generated)")
    sub.add_argument("--name", default="")
    _org_settings(sub)
    sub = command("set-org", "change an organization's settings, which all its keys inherit (only the options given)")
    sub.add_argument("org")
    _org_settings(sub)
    command("list-orgs", "list organizations with balances")
    sub = command("top-up", "add funds to an organization's wallet")
    sub.add_argument("org")
    sub.add_argument("amount", help="USD, e.g. 25 or 0.50")
    sub.add_argument("--id", help="idempotency id: the same id is applied once")
    sub.add_argument("--note", default="")
    sub = command("adjust", "a signed correction of a wallet (refund, chargeback)")
    sub.add_argument("org")
    sub.add_argument("amount", help="USD, negative to debit")
    sub.add_argument("--reason", required=True)
    sub.add_argument("--id", help="idempotency id")
    sub = command("balance", "an organization's balance, reservations and spend")
    sub.add_argument("org")
    for name, help_text in (("create-key", "mint an API key (the secret is printed once)"),
                            ("set-limits", "change a key's limits or settings (only the options given)")):
        sub = command(name, help_text)
        sub.add_argument("org" if name == "create-key" else "key")
        optional = sub.add_argument_group("limits and settings (absent: unchanged / default)")
        optional.add_argument("--name", default=argparse.SUPPRESS)
        optional.add_argument("--max-spend", type=_limit, default=argparse.SUPPRESS,
                              help="USD per period; 'none' for no limit")
        optional.add_argument("--period", choices=("total", "day", "month"), default=argparse.SUPPRESS)
        optional.add_argument("--rpm", type=_int_limit, default=argparse.SUPPRESS,
                              help="requests per minute; 'none' for no limit")
        optional.add_argument("--tpm", type=_int_limit, default=argparse.SUPPRESS,
                              help="tokens per minute; 'none' for no limit")
        optional.add_argument("--archive-payloads", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        optional.add_argument("--dlp-policy", default=argparse.SUPPRESS)
        if name == "set-limits":
            optional.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
    sub = command("list-keys", "an organization's keys (never their secrets)")
    sub.add_argument("org")
    sub = command("get-key", "one key with its spend")
    sub.add_argument("key")
    sub = command("revoke-key", "revoke a key for good")
    sub.add_argument("key")
    return parser


def _org_settings(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("settings every key of the organization inherits (absent: unchanged / default)")
    group.add_argument("--archive-payloads", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help="archive every request of every key (a key can also turn this on for itself)")
    group.add_argument("--dlp-policy", default=argparse.SUPPRESS,
                       help="DLP policy for keys whose own policy is 'off'")


_ORG_FIELDS = {"archive_payloads": "archive_payloads", "dlp_policy": "dlp_policy"}
_KEY_FIELDS = {"name": "name", "max_spend": "max_spend_usd", "period": "period", "rpm": "rate_limit_rpm",
               "tpm": "token_limit_tpm", "archive_payloads": "archive_payloads", "dlp_policy": "dlp_policy",
               "enabled": "enabled"}


def _given_fields(args: argparse.Namespace, fields: dict[str, str] = _KEY_FIELDS) -> dict[str, Any]:
    """Only the options given on the command line (`none` becomes null: no limit)."""
    return {field: getattr(args, attr) for attr, field in fields.items() if hasattr(args, attr)}


def run(args: argparse.Namespace, settings: CliSettings) -> tuple[Any, str]:
    """Call the API for one command; returns (JSON result, human text)."""
    match args.command:
        case "create-org":
            body = {"id": args.id, "name": args.name, **_given_fields(args, _ORG_FIELDS)}
            org = _call(settings, "POST", "/organizations", body)
            return org, f"created {org['id']}  {_describe_settings(org)}"
        case "set-org":
            org = _call(settings, "PATCH", f"/organizations/{args.org}", _given_fields(args, _ORG_FIELDS))
            return org, f"{org['id']}  {_describe_settings(org)}"
        case "list-orgs":
            orgs = _call(settings, "GET", "/organizations")
            return orgs, "\n".join(f"{o['id']}  balance {o['balance_usd']} USD  {o['name']}" for o in orgs["data"])
        case "top-up":
            body = {"amount_usd": args.amount, "topup_id": args.id, "note": args.note}
            result = _call(settings, "POST", f"/organizations/{args.org}/topups", body)
            org = result["organization"]
            return result, (f"{'already applied' if result['duplicate'] else 'topped up'} {args.org}: "
                            f"balance {org['balance_usd']} USD")
        case "adjust":
            body = {"amount_usd": args.amount, "reason": args.reason, "adjustment_id": args.id}
            result = _call(settings, "POST", f"/organizations/{args.org}/adjustments", body)
            return result, f"adjusted {args.org}: balance {result['organization']['balance_usd']} USD"
        case "balance":
            org = _call(settings, "GET", f"/organizations/{args.org}")
            return org, (f"{org['id']}: balance {org['balance_usd']} USD, reserved {org['reserved_usd']}, "
                         f"available {org['available_usd']}, topped up {org['topped_up_usd']}, "
                         f"spent {org['spent_usd']}; {_describe_settings(org)}")
        case "create-key":
            key = _call(settings, "POST", f"/organizations/{args.org}/keys", _given_fields(args))
            return key, f"created {key['id']} for {key['organization_id']}\nsecret (shown once): {key['secret']}"
        case "set-limits":
            key = _call(settings, "PATCH", f"/keys/{args.key}", _given_fields(args))
            return key, _describe_key(key)
        case "list-keys":
            keys = _call(settings, "GET", f"/organizations/{args.org}/keys")
            return keys, "\n".join(_describe_key(key) for key in keys["data"]) or "(no keys)"
        case "get-key":
            key = _call(settings, "GET", f"/keys/{args.key}")
            return key, _describe_key(key)
        case "revoke-key":
            key = _call(settings, "POST", f"/keys/{args.key}/revoke")
            return key, f"revoked {key['id']}"
    raise CliError(f"unknown command {args.command}")


def _describe_key(key: dict[str, Any]) -> str:
    state = "revoked" if key["revoked"] else "enabled" if key["enabled"] else "disabled"
    spend = "no max" if key["max_spend_usd"] is None else f"max {key['max_spend_usd']} USD/{key['period']}"
    return (f"{key['id']}  {state}  {spend}  spent {key['period_spent_usd']} (total {key['spent_usd']})  "
            f"rpm {key['rate_limit_rpm'] or '-'}  tpm {key['token_limit_tpm'] or '-'}  "
            f"{_describe_settings(key['effective'], own=key)}  {key['name']}")


def _describe_settings(settings: dict[str, Any], own: dict[str, Any] | None = None) -> str:
    """`archive on  dlp redact`; with `own` (a key's own settings), a value inherited from the org says so."""
    def origin(field: str) -> str:
        return " (org)" if own is not None and own[field] != settings[field] else ""
    archive = "on" if settings["archive_payloads"] else "off"
    return f"archive {archive}{origin('archive_payloads')}  dlp {settings['dlp_policy']}{origin('dlp_policy')}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_cli(os.environ, env_file=args.env_file, url=args.url, token=args.token)
        result, text = run(args, settings)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
