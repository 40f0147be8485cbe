"""DLP policies: the built-in ones and custom ones validated from a TOML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from services.proxy.dlp.detectors import DETECTORS, Scanner
from services.proxy.dlp.errors import DlpConfigError

Mode = Literal["off", "redact", "block"]
MODES: tuple[Mode, ...] = ("off", "redact", "block")

POLICY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # what a key's `dlp_policy` holds (billing validates it too)
RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # uppercased into placeholders: [EMPLOYEE_ID_1]


@dataclass(frozen=True, slots=True)
class Rule:
    """A custom detector: its name labels the placeholders, its pattern finds the values."""

    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Policy:
    """What to do with sensitive data in a request: nothing (`off`), replace it (`redact`, optionally
    restoring it in the answer) or refuse the request (`block`)."""

    name: str
    mode: Mode
    restore: bool = False
    detectors: tuple[str, ...] = DETECTORS
    rules: tuple[Rule, ...] = ()
    scanner: Scanner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        object.__setattr__(self, "scanner", Scanner(self.detectors, [(r.name, r.pattern) for r in self.rules]))


BUILTIN_POLICIES: MappingProxyType[str, Policy] = MappingProxyType({
    "off": Policy("off", "off"),
    "redact": Policy("redact", "redact"),
    "redact_restore": Policy("redact_restore", "redact", restore=True),
    "block": Policy("block", "block"),
})

_POLICY_KEYS = frozenset({"mode", "restore", "detectors", "rules"})
_RULE_KEYS = frozenset({"name", "pattern"})


def load_policies(path: Path | None) -> dict[str, Policy]:
    """The built-in policies plus the custom ones in the TOML file at `path` (None: built-ins only).

    Raises DlpConfigError naming the file and the policy for anything unreadable or invalid."""
    policies = dict(BUILTIN_POLICIES)
    if path is None:
        return policies
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DlpConfigError(f"DLP policy file {path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DlpConfigError(f"DLP policy file {path}: not valid TOML ({exc})") from None
    extra = set(document) - {"policies"}
    if extra:
        raise DlpConfigError(f"DLP policy file {path}: unknown top-level keys {sorted(extra)}; "
                             "define policies as [policies.<name>] tables")
    tables = document.get("policies", {})
    if not isinstance(tables, dict):
        raise DlpConfigError(f"DLP policy file {path}: 'policies' must be a table of [policies.<name>] tables")
    for name, table in tables.items():
        policies[name] = _policy(f"DLP policy file {path}: policy '{name}'", name, table)
    return policies


def _policy(where: str, name: str, table: Any) -> Policy:
    if not POLICY_NAME.fullmatch(name):
        raise DlpConfigError(f"{where}: a policy name is 1-32 characters of a-z, 0-9, '_' or '-', "
                             "starting with a letter")
    if name in BUILTIN_POLICIES:
        raise DlpConfigError(f"{where}: '{name}' is a built-in policy ({', '.join(BUILTIN_POLICIES)}); "
                             "choose another name")
    if not isinstance(table, dict):
        raise DlpConfigError(f"{where}: must be a table")
    extra = set(table) - _POLICY_KEYS
    if extra:
        raise DlpConfigError(f"{where}: unknown keys {sorted(extra)} (allowed: {', '.join(sorted(_POLICY_KEYS))})")
    mode = table.get("mode")
    if mode not in MODES:
        raise DlpConfigError(f"{where}: 'mode' is required and must be one of {', '.join(MODES)}")
    restore = table.get("restore", False)
    if not isinstance(restore, bool):
        raise DlpConfigError(f"{where}: 'restore' must be true or false")
    if restore and mode != "redact":
        raise DlpConfigError(f"{where}: 'restore' only applies to mode = \"redact\"")
    detectors = table.get("detectors", list(DETECTORS))
    if not isinstance(detectors, list) or not all(isinstance(d, str) for d in detectors):
        raise DlpConfigError(f"{where}: 'detectors' must be a list of detector names")
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise DlpConfigError(f"{where}: unknown detector(s) {', '.join(unknown)} (known: {', '.join(DETECTORS)})")
    rules = table.get("rules", [])
    if not isinstance(rules, list):
        raise DlpConfigError(f"{where}: 'rules' must be an array of [[policies.{name}.rules]] tables")
    compiled: list[Rule] = []
    for index, rule in enumerate(rules):
        compiled.append(_rule(f"{where}: rules[{index}]", rule, {r.name for r in compiled}))
    ordered = tuple(d for d in DETECTORS if d in detectors)
    return Policy(name, cast(Mode, mode), restore=restore, detectors=ordered, rules=tuple(compiled))


def _rule(where: str, rule: Any, taken: set[str]) -> Rule:
    if not isinstance(rule, dict) or set(rule) != _RULE_KEYS:
        raise DlpConfigError(f"{where}: a rule is a table with exactly 'name' and 'pattern'")
    name, pattern = rule["name"], rule["pattern"]
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise DlpConfigError(f"{where}: a rule name is 1-32 characters of a-z, 0-9 or '_', starting with a letter")
    if name in DETECTORS or name in taken:
        raise DlpConfigError(f"{where}: rule name '{name}' is already a detector or another rule of this policy")
    if not isinstance(pattern, str) or not pattern:
        raise DlpConfigError(f"{where}: rule '{name}' needs a non-empty 'pattern' string")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DlpConfigError(f"{where}: rule '{name}' has an invalid regular expression: {exc}") from None
    if compiled.fullmatch(""):
        raise DlpConfigError(f"{where}: rule '{name}' matches the empty string; it must match at least one character")
    return Rule(name, compiled)
