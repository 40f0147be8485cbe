"""Ground truth for the emulator's /v1/messages: request bodies checked against the `anthropic` SDK's param
TypedDicts (required keys, types, unknown keys refused), the per-model sampling rule from the catalog, and the
SDK's response types (`Message`, `RawMessageStreamEvent`) that the emulator's own answers must parse under.

The `anthropic` package is imported here only, lazily: `require()` fails naming it (and EMULATOR_VALIDATE=0)
when validation is on and it is missing.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from catalog.schema import SAMPLING_ONE_OF, Catalog

PROVIDER = "anthropic"
DOCUMENTED_VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
"""The `anthropic-version` values the versioning page lists (https://docs.anthropic.com/en/api/versioning)."""

DOCUMENTED_EXTRAS: dict[str, Any] = {"temperature": float, "top_p": float, "top_k": int}
"""Top-level parameters the Messages API reference documents (https://docs.anthropic.com/en/api/messages) that
SDK 2.x's MessageCreateParams no longer lists; the API still takes them, so they are allowed explicitly, typed as
the last SDK that listed them did (anthropic 0.121.0, src/anthropic/types/message_create_params.py at
anthropics/anthropic-sdk-python@009b035: temperature float 0.0-1.0, top_k int, top_p float)."""
STREAM = "stream"
"""`stream` is in MessageCreateParamsStreaming / NonStreaming, not in the base TypedDict."""
SAMPLING_ERROR = "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
"""The API's 400 message (quoted in github.com/Vali-98/ChatterUI/issues/564, langfuse/langfuse/issues/9882)."""


class GroundTruthMissing(RuntimeError):
    """The `anthropic` package is not installed while EMULATOR_VALIDATE is on."""


def require() -> None:
    """Import the SDK now (at startup), so a missing package fails fast instead of on the first request."""
    try:
        import anthropic.types  # noqa: F401
    except ImportError:
        raise GroundTruthMissing("the emulator validates Anthropic bodies with the `anthropic` package, which is "
                                 "not installed: install it, or set EMULATOR_VALIDATE=0") from None


@functools.cache
def versions() -> frozenset[str]:
    """The documented versions and the one the installed SDK sends (2.17 sends "2026-10-21")."""
    from anthropic._constants import ANTHROPIC_API_VERSION  # the SDK's only statement of its version
    return DOCUMENTED_VERSIONS | {ANTHROPIC_API_VERSION}


@functools.cache
def _params(counting: bool, beta: bool = False) -> Any:
    """The SDK's TypedDict for a body: the beta Messages API's when the request carries betas."""
    if counting and beta:
        from anthropic.types.beta.message_count_tokens_params import MessageCountTokensParams as BetaCount
        return BetaCount
    if counting:
        from anthropic.types.message_count_tokens_params import MessageCountTokensParams
        return MessageCountTokensParams
    if beta:
        from anthropic.types.beta.message_create_params import MessageCreateParamsBase as BetaBase
        return BetaBase
    from anthropic.types.message_create_params import MessageCreateParamsBase
    return MessageCreateParamsBase


@functools.cache
def _hints(td: type) -> dict[str, Any]:
    return typing.get_type_hints(td)


@functools.cache
def _required(td: type) -> tuple[str, ...]:
    """The keys a TypedDict requires. The SDK's modules use `from __future__ import annotations`, so on Python 3.11
    `__required_keys__` cannot see `Required[...]`/`NotRequired[...]` (it follows each class's totality only):
    the markers are read from the resolved hints and applied on top."""
    hints = typing.get_type_hints(td, include_extras=True)
    marked = {key for key, tp in hints.items() if typing.get_origin(tp) is typing.Required}
    optional = {key for key, tp in hints.items() if typing.get_origin(tp) is typing.NotRequired}
    return tuple(sorted((set(getattr(td, "__required_keys__", ())) | marked) - optional))


def _is_typeddict(tp: object) -> bool:
    """A TypedDict class, from `typing` or `typing_extensions` (the SDK's; `typing.is_typeddict` misses those)."""
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def _check_typeddict(value: object, td: type, at: str, extras: Mapping[str, Any] | None = None) -> str | None:
    if not isinstance(value, dict):
        return f"{at or 'body'}: Input should be a valid dictionary"
    hints = {**_hints(td), **(extras or {})}
    for key in _required(td):
        if key not in value:
            return f"{_join(at, key)}: Field required"
    open_ended = (getattr(td, "__pydantic_config__", None) or {}).get("extra") == "allow"  # e.g. InputSchemaTyped
    for key, item in value.items():
        if key not in hints:
            if open_ended:
                continue
            return f"{_join(at, str(key))}: Extra inputs are not permitted"
        if (error := check(item, hints[key], _join(at, key))) is not None:
            return error
    return None


def _join(at: str, key: object) -> str:
    return f"{at}.{key}" if at else str(key)


def _choices(values: typing.Sequence[object]) -> str:
    """pydantic's wording of a Literal: 'a', 'b' or 'c'."""
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


_TAGS = ("type", "role")
"""The keys the API's unions are tagged by (content blocks, tools and sources by `type`, messages by `role`)."""


def _union(value: object, options: tuple[Any, ...], at: str) -> str | None:
    """None when any option takes the value; else the error of the option whose tag (`type` or `role`) matches,
    a message naming the tag no option has, or the deepest error (the option that got furthest)."""
    if isinstance(value, dict):  # JSON objects are TypedDicts here; the SDK's BaseModel options take objects only
        options = tuple(o for o in options if not isinstance(o, type) or _is_typeddict(o) or o is dict) or options
    errors: list[str] = []
    for option in options:  # every option first: a later one (Dict[str, object]) may take what a tagged one refused
        if (error := check(value, option, at)) is None:
            return None
        errors.append(error)
    for option, error in zip(options, errors, strict=True):
        if not _is_typeddict(option) or not isinstance(value, dict):
            continue
        for tag in _TAGS:
            expected = _hints(option).get(tag)
            literal = typing.get_origin(expected) is typing.Literal
            if tag in value and literal and value[tag] in typing.get_args(expected):
                return error
    for tag in _TAGS:
        tagged = [o for o in options if _is_typeddict(o) and typing.get_origin(_hints(o).get(tag)) is typing.Literal]
        if isinstance(value, dict) and tagged and len(tagged) == len([o for o in options if _is_typeddict(o)]):
            names = [a for o in tagged for a in typing.get_args(_hints(o)[tag])]
            if tag == "role":  # a plain Literal to pydantic, as the API words it
                return f"{_join(at, tag)}: Input should be {_choices(names)}"
            expected = ", ".join(map(repr, names))
            return f"{_join(at, tag)}: Input tag {value.get(tag)!r} does not match any of the expected tags: {expected}"
    return max(errors, key=lambda e: len(e.partition(":")[0])) if errors else f"{at}: Input is not valid"  # deepest


def check(value: object, tp: Any, at: str) -> str | None:
    """None when `value` (decoded JSON) has type `tp` (an SDK param annotation), else a pydantic-style message."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated or origin in (typing.Required, typing.NotRequired):
        return check(value, args[0], at)
    if tp is Any or tp is object:
        return None
    if origin in (typing.Union, types.UnionType):
        return _union(value, args, at)
    if tp is type(None):
        return None if value is None else f"{at}: Input should be None"
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return None
        return f"{at}: Input should be {_choices(args)}"
    if _is_typeddict(tp):
        return _check_typeddict(value, tp, at)
    if tp is str:
        return None if isinstance(value, str) else f"{at}: Input should be a valid string"
    if tp is bool:
        return None if isinstance(value, bool) else f"{at}: Input should be a valid boolean"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            f"{at}: Input should be a valid integer"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            f"{at}: Input should be a valid number"
    name = getattr(origin, "__name__", "") or getattr(tp, "__name__", "")
    if name in ("Iterable", "Sequence", "list", "List", "SequenceNotStr"):
        if not isinstance(value, list):
            return f"{at}: Input should be a valid list"
        for i, item in enumerate(value):
            if (error := check(item, args[0] if args else Any, f"{at}.{i}")) is not None:
                return error
        return None
    if name in ("dict", "Dict", "Mapping"):
        if not isinstance(value, dict):
            return f"{at}: Input should be a valid dictionary"
        for key, item in value.items():
            if (error := check(item, args[1] if len(args) == 2 else Any, f"{at}.{key}")) is not None:
                return error
        return None
    return f"{at}: Input should be a valid JSON value"  # IO[bytes], PathLike: file inputs that JSON cannot carry


def check_body(body: object, *, counting: bool = False, beta: bool = False) -> str | None:
    """The first way `body` departs from MessageCreateParams (plus the documented extras and `stream`), or from
    MessageCountTokensParams for /v1/messages/count_tokens; the beta API's params when the request has `beta`s
    (`betas` itself is the anthropic-beta header, never a body field)."""
    if isinstance(body, dict) and beta and "betas" in body:
        return "betas: Extra inputs are not permitted"
    if counting:
        return _check_typeddict(body, _params(True, beta), "")
    return _check_typeddict(body, _params(False, beta), "", {**DOCUMENTED_EXTRAS, STREAM: bool})


def check_capabilities(body: Mapping[str, Any], catalog: Catalog, *, provider: str = PROVIDER) -> str | None:
    """What the catalog says the body's model refuses: temperature with top_p on Claude 4.5 and Opus 4.1, thinking
    on a model that cannot think (Claude 3.5 Haiku). `provider` is the catalog provider whose upstream id `model`
    is (Bedrock's InvokeModel takes the same body)."""
    model = catalog.model_for_upstream(provider, str(body.get("model")))
    if model is None:
        return None
    thinking = body.get("thinking")
    if not model.capabilities.thinking and isinstance(thinking, dict) and thinking.get("type") != "disabled":
        return f"'{body.get('model')}' does not support thinking."
    if model.capabilities.sampling == SAMPLING_ONE_OF and body.get("temperature") is not None \
            and body.get("top_p") is not None:
        return SAMPLING_ERROR
    return None


# --------------------------------------------------------------------------- responses and stream events


@functools.cache
def _strict() -> tuple[Any, Any, Any]:
    """TypeAdapters of the SDK's Message and RawMessageStreamEvent refusing fields the SDK does not declare
    (the SDK's own models allow extras; a copy of each with extra='forbid' is built once)."""
    import pydantic
    from anthropic import types as at

    forbid: dict[type, type] = {}

    def strict(tp: Any) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            if tp not in forbid:
                forbid[tp] = tp  # recursion guard
                fields: dict[str, Any] = {name: (strict(f.annotation), f) for name, f in tp.model_fields.items()}
                forbid[tp] = pydantic.create_model(
                    tp.__name__, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
            return forbid[tp]
        if origin is typing.Annotated:
            return typing.Annotated[(strict(args[0]), *args[1:])]
        if args and origin in (typing.Union, types.UnionType):
            return typing.Union.__getitem__(tuple(strict(a) for a in args))  # a Union built from a tuple
        if args and origin in (list, dict):
            return origin[tuple(strict(a) for a in args)]
        return tp

    return (pydantic.TypeAdapter(strict(at.Message)), pydantic.TypeAdapter(strict(at.RawMessageStreamEvent)),
            pydantic.TypeAdapter(strict(at.ErrorResponse)))


def check_message(body: Mapping[str, Any]) -> None:
    """Raise pydantic.ValidationError unless `body` parses as anthropic.types.Message with no extra field."""
    _strict()[0].validate_python(body, strict=True)


def check_event(data: Mapping[str, Any]) -> None:
    """Raise pydantic.ValidationError unless `data` parses as a RawMessageStreamEvent with no extra field; the
    documented `ping` and `error` events (https://docs.anthropic.com/en/docs/build-with-claude/streaming) are
    outside that union (the SDK skips pings and raises on errors): `{"type": "ping"}` exactly, and an error as
    anthropic.types.ErrorResponse."""
    if data.get("type") == "ping" and len(data) == 1:
        return
    adapters = _strict()
    (adapters[2] if data.get("type") == "error" else adapters[1]).validate_python(data, strict=True)
