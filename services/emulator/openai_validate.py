"""OpenAI request bodies checked against OpenAI's own OpenAPI description, refusals in OpenAI's 400 shape.

Ground truth is `CreateChatCompletionRequest` and `CreateEmbeddingRequest` of openai/openai-openapi
(../shared/specs/openai-openapi.yaml). The chat schema leaves unknown top-level fields open, but the API
itself refuses them ("Unrecognized request argument supplied: <name>"), so a top-level name that none of
the schema's `allOf` parts declares is refused too. Validators are built once, when the app starts, over
the components each schema reaches with `oneOf` read as `anyOf` (twice as fast; every `oneOf` those two
schemas reach is a union of disjoint branches, told apart by JSON type, `role` or `type`, which
tests/unit/test_emulator_openai_validate.py checks on the spec in use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.emulator import openapi_spec
from services.emulator.openai_format import error_body

CHAT_SCHEMA = "CreateChatCompletionRequest"
EMBEDDING_SCHEMA = "CreateEmbeddingRequest"
RESPONSES_SCHEMA = "CreateResponse"
AZURE_CHAT_EXTENSIONS = frozenset({"data_sources"})
"""Azure OpenAI's own chat-completions fields (its "On Your Data" extension), accepted on Azure paths only."""

_MAX_DETAIL = 200
_JSON_TYPES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean", "null": "null"}


def declared_properties(path: Path, name: str) -> frozenset[str]:
    """Every property name a schema declares, through `allOf` and `$ref` to other component schemas."""
    names: set[str] = set()
    pending = [openapi_spec.schema(path, name)]
    while pending:
        node = pending.pop()
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            pending.append(openapi_spec.schema(path, ref.rsplit("/", 1)[1]))
        names.update(node.get("properties") or {})
        pending.extend(part for part in node.get("allOf") or [] if isinstance(part, dict))
    return frozenset(names)


class OpenAIValidator:
    """The spec's validators for chat completions and embeddings, compiled once; `chat`/`embedding` answer
    None for a body the spec accepts, else the OpenAI error body to send with status 400."""

    def __init__(self, spec_path: Path) -> None:
        self._chat = openapi_spec.fast_validator(spec_path, CHAT_SCHEMA)
        self._embedding = openapi_spec.fast_validator(spec_path, EMBEDDING_SCHEMA)
        self._chat_fields = declared_properties(spec_path, CHAT_SCHEMA)
        self._responses = openapi_spec.fast_validator(spec_path, RESPONSES_SCHEMA)
        self._responses_fields = declared_properties(spec_path, RESPONSES_SCHEMA)
        import jsonschema

        self._best_match = jsonschema.exceptions.best_match

    def chat(self, body: dict[str, Any], *, azure: bool = False) -> dict[str, Any] | None:
        extensions = AZURE_CHAT_EXTENSIONS if azure else frozenset()
        unknown = sorted(key for key in body if key not in self._chat_fields and key not in extensions)
        if unknown:
            return error_body(f"Unrecognized request argument supplied: {', '.join(unknown)}")
        if azure:
            body = {key: value for key, value in body.items() if key not in extensions}
        return self._refusal(self._chat, body)

    def responses(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A CreateResponse body (OpenAI's and Azure's v1 API alike): undeclared fields refused by name."""
        unknown = sorted(key for key in body if key not in self._responses_fields)
        if unknown:
            return error_body(f"Unrecognized request argument supplied: {', '.join(unknown)}")
        return self._refusal(self._responses, body)

    def embedding(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self._refusal(self._embedding, body)

    def _refusal(self, validator: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        error = self._best_match(_narrow(error) for error in validator.iter_errors(body))
        return None if error is None else error_from(error)


def param_of(path: Any) -> str:
    """`messages[0].content` for the JSON path deque `['messages', 0, 'content']`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def error_from(error: Any) -> dict[str, Any]:
    """OpenAI's 400 body for a jsonschema.ValidationError, in the wording the API uses for that kind of fault."""
    error = _narrow(error)
    param = param_of(error.absolute_path)
    keyword, expected, value = error.validator, error.validator_value, error.instance
    if keyword == "required":
        missing = next((name for name in expected if isinstance(value, dict) and name not in value), "")
        where = f"{param}.{missing}" if param else missing
        return error_body(f"Missing required parameter: '{where}'.", param=where, code="missing_required_parameter")
    if keyword in ("anyOf", "oneOf") and error.context and all(
            sub.validator == "type" and not sub.relative_path for sub in error.context):
        keyword, expected = "type", [kind for sub in error.context for kind in _types(sub.validator_value)]
    if keyword == "type":
        kinds = _types(expected)
        wanted = " or ".join(dict.fromkeys(_JSON_TYPES.get(kind, kind) for kind in kinds))
        return error_body(f"Invalid type for '{param}': expected {wanted}, but got {_type_of(value)} instead.",
                          param=param, code="invalid_type")
    if keyword in ("enum", "const"):
        options = expected if keyword == "enum" else [expected]
        supported = ", ".join(f"'{option}'" for option in options)
        return error_body(f"Invalid value: '{value}'. Supported values are: {supported}.", param=param,
                          code="invalid_value")
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        kind = "integer" if error.schema.get("type") == "integer" else "decimal"  # the schema's type, as OpenAI says
        side, sign = ("below", ">=") if "inimum" in keyword else ("above", "<=")
        bound = "min" if side == "below" else "max"
        return error_body(f"Invalid '{param}': {kind} {side} {bound}imum value. Expected a value {sign} {expected}, "
                          f"but got {value} instead.", param=param, code=f"{kind}_{side}_{bound}_value")
    if keyword == "minItems" and not value:
        return error_body(f"Invalid '{param}': empty array. Expected an array with minimum length {expected}, but got "
                          "an empty array instead.", param=param, code="empty_array")
    if keyword == "additionalProperties" and expected is False and isinstance(value, dict):
        declared = error.schema.get("properties") or {}
        unknown = ", ".join(sorted(key for key in value if key not in declared))
        where = f" in '{param}'" if param else ""
        return error_body(f"Unrecognized request argument supplied{where}: {unknown}", param=param or None)
    if keyword in ("anyOf", "oneOf"):
        return error_body(f"Invalid '{param}': the value matches none of the shapes the API reference accepts "
                          "there.", param=param or None, code="invalid_value")
    return error_body(f"Invalid '{param or 'body'}': {error.message[:_MAX_DETAIL]}", param=param or None,
                      code="invalid_value")


def _narrow(error: Any) -> Any:
    """Descend `anyOf`/`oneOf` failures into the one branch whose discriminator (`role` or `type`) the value
    matches, so a bad message or tool reports its own fault rather than "matches no schema"."""
    import jsonschema

    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[object, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        fitting = [subs for subs in branches.values() if not any(
            list(sub.relative_path) in (["role"], ["type"]) and sub.validator in ("enum", "const") for sub in subs)]
        if len(fitting) != 1:
            return error
        error = jsonschema.exceptions.best_match(fitting[0])
    return error


def _types(expected: object) -> list[str]:
    return [expected] if isinstance(expected, str) else [str(kind) for kind in expected]  # type: ignore[attr-defined]


def _type_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
