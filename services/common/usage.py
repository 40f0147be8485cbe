"""`python -m services.<name> --help`: what a service is and the environment variables it reads, with defaults."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

REQUIRED = None  # a Variable's default when the service refuses to start without it


class Variable(msgspec.Struct, frozen=True):
    """One environment variable a service's settings read; `default` is shown as is ("" = unset)."""

    name: str
    default: str | None
    meaning: str


# Read by services.common.lifecycle.run_service in every service, before its settings.
COMMON = (Variable("ROUTEUR_NICE", "", "0–19: lower this process's CPU priority (the launcher sets it for the "
                   "tracer and archiver)"),)


def render(variables: Sequence[Variable]) -> str:
    """The variables as an aligned table: name, default (or `required`), meaning."""
    rows = [(v.name, "required" if v.default is REQUIRED else (v.default or "(unset)"), v.meaning)
            for v in (*variables, *COMMON)]
    name_width = max(len(name) for name, _, _ in rows)
    default_width = min(28, max(len(default) for _, default, _ in rows))
    lines = ["environment variables (default in the second column):"]
    for name, default, meaning in rows:
        if len(default) > default_width:
            lines.append(f"  {name:<{name_width}}  {default}")
            lines.append(f"  {'':<{name_width}}  {'':<{default_width}}  {meaning}")
        else:
            lines.append(f"  {name:<{name_width}}  {default:<{default_width}}  {meaning}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str], *, service: str, about: str, variables: Sequence[Variable]) -> None:
    """Handle the command line of `python -m services.<service>`: `--help` prints the usage and exits 0; any
    other argument exits 2 (a service is configured by its environment only); no argument returns."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}", description=about,
                                     epilog=render(variables), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(list(argv))
