"""A folder's specs are validated once per file change: kept across parses, validated again when a
file, the package's code or the cache itself changes; the source folder is checked on every parse."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from immutable import app_spec, validated_once
from immutable.app_spec import AppSpec, load_app_specs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text())


@pytest.fixture()
def validations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the specs validated, as they are validated."""
    done: list[str] = []
    real = app_spec.load_app_spec

    def counted(path: Path) -> AppSpec:
        done.append(path.stem)
        return real(path)

    monkeypatch.setattr(app_spec, "load_app_spec", counted)
    monkeypatch.setattr(validated_once, "CACHE_DIR", tmp_path / "cache")
    return done


def write_spec(folder: Path, name: str, **changes: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(SAMPLE | {"name": name} | changes))
    return path


def test_an_unchanged_spec_is_validated_once(tmp_path: Path, validations: list[str]) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write_spec(apps, "one")
    write_spec(apps, "two")
    first, _ = load_app_specs(apps)
    second, errors = load_app_specs(apps)
    assert validations == ["one", "two"]
    assert second == first and not errors
    assert second["one"].runtime.port == SAMPLE["runtime"]["port"]


def test_a_changed_or_new_spec_is_validated_again_and_a_removed_one_is_gone(
    tmp_path: Path, validations: list[str]
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write_spec(apps, "one")
    changed = write_spec(apps, "two")
    load_app_specs(apps)
    write_spec(apps, "two", tier="critical")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1))  # a coarse clock
    write_spec(apps, "three")
    (apps / "one.yaml").unlink()
    specs, _ = load_app_specs(apps)
    assert validations == ["one", "two", "three", "two"]
    assert sorted(specs) == ["three", "two"] and specs["two"].tier == "critical"


def test_a_spec_that_fails_is_validated_on_every_parse(tmp_path: Path, validations: list[str]) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write_spec(apps, "broken", tier="gold")
    for _ in range(2):
        specs, errors = load_app_specs(apps)
        assert not specs and "field 'tier'" in errors["broken.yaml"]
    assert validations == ["broken", "broken"]


def test_a_source_folder_gone_since_fails_the_kept_spec(tmp_path: Path, validations: list[str]) -> None:
    """The folder is a fact of the filesystem: a spec kept valid is refused once its folder is gone."""
    source = ROOT / "var" / "test-validated-once-source"
    source.mkdir(parents=True, exist_ok=True)
    try:
        apps = tmp_path / "apps"
        apps.mkdir()
        write_spec(apps, "one", source={"path": str(source.relative_to(ROOT))})
        assert list(load_app_specs(apps)[0]) == ["one"]
    finally:
        shutil.rmtree(source)
    specs, errors = load_app_specs(apps)
    assert not specs
    assert "field 'source.path'" in errors["one.yaml"] and "is not a folder of this repo" in errors["one.yaml"]


def test_changed_code_or_an_unreadable_cache_validates_anew(
    tmp_path: Path, validations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write_spec(apps, "one")
    load_app_specs(apps)
    monkeypatch.setattr(validated_once, "code_fingerprint", lambda: "another version of the code")
    load_app_specs(apps)
    for kept in (tmp_path / "cache").glob("*.pickle"):
        kept.write_bytes(b"not a pickle")
    specs, _ = load_app_specs(apps)
    assert validations == ["one", "one", "one"]
    assert list(specs) == ["one"]


def test_a_cache_that_cannot_be_written_costs_only_time(
    tmp_path: Path, validations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setattr(validated_once, "CACHE_DIR", blocked / "validated")
    apps = tmp_path / "apps"
    apps.mkdir()
    write_spec(apps, "one")
    assert list(load_app_specs(apps)[0]) == list(load_app_specs(apps)[0]) == ["one"]
    assert validations == ["one", "one"]
