"""Which provider serves a route: credentials, the emulator, supported wire formats."""

from __future__ import annotations

from catalog import loader
from services.common.settings import Secret
from services.proxy import providers


def test_catalog_has_25_models_in_six_families_with_two_hosts_where_there_are_several() -> None:
    catalog = loader.load()
    assert len(catalog.models) >= 25
    assert {m.family for m in catalog.models} == {"gpt", "claude", "gemini", "deepseek", "mistral", "llama"}
    hosts: dict[str, set[str]] = {}
    for model in catalog.models:
        hosts.setdefault(model.family, set()).update(r.provider for r in model.routes)
    for family, names in hosts.items():
        if len(names) > 1:
            assert any(len(m.routes) >= 2 for m in catalog.models if m.family == family), family


def test_provider_without_credentials_is_unavailable_unless_emulated() -> None:
    catalog = loader.load()
    real = providers.resolve_targets(catalog, {"openai": Secret("sk-x")}, "")
    assert set(real) == {"openai"} and not real["openai"].emulated
    assert real["openai"].base_url == "https://api.openai.com/v1"
    names = {m.id for m in providers.available_models(catalog, real)}
    assert "gpt-4o-mini" in names and "deepseek-chat" not in names
    emulated = providers.resolve_targets(catalog, {}, "http://127.0.0.1:9/")
    assert all(t.emulated and t.base_url == "http://127.0.0.1:9" + providers.EMULATOR_PATHS[t.format]
               for t in emulated.values())
    assert {"anthropic", "gemini"} <= set(emulated)


def test_unsupported_formats_are_skipped_and_base_url_can_be_overridden() -> None:
    catalog = loader.load()
    targets = providers.resolve_targets(catalog, {"together": Secret("t")}, "http://emu",
                                        base_urls={"together": "http://gateway.internal/v1/"})
    assert targets["together"].base_url == "http://gateway.internal/v1"
    assert all(t.format in providers.SUPPORTED_FORMATS for t in targets.values())
    model = catalog.model("llama-3.3-70b")
    assert model is not None
    route = providers.first_route(model, {"together": targets["together"]})
    assert route is not None and route.provider == "together"


def test_every_supported_format_has_a_dialect() -> None:
    from services.proxy.dialects import dialect_for

    for fmt in providers.SUPPORTED_FORMATS:
        target = providers.Target("p", "https://bedrock-runtime.eu-west-1.amazonaws.com", Secret("AKIDEXAMPLE"), fmt,
                                  emulated=False, secret_key=Secret("s"), region="eu-west-1")
        call = dialect_for(target).request(target, {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                                           "upstream-model")
        assert call.url.startswith(target.base_url) and call.body
