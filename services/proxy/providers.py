"""Which upstream serves a route: real provider credentials, or the emulator standing in for it."""

from __future__ import annotations

from typing import Any

import msgspec

from catalog.schema import Catalog, Model, Route
from services.common.settings import Secret


class AwsSigning(msgspec.Struct, frozen=True):
    """What SigV4 needs beyond the access key id (from the proxy's settings)."""

    secret_key: Secret
    region: str
    session_token: Secret


def _signing(fmt: str, aws: AwsSigning | None) -> dict[str, Any]:
    if fmt != "bedrock" or aws is None:
        return {}
    return {"secret_key": aws.secret_key, "region": aws.region, "session_token": aws.session_token}


class Target(msgspec.Struct, frozen=True):
    """Where and how to call one provider."""

    provider: str
    base_url: str
    api_key: Secret
    format: str
    emulated: bool
    api_version: str = ""
    secret_key: Secret = Secret("")  # AWS SigV4 secret (bedrock); the access key id is api_key
    region: str = ""
    session_token: Secret = Secret("")


# Wire formats the proxy can speak today (services/proxy/dialects.py), and where the emulator serves each;
# routes in any other format are listed as unavailable.
EMULATOR_PATHS = {"openai": "/v1", "azure": "", "anthropic": "/v1", "gemini": "/v1beta", "bedrock": ""}
SUPPORTED_FORMATS = frozenset(EMULATOR_PATHS)


def resolve_targets(catalog: Catalog, keys: dict[str, Secret], emulator_url: str, *,
                    base_urls: dict[str, str] | None = None,
                    formats: frozenset[str] = SUPPORTED_FORMATS, aws: AwsSigning | None = None) -> dict[str, Target]:
    """Targets for every provider that can be called: its own key, else the emulator when configured."""
    targets: dict[str, Target] = {}
    for name, provider in catalog.providers.items():
        if provider.format not in formats:
            continue
        key = keys.get(name)
        if key:
            base_url = (base_urls or {}).get(name) or provider.base_url
            targets[name] = Target(name, base_url.rstrip("/"), key, provider.format, emulated=False,
                                   api_version=provider.api_version, **_signing(provider.format, aws))
        elif emulator_url:
            targets[name] = Target(name, emulator_url.rstrip("/") + EMULATOR_PATHS[provider.format],
                                   Secret("emulator"), provider.format, emulated=True,
                                   api_version=provider.api_version)
    return targets


def available_models(catalog: Catalog, targets: dict[str, Target]) -> list[Model]:
    """Models with at least one callable route."""
    return [model for model in catalog.models if any(route.provider in targets for route in model.routes)]


def first_route(model: Model, targets: dict[str, Target]) -> Route | None:
    """The primary callable route of a model (the router issue replaces this with real routing)."""
    for route in model.routes:
        if route.provider in targets:
            return route
    return None
