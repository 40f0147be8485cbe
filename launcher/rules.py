"""The routing rules file the launcher writes for a fresh data dir, derived from the catalog in use (pure)."""

from __future__ import annotations

from catalog.schema import Catalog

PREFERRED_MODEL = "gpt-4o-mini"
HEADER = "# Routing rules (see catalog/rules.example.toml); edits apply within a second, no restart.\n"
_NO_MODEL = "# No default_model: the catalog in use has no chat model, so `\"model\": \"auto\"` is refused.\n"


def demo_model(catalog: Catalog) -> str | None:
    """The chat model the launcher's defaults name: gpt-4o-mini when the catalog has it, else its first chat
    model, else None."""
    chat = [model.id for model in catalog.models if model.kind == "chat"]
    if PREFERRED_MODEL in chat:
        return PREFERRED_MODEL
    return chat[0] if chat else None


def default_rules(catalog: Catalog) -> str:
    """A rules file the router accepts with this catalog: `auto` means `demo_model(catalog)`, no other rule."""
    model = demo_model(catalog)
    return HEADER + (f'default_model = "{model}"\n' if model else _NO_MODEL)


def written_by_launcher(text: str) -> bool:
    """True for a rules file that is one of `default_rules`' outputs (for any catalog): the launcher may rewrite
    it when the catalog changes. A file anyone edited is left alone."""
    if not text.startswith(HEADER):
        return False
    body = text.removeprefix(HEADER)
    if body == _NO_MODEL:
        return True
    lines = body.splitlines()
    return len(lines) == 1 and lines[0].startswith('default_model = "') and lines[0].endswith('"') \
        and body.endswith("\n")
