"""Ground truth for the emulator's Bedrock routes: Converse/ConverseStream bodies checked with botocore's own service
model and `ParamValidator`, the catalog's per-model rules (inference profiles, sampling, toolResult.status, forced
tool choice), and the strict reading of the emulator's own answers against the operations' output shapes.

botocore is imported here only, lazily: `require()` fails naming it (and EMULATOR_VALIDATE=0) when validation is on
and it is missing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from catalog.schema import SAMPLING_ONE_OF, Capabilities, Catalog

PROVIDER = "bedrock"
SERVICE = "bedrock-runtime"
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
"""Geography prefixes of Bedrock's system-defined (cross-Region) inference profile ids."""
ON_DEMAND_REFUSED = ("Invocation of model ID {model_id} with on-demand throughput isn’t supported. Retry your request "
                     "with the ID or ARN of an inference profile that contains this model.")
"""Bedrock's ValidationException for a bare base model id that is only callable through an inference profile (the
apostrophe is U+2019, as Bedrock sends it), quoted in github.com/anthropics/anthropic-sdk-python/issues/894 and
github.com/aws-samples/bedrock-multi-agents-collaboration-workshop/issues/21."""
BOTH_SAMPLING = ("The model returned the following errors: `temperature` and `top_p` cannot both be specified for "
                 "this model. Please use only one.")
"""Bedrock's ValidationException for temperature and topP together on Claude Sonnet 4.5 / Haiku 4.5 / Opus 4.1, quoted
in github.com/BerriAI/litellm/issues/15070 and github.com/aws-samples/bedrock-access-gateway/issues/191."""
_PADDING = "p"
"""The padding member Bedrock adds to every ConverseStream event payload (not in the service model)."""


class GroundTruthMissing(RuntimeError):
    """botocore (or its bedrock-runtime service model) is not available while EMULATOR_VALIDATE is on."""


def require() -> None:
    """Load botocore's service model now (at startup), so a missing package fails fast, not on the first request."""
    try:
        _service_model()
    except ImportError:
        raise GroundTruthMissing("the emulator validates Bedrock bodies with the `botocore` package, which is not "
                                 "installed: install it, or set EMULATOR_VALIDATE=0") from None


@functools.cache
def _service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE)


def operation(stream: bool) -> Any:
    """botocore's OperationModel of Converse or ConverseStream."""
    return _service_model().operation_model("ConverseStream" if stream else "Converse")


def _uri_members(op: Any) -> frozenset[str]:
    return frozenset(name for name, shape in op.input_shape.members.items()
                     if shape.serialization.get("location") is not None)


def check_body(model_id: str, body: object, *, stream: bool) -> str | None:
    """The ValidationException message when botocore's ParamValidator refuses the request, else None.

    botocore's rest-json serializer writes every input member without a `location` (all but `modelId`, which goes in
    the URI) as a JSON body member, blobs as base64 strings; the params are read back the same way: the URI's model
    id plus the body's members. A body member that is a URI member, or unknown, is refused.
    """
    from botocore.validate import ParamValidator

    if not isinstance(body, dict):
        return "Unable to parse request body: the body must be a JSON object."
    op = operation(stream)
    misplaced = sorted(set(body) & _uri_members(op))
    if misplaced:
        return f"Unable to parse request body: unknown field '{misplaced[0]}'"
    report = ParamValidator().validate({"modelId": model_id, **body}, op.input_shape)
    if not report.has_errors():
        return None
    lines = [line.strip() for line in report.generate_report().splitlines() if line.strip()]
    count = len(lines)
    return f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(lines)


def profile_only(catalog: Catalog) -> frozenset[str]:
    """The base model ids the catalog calls only through a system-defined inference profile (its Bedrock route is
    `us.…`, `global.…`, …): Bedrock refuses those bare ids on demand."""
    ids = set()
    for model in catalog.models:
        for route in model.routes:
            if route.provider == PROVIDER and route.upstream_model.startswith(PROFILE_PREFIXES):
                ids.add(route.upstream_model.split(".", 1)[1])
    return frozenset(ids)


def capabilities(catalog: Catalog, model_id: str) -> Capabilities:
    """The catalog capabilities of the model a Bedrock model id (or inference-profile ARN) names; the permissive-
    by-default Capabilities() for a model the catalog does not list."""
    upstream = model_id.rsplit("inference-profile/", 1)[-1]
    model = catalog.model_for_upstream(PROVIDER, upstream)
    return model.capabilities if model is not None else Capabilities()


def check_model(catalog: Catalog, model_id: str, body: Mapping[str, Any]) -> str | None:
    """The ValidationException message for what this model refuses (catalog rules), else None."""
    if model_id in profile_only(catalog):
        return ON_DEMAND_REFUSED.format(model_id=model_id)
    caps = capabilities(catalog, model_id)
    inference = body.get("inferenceConfig") or {}
    if caps.sampling == SAMPLING_ONE_OF and inference.get("temperature") is not None \
            and inference.get("topP") is not None:
        return BOTH_SAMPLING
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    for kind in ("any", "tool"):
        if kind in choice and not caps.forced_tool:
            return (f"This model doesn't support the toolConfig.toolChoice.{kind} field. Remove "
                    f"toolConfig.toolChoice.{kind} and try again.")
    if not caps.tool_result_status:
        for i, message in enumerate(body.get("messages") or []):
            for j, block in enumerate(message.get("content") or []):
                if "status" in (block.get("toolResult") or {}):
                    # Our wording: Bedrock's own message for this is not published; the rule is botocore's
                    # ToolResultBlock.status note ("only supported by Amazon Nova and Anthropic Claude 3 and 4").
                    return (f"This model doesn't support the status field in messages.{i}.content.{j}.toolResult. "
                            "Remove status and try again.")
    return None


# --------------------------------------------------------------------------- the emulator's answers, read strictly


def unknown_members(value: object, shape: Any, at: str = "") -> list[str]:
    """Paths of the members of `value` that `shape` (a botocore Shape) does not declare, and of values whose JSON
    type is not the shape's; a document member holds anything."""
    kind = shape.type_name
    if kind == "structure":
        if shape.metadata.get("document"):
            return []
        if not isinstance(value, dict):
            return [f"{at or '.'}: a {type(value).__name__}, not a structure"]
        out = [f"{at}.{name}" for name in value if name not in shape.members]
        for name, member in shape.members.items():
            if name in value:
                out.extend(unknown_members(value[name], member, f"{at}.{name}"))
        if shape.metadata.get("union") and len(value) != 1:
            out.append(f"{at}: a union must set exactly one member")
        return out
    if kind == "list":
        if not isinstance(value, list):
            return [f"{at}: not a list"]
        return [p for i, item in enumerate(value) for p in unknown_members(item, shape.member, f"{at}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{at}: not a map"]
        return [p for k, item in value.items() for p in unknown_members(item, shape.value, f"{at}.{k}")]
    if kind == "string":
        if not isinstance(value, str) or (shape.enum and value not in shape.enum):
            return [f"{at}: {value!r} is not a {shape.name}"]
        return []
    if kind in ("integer", "long"):
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{at}: not an integer"]
    if kind in ("float", "double"):
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{at}: not a number"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{at}: not a boolean"]
    return []  # blob, timestamp, document: their JSON forms vary


def response_problems(body: Mapping[str, Any]) -> list[str]:
    """What botocore's Converse output shape does not declare in a Converse response body."""
    return unknown_members(dict(body), operation(False).output_shape)


def event_problems(event_type: str, payload: Mapping[str, Any]) -> list[str]:
    """What the ConverseStream event `event_type`'s shape does not declare in its payload (Bedrock's `p` padding
    aside), or that the event type itself is unknown."""
    events = operation(True).output_shape.members["stream"]
    if event_type not in events.members:
        return [f"unknown event type {event_type!r}"]
    fields = {k: v for k, v in payload.items() if k != _PADDING}
    return unknown_members(fields, events.members[event_type], event_type)


# --------------------------------------------------------------------------- InvokeModel with Anthropic bodies

ANTHROPIC_BEDROCK_VERSION = "bedrock-2023-05-31"
"""The only `anthropic_version` Bedrock's Claude Messages body takes (model-parameters-anthropic-claude-messages
-request-response.html)."""
COUNT_REFUSED = "The provided model doesn't support counting tokens."
"""CountTokens' ValidationException for an inference-profile id or a model it cannot count (AWS's count-tokens user
guide: CountTokens takes a foundation model id; some cross-Region-only Claude models are not counted there)."""


def check_invoke(model_id: str, raw: bytes, *, stream: bool, content_type: str | None,
                 accept: str | None) -> str | None:
    """botocore's ParamValidator on InvokeModel / InvokeModelWithResponseStream (the body is a blob)."""
    from botocore.validate import ParamValidator

    op = _service_model().operation_model("InvokeModelWithResponseStream" if stream else "InvokeModel")
    params: dict[str, Any] = {"modelId": model_id, "body": raw}
    if content_type is not None:
        params["contentType"] = content_type
    if accept is not None:
        params["accept"] = accept
    return _report(ParamValidator().validate(params, op.input_shape))


def check_count_tokens(model_id: str, body: object) -> str | None:
    """botocore's ParamValidator on CountTokens (rest-json: `input.invokeModel.body` is a base64 blob in the JSON)."""
    import base64
    import binascii

    from botocore.validate import ParamValidator

    if not isinstance(body, dict):
        return "Unable to parse request body: the body must be a JSON object."
    params: dict[str, Any] = {"modelId": model_id, **body}
    invoke = (body.get("input") or {}).get("invokeModel") if isinstance(body.get("input"), dict) else None
    if isinstance(invoke, dict) and isinstance(invoke.get("body"), str):
        try:
            blob = base64.b64decode(invoke["body"], validate=True)
        except (binascii.Error, ValueError):
            return "Unable to parse request body: input.invokeModel.body is not base64."
        params["input"] = {**body["input"], "invokeModel": {**invoke, "body": blob}}
    op = _service_model().operation_model("CountTokens")
    return _report(ParamValidator().validate(params, op.input_shape))


def _report(report: Any) -> str | None:
    if not report.has_errors():
        return None
    lines = [line.strip() for line in report.generate_report().splitlines() if line.strip()]
    return f"{len(lines)} validation error{'s' if len(lines) > 1 else ''} detected: " + "; ".join(lines)


def malformed(problem: str) -> str:
    """Bedrock's ValidationException wording for a model body its JSON schema refuses."""
    return f"Malformed input request: #: {problem}, please reformat your input and try again."


def anthropic_body_problem(body: object) -> str | None:
    """What Bedrock's own schema refuses in a Claude Messages body before the model sees it: not an object, no or
    another `anthropic_version`, the keys the anthropic SDK's Bedrock client moves out of the body (`model`,
    `stream`), an `anthropic_beta` that is not a list of strings."""
    if not isinstance(body, dict):
        return malformed("expected type: JSONObject")
    if "anthropic_version" not in body:
        return malformed("required key [anthropic_version] not found")
    if body["anthropic_version"] != ANTHROPIC_BEDROCK_VERSION:
        return malformed(f"anthropic_version: {body['anthropic_version']!r} is not a valid enum value")
    for key in ("model", "stream"):
        if key in body:
            return malformed(f"extraneous key [{key}] is not permitted")
    betas = body.get("anthropic_beta")
    if betas is not None and (not isinstance(betas, list) or not all(isinstance(b, str) for b in betas)):
        return malformed("anthropic_beta: expected type: JSONArray of strings")
    return None
