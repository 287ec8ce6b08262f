from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from immutable.config import ConfigError, load_base_spec, load_platform, parse_base_params

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_files_are_valid() -> None:
    spec = load_base_spec(ROOT / "include" / "base" / "base.yaml")
    assert spec.upstream.image == "debian:bookworm-slim"
    assert spec.runtime_user.name == "app"
    platform = load_platform(ROOT / "include" / "platform.yaml")
    assert platform.platform == "local"
    assert len(platform.regions) >= 3


def test_base_spec_rejects_a_bad_package_name(tmp_path: Path) -> None:
    path = write(tmp_path, {"repository": "immutable/base", "remove_packages": ["Bad Name"]})
    with pytest.raises(ConfigError, match=r"field 'remove_packages\.0'.*Bad Name"):
        load_base_spec(path)


def test_base_spec_rejects_a_package_both_removed_and_installed(tmp_path: Path) -> None:
    path = write(tmp_path, {"repository": "immutable/base", "remove_packages": ["curl"], "common_packages": ["curl"]})
    with pytest.raises(ConfigError, match="both removed and installed"):
        load_base_spec(path)


def test_base_spec_rejects_unknown_fields(tmp_path: Path) -> None:
    path = write(tmp_path, {"repository": "immutable/base", "remove_pakages": []})
    with pytest.raises(ConfigError, match="remove_pakages"):
        load_base_spec(path)


def test_platform_rejects_duplicate_ports(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "regions": [
                {"name": "eu-west", "registry_port": 5501, "lb_port": 8101, "lb_admin_port": 8201},
                {"name": "us-east", "registry_port": 5501, "lb_port": 8102, "lb_admin_port": 8202},
            ]
        },
    )
    with pytest.raises(ConfigError, match="unique"):
        load_platform(path)


def test_platform_names_the_allowed_platforms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "platform": "gcp",
            "regions": [{"name": "eu-west", "registry_port": 5501, "lb_port": 8101, "lb_admin_port": 8201}],
        },
    )
    with pytest.raises(ConfigError, match=r"field 'platform'.*'local' or 'aws'"):
        load_platform(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_platform(tmp_path / "absent.yaml")


def test_base_params_accept_a_security_rebuild() -> None:
    params = parse_base_params(
        {"reason": "security", "cves": ["CVE-2026-12345", "CVE-2026-12345"], "force": True, "fast_track": True}
    )
    assert params.cves == ["CVE-2026-12345"]
    assert params.force is True and params.fast_track is True


@pytest.mark.parametrize("reason", [None, "weekly", "manual"])
def test_only_a_security_rebuild_may_take_the_fast_track(reason: str | None) -> None:
    params: dict[str, object] = {"fast_track": True} | ({"reason": reason} if reason else {})
    with pytest.raises(ConfigError) as refused:
        parse_base_params(params)
    assert str(refused.value) == (
        "base_image trigger: field 'fast_track': Value error, only a security rebuild may skip the canary-tier "
        f"trial: set reason to 'security' (it is {reason or 'weekly'!r}) (got True)"
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"reason": "because"}, "reason"),
        ({"cves": ["CVE-26-1"]}, "cves.0"),
        ({"cves": "CVE-2026-1234"}, "cves"),
        ({"force": "maybe"}, "force"),
        ({"fast_track": 3}, "fast_track"),
    ],
)
def test_base_params_name_the_bad_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        parse_base_params(params)


def test_every_port_is_checked_for_clashes(tmp_path: Path) -> None:
    region = {"name": "eu-west", "registry_port": 5501, "lb_port": 8101, "lb_admin_port": 8201}
    path = write(tmp_path, {"local": {"prometheus_port": 9201}, "regions": [region]})
    with pytest.raises(ConfigError, match=r"port 9201 is used twice: by local.prometheus_port and by eu-west"):
        load_platform(path)
