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
    # Prompt-cache writes (Anthropic's 5-minute TTL: 1.25x input) and 1-hour writes (2x input); unset: input price.
    cache_write_per_m: Decimal | None = None
    cache_write_1h_per_m: Decimal | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


SAMPLING_ANY = "any"
SAMPLING_ONE_OF = "temperature_or_top_p"  # the model refuses `temperature` and `top_p` in the same request


class Capabilities(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-model rules the providers' request schemas cannot express. The adapters map parameters by them (a
    parameter the model cannot take is a 400 naming it) and the emulator refuses what the real model refuses,
    both reading this one table. Each rule that differs from the default cites its evidence in `sources`."""

    sampling: str = SAMPLING_ANY  # SAMPLING_ANY | SAMPLING_ONE_OF
    thinking_off: bool = True  # thinking can be switched off (Gemini `thinkingBudget: 0`); False: always thinks
    tool_result_status: bool = False  # Bedrock Converse `toolResult.status` accepted (Claude 3/4, Nova)
    forced_tool: bool = False  # Bedrock Converse `toolChoice.tool` accepted (Claude 3+, Nova)
    sources: tuple[str, ...] = ()
    thinking: bool = True  # the model can think at all (Gemini `thinkingConfig`); False: reasoning_effort refused


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    family: str
    context_window: int
    routes: tuple[Route, ...]
    max_output_tokens: int = 16384
    kind: str = "chat"  # chat | embedding
    capabilities: Capabilities = Capabilities()


class Catalog(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    as_of: str
    providers: dict[str, Provider]
    models: tuple[Model, ...]

    def model(self, model_id: str) -> Model | None:
        for model in self.models:
            if model.id == model_id:
                return model
        return None

    def model_for_upstream(self, provider: str, upstream_model: str) -> Model | None:
        """The model a provider's own model id belongs to (what the emulator sees on the wire)."""
        for model in self.models:
            if any(r.provider == provider and r.upstream_model == upstream_model for r in model.routes):
                return model
        return None
