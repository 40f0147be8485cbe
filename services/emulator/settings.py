"""Emulator settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from catalog import loader
from catalog.schema import Catalog
from services.common.settings import SettingsError, env_bool, env_int, env_str
from services.common.usage import Variable
from services.emulator import openapi_spec
from services.emulator.faults import FaultPlan, decode_plans

VARIABLES = (
    Variable("EMULATOR_HOST", "127.0.0.1", "address to listen on"),
    Variable("EMULATOR_PORT", "8090", "port (0 = any free port, printed as EMULATOR_PORT=<port>)"),
    Variable("EMULATOR_CHUNK_WORDS", "3", "words per streamed chunk"),
    Variable("EMULATOR_LATENCY_MS", "0", "delay before every answer"),
    Variable("EMULATOR_FAULTS", "", 'JSON: model id (or "*") -> fault plan, e.g. {"*": {"status": 503, '
             '"fail_times": 1}}'),
    Variable("EMULATOR_VALIDATE", "True", "check every request against the providers' official schemas and the "
             "catalog's model capabilities, answering what the provider would refuse with its own 400 (False = off)"),
    Variable("OPENAI_OPENAPI_SPEC", "", "OpenAI's OpenAPI description whose schemas validate OpenAI request "
             "bodies, needed when EMULATOR_VALIDATE is on (unset: ../shared/specs/openai-openapi.yaml by the repo)"),
    Variable("ROUTEUR_CATALOG", "", "models TOML whose capabilities the emulator enforces (unset: the bundled one)"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)



class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the emulator listens and how it behaves by default."""

    host: str = "127.0.0.1"
    port: int = 8090
    faults: dict[str, FaultPlan] = msgspec.field(default_factory=dict)
    chunk_words: int = 3
    latency_ms: int = 0
    log_level: str = "INFO"
    validate: bool = True
    catalog: Catalog = msgspec.field(default_factory=loader.load)
    openai_spec: str = msgspec.field(default_factory=lambda: str(openapi_spec.default_path()))


def load(environ: Mapping[str, str]) -> Settings:
    """Settings from EMULATOR_HOST/PORT/FAULTS/CHUNK_WORDS/LATENCY_MS and LOG_LEVEL; raises SettingsError."""
    port = env_int(environ, "EMULATOR_PORT", 8090)
    if not 0 <= port <= 65535:
        raise SettingsError(f"environment variable EMULATOR_PORT must be 0-65535 (0 = any free port), got {port}")
    chunk_words = env_int(environ, "EMULATOR_CHUNK_WORDS", 3)
    if chunk_words < 1:
        raise SettingsError(f"environment variable EMULATOR_CHUNK_WORDS must be at least 1, got {chunk_words}")
    latency_ms = env_int(environ, "EMULATOR_LATENCY_MS", 0)
    if latency_ms < 0:
        raise SettingsError(f"environment variable EMULATOR_LATENCY_MS must be >= 0, got {latency_ms}")
    raw_faults = environ.get("EMULATOR_FAULTS", "").strip()
    try:
        faults = decode_plans(raw_faults) if raw_faults else {}
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SettingsError(
            'environment variable EMULATOR_FAULTS must be a JSON object mapping a model id (or "*") '
            f'to a fault plan such as {{"status": 503, "fail_times": 1}}: {exc}'
        ) from None
    catalog_path = env_str(environ, "ROUTEUR_CATALOG", "")
    try:
        catalog = loader.load(Path(catalog_path) if catalog_path else None)
    except loader.CatalogError as exc:
        raise SettingsError(f"ROUTEUR_CATALOG: {exc}") from None
    validate = env_bool(environ, "EMULATOR_VALIDATE", True)
    openai_spec = env_str(environ, "OPENAI_OPENAPI_SPEC", "") or str(openapi_spec.default_path())
    if validate and not Path(openai_spec).is_file():
        raise SettingsError(f"OpenAI's OpenAPI description {openai_spec} does not exist: set OPENAI_OPENAPI_SPEC to "
                            f"the path of {openapi_spec.SPEC_NAME} (github.com/openai/openai-openapi), or "
                            "EMULATOR_VALIDATE=0 to serve without validating requests")
    return Settings(
        host=env_str(environ, "EMULATOR_HOST", "127.0.0.1"),
        port=port,
        faults=faults,
        chunk_words=chunk_words,
        latency_ms=latency_ms,
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
        validate=validate,
        catalog=catalog,
        openai_spec=openai_spec,
    )
