"""The launcher's default routing rules follow the catalog in use, and the router accepts them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from catalog import loader
from catalog.schema import Catalog
from launcher.rules import default_rules, demo_model, written_by_launcher
from launcher.stack import _PROVIDER_KEY_VARS, DEFAULT_RULES, Stack, StackConfig
from services.router import rules

BUNDLED = loader.DEFAULT_PATH.read_text(encoding="utf-8")


def without_model(text: str, model_id: str) -> str:
    """Catalog TOML text with one [[models]] entry (and its routes) removed."""
    head, *entries = text.split("\n[[models]]\n")
    kept = [entry for entry in entries if not entry.startswith(f'id = "{model_id}"\n')]
    assert len(kept) == len(entries) - 1, f"{model_id} is not in the catalog"
    return "\n[[models]]\n".join([head, *kept])


def only_embeddings(text: str) -> str:
    head, *entries = text.split("\n[[models]]\n")
    kept = [entry for entry in entries if re.search(r'^kind = "embedding"$', entry, re.M)]
    assert kept, "the bundled catalog has no embedding model any more: pick another fixture"
    return "\n[[models]]\n".join([head, *kept])


def accepted(text: str, catalog: Catalog) -> rules.RuleSet:
    return rules.parse(text, catalog=catalog, source="<launcher default>")


def test_bundled_catalog_keeps_gpt_4o_mini_as_the_default() -> None:
    catalog = loader.load()
    assert default_rules(catalog) == DEFAULT_RULES
    assert accepted(DEFAULT_RULES, catalog).default_model == "gpt-4o-mini"


def test_catalog_without_gpt_4o_mini_gets_its_first_chat_model() -> None:
    catalog = loader.parse(without_model(BUNDLED, "gpt-4o-mini"))
    first_chat = next(model.id for model in catalog.models if model.kind == "chat")
    assert demo_model(catalog) == first_chat != "gpt-4o-mini"
    with pytest.raises(rules.RulesError, match="unknown model 'gpt-4o-mini'"):
        accepted(DEFAULT_RULES, catalog)  # what the launcher wrote before: the router refused to start
    assert accepted(default_rules(catalog), catalog).default_model == first_chat


def test_catalog_without_chat_models_gets_no_default_model() -> None:
    catalog = loader.parse(only_embeddings(BUNDLED))
    assert demo_model(catalog) is None
    assert accepted(default_rules(catalog), catalog).default_model is None


def test_only_files_the_launcher_wrote_count_as_its_own() -> None:
    assert written_by_launcher(DEFAULT_RULES)
    assert written_by_launcher(default_rules(loader.parse(only_embeddings(BUNDLED))))
    assert not written_by_launcher(DEFAULT_RULES + '[[rules]]\nname = "x"\n')
    assert not written_by_launcher('default_model = "gpt-4o-mini"\n')


def _stack(tmp_path: Path, catalog_text: str) -> Stack:
    path = tmp_path / "models.toml"
    path.write_text(catalog_text)
    return Stack(StackConfig(data_dir=tmp_path / "data", extra_env={"ROUTEUR_CATALOG": str(path)}))


def test_stack_rewrites_its_own_rules_for_another_catalog_and_leaves_edited_ones(tmp_path: Path) -> None:
    stack = _stack(tmp_path, without_model(BUNDLED, "gpt-4o-mini"))
    stack.rules_path.parent.mkdir(parents=True, exist_ok=True)
    stack.rules_path.write_text(DEFAULT_RULES)  # an earlier `make up` with the bundled catalog
    stack._write_rules()
    assert stack.rules_path.read_text() == default_rules(stack.catalog())
    assert accepted(stack.rules_path.read_text(), stack.catalog()).default_model == stack.demo_model
    edited = DEFAULT_RULES + '\n[[rules]]\nname = "mine"\nmatch = { model = "auto" }\naction = { model = "x" }\n'
    stack.rules_path.write_text(edited)
    stack._write_rules()
    assert stack.rules_path.read_text() == edited  # the router says what is wrong with it; not ours to replace


def test_stack_names_a_broken_catalog(tmp_path: Path) -> None:
    stack = _stack(tmp_path, "as_of = 1\n")
    with pytest.raises(RuntimeError, match="ROUTEUR_CATALOG: .*models.toml"):
        stack._write_rules()


def test_provider_key_variables_are_the_bundled_catalogs() -> None:
    assert set(_PROVIDER_KEY_VARS) == {provider.api_key_env for provider in loader.load().providers.values()}


def test_auto_emulator_looks_at_the_catalog_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key named only by the catalog in use (not the bundled one) means a real provider: no emulator."""
    for variable in _PROVIDER_KEY_VARS:
        monkeypatch.delenv(variable, raising=False)
    stack = _stack(tmp_path, BUNDLED.replace('api_key_env = "GROQ_API_KEY"', 'api_key_env = "MY_GROQ_KEY"'))
    assert stack._emulator_wanted()
    stack.config.extra_env["MY_GROQ_KEY"] = "gsk-test"
    assert not stack._emulator_wanted()
