"""The rules file on disk: noticed when it changes (mtime, size, inode), reloaded and validated."""

from __future__ import annotations

import os
from pathlib import Path

from catalog.schema import Catalog
from proto.routing import RuleSet
from services.router import rules
from services.router.errors import RulesError

Loaded = tuple[RuleSet, str]
_UNREADABLE = "unreadable"


class RulesFile:
    """`poll()` (blocking: run it in a thread) returns None when nothing changed since the last poll, else
    the new (rules, digest) or the RulesError saying why the file cannot be used. Follows symlinks, so a
    Kubernetes ConfigMap update (an atomic symlink swap) is seen like an in-place edit."""

    def __init__(self, path: Path, *, catalog: Catalog) -> None:
        self.path = path
        self._catalog = catalog
        self._signature: tuple[object, ...] | None = None
        self._rejected_digest: str | None = None

    def poll(self) -> Loaded | RulesError | None:
        try:
            info = os.stat(self.path)
            signature: tuple[object, ...] = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError as exc:
            signature = ("unreadable", str(exc))
        if signature == self._signature and self._rejected_digest is None:
            return None
        self._signature = signature
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            if self._rejected_digest == _UNREADABLE:
                return None
            return self._rejected(f"{self.path}: cannot read the rules file ({exc})", _UNREADABLE)
        digest = rules.digest(text)
        if digest == self._rejected_digest:
            return None  # the same bad content (re-checked every poll: a quick rewrite may keep the mtime)
        try:
            ruleset = rules.parse(text, catalog=self._catalog, source=str(self.path))
        except RulesError as exc:
            return self._rejected(exc.message, digest)
        self._rejected_digest = None
        return ruleset, digest

    def _rejected(self, message: str, digest: str) -> RulesError:
        self._rejected_digest = digest
        return RulesError(message)
