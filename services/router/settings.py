"""Router settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.skeleton import BaseSettings, load_base


def load(environ: Mapping[str, str]) -> BaseSettings:
    return load_base(environ, prefix="ROUTER", default_port=8081)
