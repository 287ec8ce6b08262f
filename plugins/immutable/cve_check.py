"""Does a built base image fix the CVEs its security rebuild names? Pure.

Inputs: the Debian security tracker's data (its JSON: source package -> CVE id -> {"releases":
{suite: {"status", "fixed_version"}}}; a fixed version "0" means the suite was never affected),
the image's package manifest (binary package -> version, and its source package and version) and
the base's suite. Per CVE and source package the tracker names: fixed (the installed source
version is at or above the fixed one, compared as dpkg does), absent (no binary of it installed),
not affected (in this suite), or unfixed (older than the fix, or no fix in the suite yet). An id
the tracker does not know is unknown: neither fixed nor unfixed, and refused as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["fixed", "absent", "not affected", "unfixed"]


@dataclass(frozen=True)
class PackageVerdict:
    cve: str
    source: str
    suite: str
    status: Status
    installed: str | None = None  # the installed source version, when a binary of it is installed
    fixed: str | None = None  # the tracker's fixed version in the suite, if there is one
    tracker_status: str | None = None  # the tracker's own word: resolved, open, undetermined

    def line(self) -> str:
        """One line a person reads: the package, what is installed, what fixes it, in which suite."""
        if self.status == "unfixed":
            fix = f"fixed in {self.fixed}" if self.fixed else f"no fix in {self.suite} yet ({self.tracker_status})"
            return f"{self.cve}: {self.source} installed {self.installed}, {fix} ({self.suite})"
        if self.status == "fixed":
            return f"{self.cve}: {self.source} installed {self.installed}, fixed in {self.fixed} ({self.suite})"
        if self.status == "absent":
            return f"{self.cve}: {self.source} is not installed"
        return f"{self.cve}: {self.source} is not affected in {self.suite}"


@dataclass(frozen=True)
class CveReport:
    verdicts: list[PackageVerdict] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def unfixed(self) -> list[PackageVerdict]:
        return [v for v in self.verdicts if v.status == "unfixed"]

    @property
    def verified(self) -> list[str]:
        """The ids the image is proven to fix (or never had), in the order asked."""
        bad = {v.cve for v in self.unfixed} | set(self.unknown)
        return list(dict.fromkeys(v.cve for v in self.verdicts if v.cve not in bad))

    @property
    def ok(self) -> bool:
        return not self.unfixed and not self.unknown


def _source_versions(manifest: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Source package -> its installed version (a binary's own name and version when the manifest
    predates source fields: most binaries share their source's name)."""
    found: dict[str, str] = {}
    for name, package in manifest.items():
        source = package.get("source") or name
        found.setdefault(source, package.get("source_version") or package["version"])
    return found


def check_fixes(
    cves: list[str], suite: str, tracker: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Mapping[str, str]]
) -> CveReport:
    from debian.debian_support import Version

    if not manifest:
        raise ValueError("the image's package manifest is empty: nothing to verify the CVE fixes against")
    installed = _source_versions(manifest)
    verdicts: list[PackageVerdict] = []
    unknown: list[str] = []
    for cve in dict.fromkeys(cves):
        sources = sorted(source for source, entries in tracker.items() if cve in entries)
        if not sources:
            unknown.append(cve)
            continue
        for source in sources:
            release = (tracker[source][cve].get("releases") or {}).get(suite)
            common = {"cve": cve, "source": source, "suite": suite}
            if release is None or release.get("fixed_version") == "0":
                verdicts.append(PackageVerdict(**common, status="not affected"))
                continue
            version = installed.get(source)
            fixed, status = release.get("fixed_version"), release.get("status")
            if version is None:
                verdicts.append(PackageVerdict(**common, status="absent", fixed=fixed, tracker_status=status))
            elif status == "resolved" and fixed and Version(version) >= Version(fixed):
                verdicts.append(PackageVerdict(**common, status="fixed", installed=version, fixed=fixed))
            else:
                verdicts.append(
                    PackageVerdict(**common, status="unfixed", installed=version, fixed=fixed, tracker_status=status)
                )
    return CveReport(verdicts, unknown)
