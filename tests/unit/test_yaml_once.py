"""A YAML file is parsed once per change of its text; the kept document is what the parse gave."""

from __future__ import annotations

from pathlib import Path

import pytest

from immutable import yaml_once
from immutable.bounded_yaml import YamlRefused


@pytest.fixture()
def parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources parsed from now on; the cache in a folder of the test's own."""
    seen: list[str] = []
    parse = yaml_once.parse_bounded_yaml

    def counted(text: str, source: str) -> object:
        seen.append(source)
        return parse(text, source)

    monkeypatch.setattr(yaml_once, "parse_bounded_yaml", counted)
    monkeypatch.setattr(yaml_once, "CACHE_DIR", tmp_path / "cache")
    return seen


def test_an_unchanged_file_is_parsed_once_and_a_changed_one_again(tmp_path: Path, parses: list[str]) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text("name: app\nfleet: {size: 2}\nchecks: [a, b]\n")
    first = yaml_once.load_yaml_once(spec)
    assert yaml_once.load_yaml_once(spec) == first == {"name": "app", "fleet": {"size": 2}, "checks": ["a", "b"]}
    assert parses == [str(spec)]
    spec.write_text("name: app\nfleet: {size: 3}\n")
    assert yaml_once.load_yaml_once(spec) == {"name": "app", "fleet": {"size": 3}}
    assert parses == [str(spec), str(spec)]


def test_a_refused_file_is_refused_every_time(tmp_path: Path, parses: list[str]) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("a: " + "[" * 100 + "]" * 100 + "\n")
    for _ in range(2):
        with pytest.raises(YamlRefused, match="nested too deeply"):
            yaml_once.load_yaml_once(spec)
    assert not list((tmp_path / "cache").glob("*.json"))


def test_a_document_json_cannot_hold_is_parsed_each_time(tmp_path: Path, parses: list[str]) -> None:
    spec = tmp_path / "odd.yaml"
    spec.write_text("1: one\nwhen: 2026-01-01\n")
    for _ in range(2):
        document = yaml_once.load_yaml_once(spec)
        assert isinstance(document, dict) and document[1] == "one"
    assert len(parses) == 2


def test_a_cache_that_cannot_be_written_costs_only_time(
    tmp_path: Path, parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setattr(yaml_once, "CACHE_DIR", blocked / "yaml")
    spec = tmp_path / "app.yaml"
    spec.write_text("name: app\n")
    assert yaml_once.load_yaml_once(spec) == yaml_once.load_yaml_once(spec) == {"name": "app"}
    assert len(parses) == 2
