"""Load and validate the catalog file; a bad file raises CatalogError naming where it is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from catalog.schema import SAMPLING_ANY, SAMPLING_ONE_OF, Catalog

DEFAULT_PATH = Path(__file__).with_name("models.toml")


class CatalogError(Exception):
    """The catalog file cannot be used; the message says which file and which entry."""


def parse(text: str, *, source: str = "<catalog>") -> Catalog:
    """Parse catalog TOML text into a validated Catalog."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: {exc}") from None
    try:
        catalog = msgspec.convert(raw, Catalog, strict=False)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"{source}: {exc}") from None
    _check(catalog, source)
    return catalog


def load(path: Path | None = None) -> Catalog:
    """Read the catalog from `path` (default: the bundled models.toml)."""
    target = path or DEFAULT_PATH
    return parse(target.read_text(encoding="utf-8"), source=str(target))


def _check(catalog: Catalog, source: str) -> None:
    seen: set[str] = set()
    for index, model in enumerate(catalog.models):
        where = f"{source}: models[{index}] ({model.id!r})"
        if model.id in seen:
            raise CatalogError(f"{where}: duplicate model id")
        seen.add(model.id)
        if model.kind not in ("chat", "embedding"):
            raise CatalogError(f"{where}: kind must be 'chat' or 'embedding'")
        if not model.routes:
            raise CatalogError(f"{where}: needs at least one route")
        if model.capabilities.sampling not in (SAMPLING_ANY, SAMPLING_ONE_OF):
            raise CatalogError(f"{where}: capabilities.sampling must be {SAMPLING_ANY!r} or {SAMPLING_ONE_OF!r}")
        if model.capabilities != type(model.capabilities)() and not model.capabilities.sources:
            raise CatalogError(f"{where}: capabilities that differ from the defaults need their sources")
        for route in model.routes:
            if route.provider not in catalog.providers:
                raise CatalogError(f"{where}: route names unknown provider {route.provider!r}")
            prices = (route.input_per_m, route.output_per_m, route.cached_input_per_m, route.reasoning_per_m,
                      route.cache_write_per_m, route.cache_write_1h_per_m)
            if any(price is not None and price < 0 for price in prices):
                raise CatalogError(f"{where}: prices must not be negative")
