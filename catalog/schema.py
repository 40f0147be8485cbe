"""Typed shape of the catalog file; msgspec validates it at load time."""

from __future__ import annotations

from decimal import Decimal

import msgspec


class Provider(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    base_url: str
    api_key_env: str
    base_url_env: str = ""
    api_version: str = ""


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: str
    upstream_model: str
    input_per_m: Decimal
    output_per_m: Decimal
    cached_input_per_m: Decimal | None = None
    reasoning_per_m: Decimal | None = None
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    family: str
    context_window: int
    routes: tuple[Route, ...]
    max_output_tokens: int = 16384
    kind: str = "chat"  # chat | embedding


class Catalog(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    as_of: str
    providers: dict[str, Provider]
    models: tuple[Model, ...]

    def model(self, model_id: str) -> Model | None:
        for model in self.models:
            if model.id == model_id:
                return model
        return None
