"""Validate JSON bodies against schemas of OpenAI's own OpenAPI description (/work/shared/specs)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from referencing.jsonschema import DRAFT202012

_REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = Path(
    os.environ.get("OPENAI_OPENAPI_SPEC")
    or next(
        (
            p
            for p in (_REPO.parent / "shared/specs/openai-openapi.yaml", Path("/work/shared/specs/openai-openapi.yaml"))
            if p.exists()
        ),
        _REPO.parent / "shared/specs/openai-openapi.yaml",
    )
)
_BASE_URI = "urn:openai-openapi"


def _to_json_schema(node: Any) -> Any:
    """Rewrite the OpenAPI 3.0 leftovers this 3.1 document still uses into plain JSON Schema 2020-12.

    - `nullable: true` (3.0) becomes `anyOf: [<schema>, {"type": "null"}]`; in 2020-12 it is an unknown
      keyword and, next to a `$ref`, would otherwise leave `null` rejected.
    - boolean `exclusiveMinimum`/`exclusiveMaximum` (3.0) become the numeric 3.1 form.
    """
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _to_json_schema(value) for key, value in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(exclusive), bool):
            if out.pop(exclusive) and bound in out:
                out[exclusive] = out.pop(bound)
    nullable = out.get("nullable")
    if isinstance(nullable, bool):
        del out["nullable"]
        if nullable:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> referencing.Registry:
    with SPEC_PATH.open("rb") as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders only
    resource = DRAFT202012.create_resource(_to_json_schema(document))
    return referencing.Registry().with_resource(_BASE_URI, resource)


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    registry = _registry()
    if schema_name not in registry.contents(_BASE_URI)["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} under #/components/schemas in {SPEC_PATH}")
    return jsonschema.Draft202012Validator(
        {"$ref": f"{_BASE_URI}#/components/schemas/{schema_name}"}, registry=registry
    )


def validate(schema_name: str, instance: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches `#/components/schemas/<schema_name>`."""
    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(instance))
    if error is not None:
        raise error
