"""Ground truth for the emulator's Gemini routes: request bodies checked against google-genai's own types (unknown
fields and unknown enum values refused, Vertex-only fields refused by the SDK's own Gemini-API converters), the
per-model thinking rule from the catalog, and the SDK's response type the emulator's own answers must parse under.

The `google-genai` package is imported here only, lazily: `require()` fails naming it (and EMULATOR_VALIDATE=0)
when validation is on and it is missing.
"""

from __future__ import annotations

import enum
import functools
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from catalog.schema import Catalog

PROVIDER = "gemini"
THINKING_REQUIRED = "Budget 0 is invalid. This model only works in thinking mode."
"""Gemini's 400 message for `thinkingBudget: 0` on a model that always thinks (gemini-2.5-pro), as quoted in
github.com/snailyp/gemini-balance/issues/206; Google's thinking guide says 2.5 Pro cannot disable thinking."""

THINKING_UNSUPPORTED = "Unable to submit request because thinking is not supported by this model."
"""Gemini's 400 for a thinkingConfig on a model that cannot think (gemini-2.0-flash), as quoted in
github.com/googleapis/js-genai/issues/681."""

_ENCODER = msgspec.json.Encoder()


class GroundTruthMissing(RuntimeError):
    """The `google-genai` package is not installed while EMULATOR_VALIDATE is on."""


def require() -> None:
    """Import the SDK now (at startup), so a missing package fails fast instead of on the first request."""
    try:
        import google.genai.types  # noqa: F401
    except ImportError:
        raise GroundTruthMissing("the emulator validates Gemini bodies with the `google-genai` package, which is "
                                 "not installed: install it, or set EMULATOR_VALIDATE=0") from None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


@functools.cache
def _fields() -> dict[str, tuple[Any, Callable[[Any], Any] | None]]:
    """GenerateContentRequest's top-level fields → (google-genai type, the SDK's Gemini-API converter or None).

    The names are those google-genai's `_GenerateContentParameters_to_mldev` / `_GenerateContentConfig_to_mldev`
    write into the REST body (plus `model`, the resource name the REST reference also allows in the body).
    """
    from google.genai import models, types

    return {
        "model": (str, None),
        "contents": (list[types.Content], models._Content_to_mldev),
        "systemInstruction": (types.Content, models._Content_to_mldev),
        "tools": (list[types.Tool], models._Tool_to_mldev),
        "toolConfig": (types.ToolConfig, models._ToolConfig_to_mldev),
        "safetySettings": (list[types.SafetySetting], models._SafetySetting_to_mldev),
        "generationConfig": (types.GenerationConfig, _generation_config_to_mldev),
        "cachedContent": (str, None),
        "labels": (dict[str, str], None),
        "serviceTier": (types.ServiceTier, None),
        "store": (bool, None),
    }


def _generation_config_to_mldev(config: Any) -> Any:
    """The SDK's Gemini-API conversion of the generation fields (it raises for Vertex-only ones)."""
    from google.genai import models

    return models._GenerateContentConfig_to_mldev(None, config, {})  # type: ignore[arg-type]


@functools.cache
def _adapter(kind: Any) -> Any:
    import pydantic

    return pydantic.TypeAdapter(kind)


def _where(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "list[", "dict[", "union[")):
            path += ("." if path else "") + _snake(part)
    return path


def _unknown_enum(value: object, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], enum.Enum] | None:
    """The first enum value google-genai accepted only with a warning (its enums take any string)."""
    if isinstance(value, enum.Enum):
        return None if value.name in type(value).__members__ else (loc, value)
    items: Any = ()
    if isinstance(value, list):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    elif hasattr(value, "model_fields_set"):
        items = ((name, getattr(value, name)) for name in value.model_fields_set)
    for key, item in items:
        found = _unknown_enum(item, (*loc, key))
        if found is not None:
            return found
    return None


def _parse(kind: Any, value: object, loc: tuple[Any, ...]) -> tuple[Any, str | None]:
    """`value` parsed by google-genai's `kind` from JSON (so bytes are base64), or the Google-style refusal."""
    import pydantic

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown enum value only warns; _unknown_enum refuses it below
            parsed = _adapter(kind).validate_json(_ENCODER.encode(value))
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        at = _where((*loc, *error["loc"]))
        if error["type"] == "extra_forbidden":
            key = error["loc"][-1]
            parent = _where((*loc, *error["loc"][:-1]))
            return None, f'Invalid JSON payload received. Unknown name "{key}"' + \
                (f" at '{parent}'" if parent else "") + ": Cannot find field."
        return None, f"Invalid value at '{at}', {_ENCODER.encode(error.get('input')).decode()}: {error['msg']}"
    found = _unknown_enum(parsed, loc)
    if found is not None:
        where, member = found
        return None, f"Invalid value at '{_where(where)}' (type.googleapis.com/google.ai.generativelanguage.v1beta." \
                     f'{type(member).__name__}), "{member.value}"'
    return parsed, None


def check_request(body: object) -> str | None:
    """Why Gemini would refuse this `GenerateContentRequest` body by the SDK's types, or None when it would not."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    return _check_fields(body, _fields(), ())


@functools.cache
def _embed_fields() -> dict[str, tuple[Any, Callable[[Any], Any] | None]]:
    """EmbedContentRequest's fields: those google-genai's `_EmbedContentParametersPrivate_to_mldev` and
    `_EmbedContentConfig_to_mldev` write for each request (`requests[]` in batchEmbedContents)."""
    from google.genai import models, types

    return {"model": (str, None), "content": (types.Content, models._Content_to_mldev), "taskType": (str, None),
            "title": (str, None), "outputDimensionality": (int, None)}


def _check_fields(body: Mapping[str, Any], fields: dict[str, tuple[Any, Callable[[Any], Any] | None]],
                  loc: tuple[Any, ...]) -> str | None:
    for key, value in body.items():
        name = key if key in fields else _camel(key)
        if name not in fields:
            where = _where(loc)
            return f'Invalid JSON payload received. Unknown name "{key}"' + (f" at '{where}'" if where else "") + \
                ": Cannot find field."
        kind, to_mldev = fields[name]
        parsed, error = _parse(kind, value, (*loc, name))
        if error is not None:
            return error
        if to_mldev is None:
            continue
        for i, item in enumerate(parsed if isinstance(parsed, list) else [parsed]):
            try:
                to_mldev(item)
            except ValueError as exc:  # "<field> parameter is only supported in ... not in Gemini Developer API"
                field = re.match(r"\w+", str(exc))
                where = _where((*loc, name, i) if isinstance(parsed, list) else (*loc, name))
                return f'Invalid JSON payload received. Unknown name "{_camel(field[0]) if field else "?"}" at ' \
                       f"'{where}': Cannot find field."
    return None


def check_embed_request(body: object, *, batch: bool) -> str | None:
    """Why Gemini would refuse this `embedContent` (or, with `batch`, `batchEmbedContents`) body, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    if not batch:
        return _check_fields(body, _embed_fields(), ())
    for key in body:
        if key != "requests":
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    requests = body.get("requests")
    if not isinstance(requests, list):
        return "Invalid value at 'requests', expected a list of EmbedContentRequest."
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            return f"Invalid value at 'requests[{i}]', expected an object."
        if (error := _check_fields(request, _embed_fields(), ("requests", i))) is not None:
            return error
    return None


def check_capabilities(model: str, request: Mapping[str, Any], catalog: Catalog) -> str | None:
    """Why Gemini would refuse this (normalised, camelCase) request for `model` by the catalog's rules, or None."""
    known = catalog.model_for_upstream(PROVIDER, model)
    if known is None:
        return None
    config = (request.get("generationConfig") or {}).get("thinkingConfig") or {}
    budget = config.get("thinkingBudget")
    if not known.capabilities.thinking and (budget not in (None, 0) or config.get("thinkingLevel")
                                            or config.get("includeThoughts")):
        return THINKING_UNSUPPORTED
    if budget == 0 and not known.capabilities.thinking_off:
        return THINKING_REQUIRED
    return None


def check_response(body: object) -> str | None:
    """Why google-genai would not read this `GenerateContentResponse` strictly (unknown fields or enum values)."""
    from google.genai import types

    return _parse(types.GenerateContentResponse, body, ())[1]
