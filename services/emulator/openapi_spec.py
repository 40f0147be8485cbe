"""OpenAI's own OpenAPI description (openai/openai-openapi) loaded once as JSON Schema 2020-12 validators.

The document is large (about 3 MB of YAML, a few seconds to load), so each path is read once per process and
each schema's validator is built once; jsonschema, referencing and PyYAML are imported here only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
SPEC_NAME = "openai-openapi.yaml"
_BASE_URI = "urn:openai-openapi"


class SpecError(Exception):
    """The OpenAPI document cannot be used: missing file, missing package or missing schema."""


def default_path() -> Path:
    """`../shared/specs/openai-openapi.yaml` beside the repository (the first candidate that exists)."""
    candidates = (_REPO.parent / "shared/specs" / SPEC_NAME, Path("/work/shared/specs") / SPEC_NAME)
    return next((path for path in candidates if path.exists()), candidates[0])


def to_json_schema(node: Any) -> Any:
    """Rewrite the OpenAPI 3.0 leftovers this 3.1 document still uses into plain JSON Schema 2020-12.

    - `nullable: true` (3.0) becomes `anyOf: [<schema>, {"type": "null"}]`; in 2020-12 it is an unknown
      keyword and, next to a `$ref`, would otherwise leave `null` rejected.
    - boolean `exclusiveMinimum`/`exclusiveMaximum` (3.0) become the numeric 3.1 form.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items()}
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
def _registry(path: Path) -> Any:
    """The converted document as a crawled `referencing.Registry` (crawled: `$ref` lookups are faster)."""
    try:
        import referencing
        import yaml
        from referencing.jsonschema import DRAFT202012
    except ImportError as exc:
        raise SpecError(f"package {exc.name!r} is needed to read {path}; install it "
                        "or set EMULATOR_VALIDATE=0") from None
    if not path.is_file():
        raise SpecError(f"OpenAI's OpenAPI description {path} does not exist: set OPENAI_OPENAPI_SPEC to the path "
                        f"of {SPEC_NAME} (github.com/openai/openai-openapi) or EMULATOR_VALIDATE=0")
    with path.open("rb") as handle:
        document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders only
    resource = DRAFT202012.create_resource(to_json_schema(document))
    return referencing.Registry().with_resource(_BASE_URI, resource).crawl()


def schema(path: Path, name: str) -> dict[str, Any]:
    """`#/components/schemas/<name>` of the converted document (for callers that read declared properties)."""
    schemas: dict[str, Any] = _registry(path).contents(_BASE_URI)["components"]["schemas"]
    if name not in schemas:
        raise SpecError(f"no schema {name!r} under #/components/schemas in {path}")
    return schemas[name]  # type: ignore[no-any-return]


@functools.cache
def validator(path: Path, name: str) -> Any:
    """A `jsonschema.Draft202012Validator` for `#/components/schemas/<name>`, built once per path and name."""
    try:
        import jsonschema
    except ImportError as exc:
        raise SpecError(f"package {exc.name!r} is needed to validate against {path}; install it or set "
                        "EMULATOR_VALIDATE=0") from None
    schema(path, name)
    return jsonschema.Draft202012Validator({"$ref": f"{_BASE_URI}#/components/schemas/{name}"},
                                           registry=_registry(path))


def reachable(path: Path, name: str) -> dict[str, Any]:
    """Every component schema `name` refers to, itself included, directly or through other components."""
    found: dict[str, Any] = {}
    pending: list[Any] = [{"$ref": f"#/components/schemas/{name}"}]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                target = ref.rsplit("/", 1)[1]
                if target not in found:
                    found[target] = schema(path, target)
                    pending.append(found[target])
            pending.extend(value for key, value in node.items() if key not in ("$ref", "description"))
    return found


def one_of_as_any_of(node: Any) -> Any:
    """`oneOf` rewritten as `anyOf`: validation stops at the first matching branch instead of trying them all
    (about twice as fast on chat bodies); the same bodies pass wherever the branches cannot both match."""
    if isinstance(node, list):
        return [one_of_as_any_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {("anyOf" if key == "oneOf" else key): one_of_as_any_of(value) for key, value in node.items()}


@functools.cache
def fast_validator(path: Path, name: str) -> Any:
    """A validator for schema `name` over only the components it reaches, `oneOf` read as `anyOf` (see
    `one_of_as_any_of`; callers check that the unions they validate are disjoint)."""
    import jsonschema
    import referencing
    from referencing.jsonschema import DRAFT202012

    uri = f"{_BASE_URI}:{name}"
    document = {"components": {"schemas": one_of_as_any_of(reachable(path, name))}}
    registry = referencing.Registry().with_resource(uri, DRAFT202012.create_resource(document)).crawl()
    return jsonschema.Draft202012Validator({"$ref": f"{uri}#/components/schemas/{name}"}, registry=registry)


def first_error(path: Path, name: str, instance: object) -> Any:
    """The most relevant `jsonschema.ValidationError` of `instance` against schema `name`, or None."""
    import jsonschema

    return jsonschema.exceptions.best_match(validator(path, name).iter_errors(instance))
