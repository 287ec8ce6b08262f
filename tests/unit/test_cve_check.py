"""A security rebuild's CVE ids against the Debian security tracker's data (its JSON format) and
the image's package manifest: fixed, absent, not affected, unfixed and unknown."""

from __future__ import annotations

from typing import Any

import pytest

from immutable.cve_check import check_fixes

SUITE = "bookworm"
TRACKER: dict[str, Any] = {
    "glibc": {
        "CVE-2023-4911": {
            "releases": {
                "bookworm": {"status": "resolved", "fixed_version": "2.36-9+deb12u3", "urgency": "high"},
                "bullseye": {"status": "resolved", "fixed_version": "0", "urgency": "not yet assigned"},
            }
        }
    },
    "apt": {"CVE-2011-3374": {"releases": {"bookworm": {"status": "open", "urgency": "unimportant"}}}},
    "curl": {
        "CVE-2023-38545": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "7.88.1-10+deb12u4"}}}
    },
    "xz-utils": {"CVE-2024-3094": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "0"}}}},
    "openssl": {
        "CVE-2023-5678": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "3.0.13-1~deb12u1"}}}
    },
}
MANIFEST = {
    "libc6": {
        "version": "2.36-9+deb12u10",
        "architecture": "amd64",
        "source": "glibc",
        "source_version": "2.36-9+deb12u10",
    },
    "libc-bin": {
        "version": "2.36-9+deb12u10",
        "architecture": "amd64",
        "source": "glibc",
        "source_version": "2.36-9+deb12u10",
    },
    "apt": {"version": "2.6.1", "architecture": "amd64", "source": "apt", "source_version": "2.6.1"},
    "libssl3": {
        "version": "3.0.11-1~deb12u2",
        "architecture": "amd64",
        "source": "openssl",
        "source_version": "3.0.11-1~deb12u2",
    },
}


def test_a_cve_whose_fixed_version_is_installed_is_verified() -> None:
    report = check_fixes(["CVE-2023-4911"], SUITE, TRACKER, MANIFEST)
    assert report.ok and report.verified == ["CVE-2023-4911"]
    [verdict] = report.verdicts
    assert verdict.line() == "CVE-2023-4911: glibc installed 2.36-9+deb12u10, fixed in 2.36-9+deb12u3 (bookworm)"


def test_a_package_that_is_not_installed_or_a_suite_never_affected_counts_as_fixed() -> None:
    report = check_fixes(["CVE-2023-38545", "CVE-2024-3094"], SUITE, TRACKER, MANIFEST)
    assert report.ok and report.verified == ["CVE-2023-38545", "CVE-2024-3094"]
    assert [v.status for v in report.verdicts] == ["absent", "not affected"]


def test_an_older_version_or_no_fix_yet_is_unfixed_with_one_line_per_package() -> None:
    report = check_fixes(["CVE-2023-5678", "CVE-2011-3374", "CVE-2023-4911"], SUITE, TRACKER, MANIFEST)
    assert not report.ok and report.verified == ["CVE-2023-4911"]
    assert [v.line() for v in report.unfixed] == [
        "CVE-2023-5678: openssl installed 3.0.11-1~deb12u2, fixed in 3.0.13-1~deb12u1 (bookworm)",
        "CVE-2011-3374: apt installed 2.6.1, no fix in bookworm yet (open) (bookworm)",
    ]


def test_an_id_the_tracker_does_not_know_is_unknown_not_fixed() -> None:
    report = check_fixes(["CVE-2099-0001", "CVE-2023-4911"], SUITE, TRACKER, MANIFEST)
    assert report.unknown == ["CVE-2099-0001"] and not report.ok
    assert report.verified == ["CVE-2023-4911"]


def test_versions_compare_as_dpkg_does_and_old_manifests_name_binaries_only() -> None:
    tracker = {"bash": {"CVE-2022-3715": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "5.2-1"}}}}}
    epoch = {"bash": {"version": "1:4.0-1", "architecture": "amd64"}}  # no source fields: the binary's own
    assert check_fixes(["CVE-2022-3715"], SUITE, tracker, epoch).ok  # an epoch outranks any upstream version
    tilde = {"bash": {"version": "5.2~rc1-1", "architecture": "amd64"}}
    assert not check_fixes(["CVE-2022-3715"], SUITE, tracker, tilde).ok  # ~ sorts before the release


def test_an_empty_manifest_verifies_nothing() -> None:
    with pytest.raises(ValueError, match="package manifest is empty"):
        check_fixes(["CVE-2023-4911"], SUITE, TRACKER, {})
