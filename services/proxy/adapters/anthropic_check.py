"""The structural check of a Messages body sent natively to a Claude route (pure): what Anthropic would answer 400
for is refused here, naming the field, so a malformed body never reaches the provider (nor costs an attempt).

The key sets are the anthropic SDK's param TypedDicts (MessageCreateParams, the content block params, ToolParam,
MetadataParam, CacheControlEphemeralParam; tests/unit/test_anthropic_native.py holds them to the installed SDK),
plus `temperature`, `top_p`, `top_k` and `stream`, which the API documents. Block types Routeur does not read
(server tool results, search results, container uploads) pass as objects; the provider checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.proxy.adapters.errors import TranslationError

TOP_LEVEL = frozenset({
    "model", "max_tokens", "messages", "cache_control", "container", "diagnostics", "inference_geo", "metadata",
    "output_config", "service_tier", "speed", "stop_sequences", "system", "thinking", "tool_choice", "tools",
    "user_profile_id", "workspace_id", "temperature", "top_p", "top_k", "stream",
})
BLOCK_KEYS: dict[str, frozenset[str]] = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control", "transformations"}),
    "document": frozenset({"type", "source", "cache_control", "citations", "context", "title"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control", "caller", "toolset_name"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
BETA_TOP_LEVEL = frozenset({"billing_policy", "compaction", "context_management", "fallback_credit_token", "fallbacks",
                            "mcp_servers", "thread"})
"""What the beta Messages API adds to the body (the SDK's beta MessageCreateParams, less `betas`, which is the
`anthropic-beta` header): taken when the request carries betas, as Claude Code's do. With betas, block types and
block keys beyond the stable ones are the provider's to judge."""
NOT_NULL = frozenset({"metadata", "output_config", "service_tier", "stop_sequences", "system", "thinking",
                      "tool_choice", "tools", "user_profile_id", "workspace_id", "temperature", "top_p", "top_k",
                      "stream"})
"""Top-level fields whose SDK type has no null (the rest, e.g. `container`, `inference_geo`, take null)."""
OTHER_BLOCKS = frozenset({"search_result", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
                          "code_execution_tool_result", "bash_code_execution_tool_result",
                          "text_editor_code_execution_tool_result", "tool_search_tool_result", "container_upload"})
TOOL_KEYS = frozenset({"name", "input_schema", "description", "cache_control", "type", "allowed_callers",
                       "defer_loading", "eager_input_streaming", "input_examples", "strict"})
_REQUIRED = {"text": ("text", str), "tool_use": ("input", dict), "tool_result": ("tool_use_id", str),
             "thinking": ("signature", str), "redacted_thinking": ("data", str), "image": ("source", dict),
             "document": ("source", dict)}
_CHOICES = ("auto", "any", "tool", "none")


class Refused(TranslationError):
    """A body Anthropic would refuse; `param` names where."""


def _fail(param: str, problem: str) -> Refused:
    return Refused(f"{param}: {problem}", param=param)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cache_control(value: object, at: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") != "ephemeral" or set(value) - {"type", "ttl"} \
            or value.get("ttl", "5m") not in ("5m", "1h"):
        raise _fail(f"{at}.cache_control", "Input should be {'type': 'ephemeral'} with an optional ttl '5m' or '1h'")


def _block(block: object, at: str, *, in_result: bool = False, beta: bool = False) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _fail(at, "Input should be a valid content block")
    kind = block["type"]
    if (kind in OTHER_BLOCKS and not in_result) or (beta and kind not in BLOCK_KEYS):
        return
    keys = BLOCK_KEYS.get(kind)
    if keys is None or (in_result and kind not in ("text", "image", "document", "search_result")):
        raise _fail(f"{at}.type", f"Input tag '{kind}' does not match any of the expected tags")
    if kind == "search_result":
        return
    if not beta and (extra := sorted(set(block) - keys)):
        raise _fail(f"{at}.{extra[0]}", "Extra inputs are not permitted")
    field, kind_of = _REQUIRED[kind]
    if not isinstance(block.get(field), kind_of):
        raise _fail(f"{at}.{field}", "Field required" if field not in block else "Input has the wrong type")
    if kind == "text" and not block["text"].strip():
        raise _fail(at, "text content blocks must contain non-whitespace text")
    if kind == "thinking" and not isinstance(block.get("thinking"), str):
        raise _fail(f"{at}.thinking", "Field required")
    if kind == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
        raise _fail(f"{at}.id", "tool_use blocks need a string id and name")
    if kind == "tool_result":
        content = block.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _fail(f"{at}.content", "Input should be a valid string or list")
        for j, inner in enumerate(content if isinstance(content, list) else []):
            _block(inner, f"{at}.content.{j}", in_result=True, beta=beta)
        if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
            raise _fail(f"{at}.is_error", "Input should be a valid boolean")
    if kind != "thinking" and kind != "redacted_thinking":
        _cache_control(block.get("cache_control"), at)


def _content(content: object, at: str, *, may_be_empty: bool, beta: bool) -> None:
    if isinstance(content, str):
        if not content.strip() and not (may_be_empty and content == ""):
            raise _fail(at, "text content must contain non-whitespace text")
        return
    if not isinstance(content, list):
        raise _fail(at, "Input should be a valid string or list")
    if not content and not may_be_empty:
        raise _fail(at, "all messages must have non-empty content except for the optional final assistant message")
    for j, block in enumerate(content):
        _block(block, f"{at}.{j}", beta=beta)


def _tools(tools: object) -> None:
    if not isinstance(tools, list):
        raise _fail("tools", "Input should be a valid list")
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _fail(f"tools.{j}.name", "Field required")
        if tool.get("type") in (None, "custom"):
            if extra := sorted(set(tool) - TOOL_KEYS):
                raise _fail(f"tools.{j}.{extra[0]}", "Extra inputs are not permitted")
            if not isinstance(tool.get("input_schema"), dict):
                raise _fail(f"tools.{j}.input_schema", "Field required")
            if tool.get("description") is not None and not isinstance(tool["description"], str):
                raise _fail(f"tools.{j}.description", "Input should be a valid string")
            _cache_control(tool.get("cache_control"), f"tools.{j}")
        elif not isinstance(tool.get("type"), str):
            raise _fail(f"tools.{j}.type", "Input should be a valid string")


def _options(body: Mapping[str, Any]) -> None:
    if body.get("top_k") is not None and (not _is_int(body["top_k"]) or body["top_k"] < 0):
        raise _fail("top_k", "Input should be a non-negative integer")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}
                                 or not isinstance(metadata.get("user_id", ""), (str, type(None)))):
        raise _fail("metadata", "Input should be {'user_id': string or null}")
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled", "adaptive"):
            raise _fail("thinking.type", "Input should be 'enabled', 'disabled' or 'adaptive'")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not _is_int(budget) or budget < 1024:
                raise _fail("thinking.budget_tokens", "Input should be an integer of at least 1024")
            if body["max_tokens"] <= budget:
                raise _fail("max_tokens", "`max_tokens` must be greater than `thinking.budget_tokens`")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
            raise _fail("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            raise _fail("tool_choice.name", "Field required")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _fail("service_tier", "Input should be 'auto' or 'standard_only'")
    for name, kinds in (("output_config", dict), ("container", (str, dict)), ("mcp_servers", list),
                        ("diagnostics", dict), ("inference_geo", str), ("user_profile_id", str),
                        ("workspace_id", str), ("speed", str)):
        if body.get(name) is not None and not isinstance(body[name], kinds):
            raise _fail(name, "Input has the wrong type")
    _cache_control(body.get("cache_control"), "body")


def check(body: Mapping[str, Any], *, beta: bool = False) -> None:
    """Raise Refused for what the Messages API refuses (after anthropic_inbound.check_request's basics); `beta`:
    the request carries betas (the `anthropic-beta` header or `?beta=true`)."""
    allowed = TOP_LEVEL | BETA_TOP_LEVEL if beta else TOP_LEVEL
    if extra := sorted(key for key in body if key not in allowed):
        raise _fail(str(extra[0]), "Extra inputs are not permitted")
    if null := sorted(key for key in NOT_NULL if key in body and body[key] is None):
        raise _fail(null[0], "Input should not be null")
    system = body.get("system")
    if isinstance(system, list):
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise _fail(f"system.{j}.type", "system blocks must be text blocks")
            _block(block, f"system.{j}", beta=beta)
    elif isinstance(system, str) and system and not system.strip():
        raise _fail("system", "text content blocks must contain non-whitespace text")
    messages = body["messages"]
    for i, message in enumerate(messages):
        if set(message) - {"role", "content"}:
            raise _fail(f"messages.{i}.{sorted(set(message) - {'role', 'content'})[0]}",
                        "Extra inputs are not permitted")
        last_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        _content(message["content"], f"messages.{i}.content", may_be_empty=last_assistant, beta=beta)
        _pairs(messages, i)
    if body.get("tools") is not None:
        _tools(body["tools"])
    _options(body)


def _ids(message: object, kind: str, key: str) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    return [b.get(key) for b in content if isinstance(b, dict) and b.get("type") == kind] \
        if isinstance(content, list) else []


def _pairs(messages: list[Any], i: int) -> None:
    """Each tool_use is answered by a tool_result in the next message, and each tool_result answers one."""
    if i + 1 < len(messages):
        answered = set(_ids(messages[i + 1], "tool_result", "tool_use_id"))
        if missing := [u for u in _ids(messages[i], "tool_use", "id") if u not in answered]:
            raise _fail(f"messages.{i}", f"`tool_use` ids were found without `tool_result` blocks immediately "
                                         f"after: {', '.join(missing)}")
    offered = set(_ids(messages[i - 1], "tool_use", "id")) if i else set()
    if unknown := [r for r in _ids(messages[i], "tool_result", "tool_use_id") if r not in offered]:
        raise _fail(f"messages.{i}.content", f"unexpected `tool_use_id` found in `tool_result` blocks: "
                                             f"{', '.join(unknown)}")
