"""Validate JSON bodies against schemas of OpenAI's own OpenAPI description (/work/shared/specs); the loading
and conversion live in services/emulator/openapi_spec.py, which the emulator uses too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.emulator import openapi_spec

SPEC_PATH = Path(os.environ.get("OPENAI_OPENAPI_SPEC") or openapi_spec.default_path())


def validate(schema_name: str, instance: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches `#/components/schemas/<schema_name>`."""
    error = openapi_spec.first_error(SPEC_PATH, schema_name, instance)
    if error is not None:
        raise error
