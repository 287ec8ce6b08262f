from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from immutable.app_spec import load_app_spec, load_app_specs, parse_release_params
from immutable.config import ConfigError, load_platform

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "include" / "apps" / "sample.yaml").read_text())


def spec_file(tmp_path: Path, changes: dict[str, Any], name: str = "sample") -> Path:
    data = {**SAMPLE, **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_sample_spec_is_valid_and_takes_the_platform_waves() -> None:
    spec = load_app_spec(ROOT / "include" / "apps" / "sample.yaml")
    platform = load_platform(ROOT / "include" / "platform.yaml")
    assert spec.tier == "canary"
    assert spec.repository == "apps/sample"
    assert spec.rollout_waves(platform) == [["eu-west"], ["us-east", "ap-south"]]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tier": "gold"}, "tier"),
        ({"runtime": {**SAMPLE["runtime"], "port": 80}}, "runtime.port"),
        ({"runtime": {**SAMPLE["runtime"], "command": []}}, "runtime.command"),
        ({"packaging": {"kind": "rpm", "distribution": "x"}}, "packaging.kind"),
        ({"source": {"path": "../../etc"}}, "source.path"),
        ({"source": {"path": "include/apps/sample", "git": {"url": "https://example.org/x.git"}}}, "source"),
        ({"source": {"git": {"url": "not a url"}}}, "source.git.url"),
        ({"dev": {"smoke_checks": []}}, "dev.smoke_checks"),
        ({"dev": {"smoke_checks": [{"path": "healthz"}]}}, "dev.smoke_checks.0.path"),
        ({"staging": {"test_command": []}}, "staging.test_command"),
        ({"rollot": {}}, "rollot"),
    ],
)
def test_each_bad_field_is_named(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"sample.yaml: field '{field}'"):
        load_app_spec(spec_file(tmp_path, changes))


def test_the_allowed_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'canary' or 'critical'"):
        load_app_spec(spec_file(tmp_path, {"tier": "gold"}))
    with pytest.raises(ConfigError, match="'python-wheel'"):
        load_app_spec(spec_file(tmp_path, {"packaging": {"kind": "rpm", "distribution": "x"}}))


def test_a_source_outside_the_repo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the repository"):
        load_app_spec(spec_file(tmp_path, {"source": {"path": "../../etc"}}))


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must match the file name"):
        load_app_spec(spec_file(tmp_path, {}, name="other"))


def test_unknown_regions_are_named(tmp_path: Path) -> None:
    spec = load_app_spec(spec_file(tmp_path, {"waves": [["eu-west"], ["mars-1"]]}))
    with pytest.raises(ConfigError, match="mars-1"):
        spec.rollout_waves(load_platform(ROOT / "include" / "platform.yaml"))


def test_a_spec_can_restrict_its_regions(tmp_path: Path) -> None:
    spec = load_app_spec(spec_file(tmp_path, {"regions": ["eu-west", "ap-south"]}))
    assert spec.rollout_waves(load_platform(ROOT / "include" / "platform.yaml")) == [["eu-west"], ["ap-south"]]


def test_one_bad_spec_does_not_hide_the_others(tmp_path: Path) -> None:
    spec_file(tmp_path, {})
    spec_file(tmp_path, {"name": "broken", "tier": "gold"}, name="broken")
    specs, errors = load_app_specs(tmp_path)
    assert list(specs) == ["sample"]
    assert list(errors) == ["broken.yaml"]
    assert "field 'tier'" in errors["broken.yaml"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"version": "1.0"}, "version"),
        ({"version": "v1.0.0"}, "version"),
        ({"version": "01.0.0"}, "version"),
        ({"version": "1.0.0", "ref": "bad ref"}, "ref"),
        ({"version": "1.0.0", "ref": "a/../b"}, "ref"),
        ({"version": "1.0.0", "note": "x" * 501}, "note"),
    ],
)
def test_release_params_name_the_bad_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        parse_release_params(params)


def test_release_params_accept_semver_and_empty() -> None:
    assert parse_release_params({"version": "1.2.3-rc.1", "ref": "release/1.2"}).version == "1.2.3-rc.1"
    assert parse_release_params({}).version == ""


@pytest.mark.parametrize(
    ("semver", "pep440"),
    [
        ("1.2.0", "1.2.0"),
        ("1.2.0-rc.1", "1.2.0rc1"),
        ("1.2.0-beta2", "1.2.0b2"),
        ("1.2.0-alpha", "1.2.0a0"),
        ("0.9.0-broken", "0.9.0+broken"),
        ("1.0.0-hotfix.2", "1.0.0+hotfix.2"),
    ],
)
def test_release_versions_become_valid_python_versions(semver: str, pep440: str) -> None:
    from packaging.version import Version

    from immutable.images.app import python_version

    assert python_version(semver) == pep440
    assert str(Version(pep440)) == pep440


def test_the_platform_timing_overrides_reach_canary_bluegreen_and_health(tmp_path: Path) -> None:
    spec = load_app_spec(ROOT / "include" / "apps" / "sample.yaml")
    platform = load_platform(ROOT / "tests" / "platform.yaml")
    timed = spec.for_platform(platform)
    overrides = platform.timing_overrides
    assert overrides is not None
    assert timed.health.timeout_s == overrides.health["timeout_s"] < spec.health.timeout_s
    assert timed.canary.interval_s == overrides.canary["interval_s"] == 20 < spec.canary.interval_s
    assert timed.bluegreen.step_pause_s == overrides.bluegreen["step_pause_s"] < spec.bluegreen.step_pause_s
    bad = tmp_path / "platform.yaml"
    bad.write_text(
        yaml.safe_dump(
            yaml.safe_load((ROOT / "tests" / "platform.yaml").read_text())
            | {"timing_overrides": {"health": {"timeout": 5}}}
        )
    )
    with pytest.raises(
        ConfigError, match=r"timing_overrides\.health.*unknown keys \['timeout'\]; allowed: \['timeout_s'\]"
    ):
        load_platform(bad)
