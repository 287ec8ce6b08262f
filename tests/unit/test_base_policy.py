from __future__ import annotations

import pytest

from immutable.base_policy import decide_rebuild, parse_package_manifest, parse_upgradable

UPSTREAM = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def decide(**overrides: object) -> object:
    args: dict[str, object] = {
        "upstream_digest": UPSTREAM,
        "candidate_version": "2026.11.19.1",
        "candidate_upstream_digest": UPSTREAM,
        "pending_upgrades": [],
        "force": False,
    }
    args.update(overrides)
    return decide_rebuild(**args)  # type: ignore[arg-type]


def test_nothing_new_skips_and_says_how_to_force() -> None:
    decision = decide()
    assert decision.rebuild is False  # type: ignore[attr-defined]
    assert "force=true" in decision.why  # type: ignore[attr-defined]


def test_force_always_rebuilds() -> None:
    assert decide(force=True).rebuild is True  # type: ignore[attr-defined]


def test_first_build_when_no_candidate() -> None:
    decision = decide(candidate_version=None, candidate_upstream_digest=None)
    assert decision.rebuild is True  # type: ignore[attr-defined]
    assert "no candidate" in decision.why  # type: ignore[attr-defined]


def test_upstream_change_rebuilds_and_names_both_digests() -> None:
    decision = decide(candidate_upstream_digest=OTHER)
    assert decision.rebuild is True  # type: ignore[attr-defined]
    assert OTHER in decision.why and UPSTREAM in decision.why  # type: ignore[attr-defined]


def test_pending_upgrades_rebuild_and_are_listed() -> None:
    decision = decide(pending_upgrades=["libssl3", "openssl"])
    assert decision.rebuild is True  # type: ignore[attr-defined]
    assert "libssl3" in decision.why and "2 package" in decision.why  # type: ignore[attr-defined]


def test_parse_upgradable_reads_apt_list_output() -> None:
    output = (
        "Listing...\n"
        "libssl3/bookworm-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]\n"
        "openssl/bookworm-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]\n"
    )
    assert parse_upgradable(output) == ["libssl3", "openssl"]
    assert parse_upgradable("Listing...\n") == []


def test_manifest_parses_every_package() -> None:
    manifest = parse_package_manifest("bash\t5.2.15-2+b7\tamd64\nlibc6\t2.36-9+deb12u9\tamd64\n")
    assert manifest == {
        "bash": {"version": "5.2.15-2+b7", "architecture": "amd64"},
        "libc6": {"version": "2.36-9+deb12u9", "architecture": "amd64"},
    }


def test_manifest_names_each_packages_source_where_the_list_has_it() -> None:
    manifest = parse_package_manifest("libc6\t2.36-9+deb12u10\tamd64\tglibc\t2.36-9+deb12u10\n")
    assert manifest == {
        "libc6": {
            "version": "2.36-9+deb12u10",
            "architecture": "amd64",
            "source": "glibc",
            "source_version": "2.36-9+deb12u10",
        }
    }


def test_manifest_rejects_a_malformed_line_with_its_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_package_manifest("bash\t5.2\tamd64\nbroken line\n")
