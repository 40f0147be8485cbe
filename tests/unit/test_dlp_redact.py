"""DLP policies applied to request bodies: placeholders, body walking, blocking, failures and policy files."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

from services.proxy.dlp import (
    BUILTIN_POLICIES,
    DETECTORS,
    DlpBlocked,
    DlpConfigError,
    DlpError,
    Policy,
    Rule,
    apply,
    load_policies,
)

REDACT = BUILTIN_POLICIES["redact"]
PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_[1-9][0-9]*\]")
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----"


def chat(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), "temperature": 0.2}


class Exploding:
    """Stands in for a compiled custom-rule pattern whose matching fails inside the engine."""

    def finditer(self, text: str) -> Any:
        raise RuntimeError(f"failed on {text}")


def test_same_value_same_placeholder_across_messages_and_count_counts_occurrences() -> None:
    body = chat({"role": "system", "content": "Escalate to bob@x.com."},
                {"role": "user", "content": "Mail bob@x.com and jane@y.org, card 4111 1111 1111 1111, bob@x.com."})
    result = apply(body, REDACT)
    assert result.body["messages"][0]["content"] == "Escalate to [EMAIL_1]."
    assert result.body["messages"][1]["content"] == "Mail [EMAIL_1] and [EMAIL_2], card [CARD_1], [EMAIL_1]."
    assert result.count == 5
    assert result.mapping == {"[EMAIL_1]": "bob@x.com", "[EMAIL_2]": "jane@y.org", "[CARD_1]": "4111 1111 1111 1111"}
    assert result.restore is False
    assert apply(body, BUILTIN_POLICIES["redact_restore"]).restore is True


def test_placeholders_are_named_after_the_detector_or_rule_and_are_json_safe() -> None:
    policy = Policy("p", "redact", rules=(Rule("employee_id", re.compile(r"EMP-[0-9]{6}")),))
    body = chat({"role": "user", "content": "EMP-123456 uses AKIAIOSFODNN7EXAMPLE from 10.0.0.1"})
    result = apply(body, policy)
    assert result.body["messages"][0]["content"] == "[EMPLOYEE_ID_1] uses [AWS_ACCESS_KEY_1] from [IP_1]"
    for name in DETECTORS:
        placeholder = f"[{name.upper()}_12]"
        assert PLACEHOLDER.fullmatch(placeholder) and json.dumps(placeholder) == f'"{placeholder}"'


def test_the_callers_body_is_never_mutated_and_only_what_changes_is_copied() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    untouched = {"role": "user", "content": "nothing to see"}
    body = chat(untouched, {"role": "user", "content": [{"type": "text", "text": "I am bob@x.com"}, image]})
    before = copy.deepcopy(body)
    result = apply(body, REDACT)
    assert body == before
    assert result.body is not body and result.body["messages"] is not body["messages"]
    assert result.body["messages"][0] is untouched
    parts = result.body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "I am [EMAIL_1]"} and parts[1] is image
    assert result.body["temperature"] == 0.2


def test_every_text_of_a_chat_body_is_covered_and_names_are_not() -> None:
    arguments = json.dumps({"to": "bob@x.com", "note": 'say "hi"\nto jane@y.org', "key": PEM})
    body = chat(
        {"role": "developer", "content": [{"type": "text", "text": "ops: ops@corp.example"}]},
        {"role": "assistant", "content": None, "name": "carol@z.net", "refusal": "not to dave@w.io",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "send", "arguments": arguments}}],
         "function_call": {"name": "legacy", "arguments": '{"card": "4111-1111-1111-1111"}'}},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sent_to": "bob@x.com", "ip": "192.168.0.7"}'},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "bob@x.com", "format": "wav"}}]},
    )
    result = apply(body, REDACT)
    messages = result.body["messages"]
    assert messages[0]["content"][0]["text"] == "ops: [EMAIL_1]"
    assert messages[1]["name"] == "carol@z.net"
    assert messages[1]["refusal"] == "not to [EMAIL_2]"
    redacted = json.loads(messages[1]["tool_calls"][0]["function"]["arguments"])
    assert redacted == {"to": "[EMAIL_3]", "note": 'say "hi"\nto [EMAIL_4]', "key": "[PRIVATE_KEY_1]"}
    assert json.loads(messages[1]["function_call"]["arguments"]) == {"card": "[CARD_1]"}
    assert json.loads(messages[2]["content"]) == {"sent_to": "[EMAIL_3]", "ip": "[IP_1]"}
    assert messages[3] is body["messages"][3]
    # the mapping holds the values themselves, not their JSON escapes
    assert result.mapping["[PRIVATE_KEY_1]"] == PEM and result.mapping["[EMAIL_3]"] == "bob@x.com"
    assert result.count == 8


def test_a_rule_matching_across_json_quotes_keeps_tool_arguments_valid() -> None:
    policy = Policy("p", "redact", rules=(Rule("pin", re.compile(r'pin": "[0-9]{4}')),))
    arguments = json.dumps({"to": "bob@x.com", "pin": "1234", "bob@x.com": ["jane@y.org", 7]})
    body = chat({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "user", "content": 'my pin": "1234'})
    result = apply(body, policy)
    sent = json.loads(result.body["messages"][0]["tool_calls"][0]["function"]["arguments"])
    assert sent == {"to": "[EMAIL_1]", "pin": "1234", "[EMAIL_1]": ["[EMAIL_2]", 7]}
    assert result.body["messages"][1]["content"] == "my [PIN_1]"
    assert result.count == 4


def test_embeddings_inputs() -> None:
    single = apply({"model": "e", "input": "bob@x.com"}, REDACT)
    assert single.body["input"] == "[EMAIL_1]"
    batch = apply({"model": "e", "input": ["hello", "bob@x.com", "bob@x.com"]}, REDACT)
    assert batch.body["input"] == ["hello", "[EMAIL_1]", "[EMAIL_1]"] and batch.count == 2
    tokens = {"model": "e", "input": [[4111, 1111], [1, 2]]}
    assert apply(tokens, REDACT).body["input"] is tokens["input"]


def test_off_is_the_identity_and_scans_nothing() -> None:
    body = chat({"role": "user", "content": "bob@x.com 4111 1111 1111 1111"})
    result = apply(body, BUILTIN_POLICIES["off"])
    assert result.body is body and result.count == 0 and result.mapping == {} and result.restore is False
    # an `off` policy whose rule would fail proves nothing was scanned
    exploding = Policy("x", "off", rules=(Rule("boom", cast(re.Pattern[str], Exploding())),))
    assert apply(body, exploding).body is body


def test_nothing_found_still_returns_a_new_dict() -> None:
    body = chat({"role": "user", "content": "hello"})
    result = apply(body, REDACT)
    assert result.body == body and result.body is not body and result.count == 0


def test_block_names_the_detectors_and_never_the_value() -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    body = chat({"role": "user", "content": "hi"}, {"role": "user", "content": f"use {secret} or mail bob@x.com"})
    with pytest.raises(DlpBlocked, match="aws_access_key, email") as caught:
        apply(body, BUILTIN_POLICIES["block"])
    error = caught.value
    assert error.detector == "aws_access_key" and error.detectors == ("aws_access_key", "email")
    assert error.policy == "block" and error.code == "dlp_blocked"
    for text in (str(error), repr(error), repr(error.args)):
        assert secret not in text and "bob@x.com" not in text
    clean = chat({"role": "user", "content": "hello"})
    assert apply(clean, BUILTIN_POLICIES["block"]).count == 0


def test_block_looks_inside_tool_arguments() -> None:
    body = chat({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"ssn": "123-45-6789"}'}}]})
    with pytest.raises(DlpBlocked, match="ssn"):
        apply(body, BUILTIN_POLICIES["block"])


@pytest.mark.parametrize("mode", ["redact", "block"])
def test_an_engine_failure_is_a_dlp_error_without_the_text(mode: str) -> None:
    policy = Policy("x", cast(Any, mode), rules=(Rule("boom", cast(re.Pattern[str], Exploding())),))
    body = chat({"role": "user", "content": "private text bob@x.com"})
    before = copy.deepcopy(body)
    with pytest.raises(DlpError, match="RuntimeError") as caught:
        apply(body, policy)
    assert "bob@x.com" not in str(caught.value) and "private text" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert body == before
    assert not issubclass(DlpError, DlpBlocked) and not issubclass(DlpBlocked, DlpError)


def test_a_detector_subset_ignores_the_others() -> None:
    policy = Policy("emails-only", "redact", detectors=("email",))
    result = apply(chat({"role": "user", "content": "bob@x.com 4111 1111 1111 1111"}), policy)
    assert result.body["messages"][0]["content"] == "[EMAIL_1] 4111 1111 1111 1111"


# --- policy files --------------------------------------------------------------------------------------

GOOD = """
[policies.pii-strict]
mode = "redact"
restore = true
detectors = ["email", "card", "iban"]
[[policies.pii-strict.rules]]
name = "employee_id"
pattern = "EMP-[0-9]{6}"

[policies.secrets_block]
mode = "block"
detectors = ["openai_key", "aws_access_key"]

[policies.quiet]
mode = "off"
"""


def test_no_file_means_the_built_in_policies() -> None:
    policies = load_policies(None)
    assert sorted(policies) == ["block", "off", "redact", "redact_restore"]
    assert policies["redact_restore"].mode == "redact" and policies["redact_restore"].restore
    assert policies["redact"].detectors == DETECTORS


def test_a_good_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "dlp.toml"
    path.write_text(GOOD)
    policies = load_policies(path)
    assert sorted(policies) == ["block", "off", "pii-strict", "quiet", "redact", "redact_restore", "secrets_block"]
    strict = policies["pii-strict"]
    assert (strict.name, strict.mode, strict.restore, strict.detectors) == ("pii-strict", "redact", True,
                                                                            ("email", "card", "iban"))
    result = apply(chat({"role": "user", "content": "EMP-123456 bob@x.com +1 415 555 0132"}), strict)
    assert result.body["messages"][0]["content"] == "[EMPLOYEE_ID_1] [EMAIL_1] +1 415 555 0132"
    assert policies["secrets_block"].mode == "block" and policies["quiet"].mode == "off"


@pytest.mark.parametrize(("text", "message"), [
    ('[policies.p1]\nmode = "redact"\ndetectors = ["emial"]', "policy 'p1': unknown detector.*emial"),
    ('[policies.p2]\nmode = "redact"\n[[policies.p2.rules]]\nname = "r"\npattern = "EMP-[0-9"',
     "policy 'p2': rules\\[0\\]: rule 'r' has an invalid regular expression"),
    ('[policies."Bad Name"]\nmode = "redact"', "policy 'Bad Name': a policy name is"),
    ('[policies.redact]\nmode = "block"', "policy 'redact': 'redact' is a built-in policy"),
    ('[policies.p3]\nmode = "block"\nrestore = true', "policy 'p3': 'restore' only applies"),
    ('[policies.p4]\nmode = "scrub"', "policy 'p4': 'mode' is required"),
    ("[policies.p5]\nrestore = true", "policy 'p5': 'mode' is required"),
    ('[policies.p6]\nmode = "redact"\nrestor = true', "policy 'p6': unknown keys \\['restor'\\]"),
    ('[policies.p7]\nmode = "redact"\n[[policies.p7.rules]]\nname = "email"\npattern = "x"',
     "policy 'p7': rules\\[0\\]: rule name 'email' is already"),
    ('[policies.p8]\nmode = "redact"\n[[policies.p8.rules]]\nname = "r"\npattern = "a*"',
     "policy 'p8': rules\\[0\\]: rule 'r' matches the empty string"),
    ('[policies.p9]\nmode = "redact"\n[[policies.p9.rules]]\nname = "Bad-Rule"\npattern = "x"',
     "policy 'p9': rules\\[0\\]: a rule name is"),
    ('[policies.p10]\nmode = "redact"\n[[policies.p10.rules]]\nname = "r"', "policy 'p10': rules\\[0\\]: a rule is"),
    ('[policies.p11]\nmode = "redact"\ndetectors = "email"', "policy 'p11': 'detectors' must be a list"),
    ('[policies.p12]\nmode = "redact"\nrestore = "yes"', "policy 'p12': 'restore' must be true or false"),
    ('[policy.p13]\nmode = "redact"', "unknown top-level keys \\['policy'\\]"),
    ("[policies.p14\nmode = 1", "not valid TOML"),
])
def test_bad_policy_files_name_the_policy_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dlp.toml"
    path.write_text(text)
    with pytest.raises(DlpConfigError, match=message):
        load_policies(path)


def test_a_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(DlpConfigError, match="cannot read it"):
        load_policies(tmp_path / "absent.toml")
