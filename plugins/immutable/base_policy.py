"""Pure decisions and records of the base-image pipeline: when to rebuild, how checks and the package
manifest are told. No I/O but writing the manifest file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

CANDIDATE_TAG = "candidate"  # the base channel canary-tier apps build on
STABLE_TAG = "stable"  # the base channel critical apps build on


class BaseImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class CandidateInfo:
    version: str | None
    digest: str | None
    upstream_digest: str | None


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str


def format_checks(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {r.detail}" for r in results)


def write_manifest(manifest: dict[str, dict[str, str]], *, version: str, out_dir: Path) -> tuple[Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"base-{version}.json"
    body = json.dumps({"version": version, "packages": manifest}, indent=1, sort_keys=True).encode()
    path.write_bytes(body)
    return path, "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class RebuildDecision:
    rebuild: bool
    why: str


def decide_rebuild(
    *,
    upstream_digest: str,
    candidate_version: str | None,
    candidate_upstream_digest: str | None,
    pending_upgrades: list[str],
    force: bool,
) -> RebuildDecision:
    """Rebuild only when something is new, or when asked to."""
    if force:
        return RebuildDecision(True, "force=true was given")
    if candidate_version is None:
        return RebuildDecision(True, "there is no candidate base image yet")
    if candidate_upstream_digest != upstream_digest:
        return RebuildDecision(
            True,
            f"the upstream image changed: candidate {candidate_version} was built from "
            f"{candidate_upstream_digest}, upstream is now {upstream_digest}",
        )
    if pending_upgrades:
        shown = ", ".join(pending_upgrades[:10]) + (" ..." if len(pending_upgrades) > 10 else "")
        return RebuildDecision(
            True, f"{len(pending_upgrades)} package(s) in candidate {candidate_version} have upgrades: {shown}"
        )
    return RebuildDecision(
        False,
        f"nothing new: candidate {candidate_version} is built from the current upstream "
        f"{upstream_digest} and has no pending upgrades; trigger with force=true to rebuild anyway",
    )


def parse_upgradable(apt_list_output: str) -> list[str]:
    """Package names from `apt list --upgradable` output (`name/suite version arch [upgradable from: v]`)."""
    names = []
    for line in apt_list_output.splitlines():
        if "/" in line and "[upgradable from:" in line:
            names.append(line.split("/", 1)[0].strip())
    return sorted(set(names))


def parse_package_manifest(tsv: str) -> dict[str, dict[str, str]]:
    """include/base/scripts/90-cleanup.sh's package list (dpkg-query: package, version, architecture,
    source package, source version, tab-separated) as a JSON-ready dict. Lists of older bases have
    the first three fields only."""
    manifest: dict[str, dict[str, str]] = {}
    for number, line in enumerate(tsv.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (3, 5) or not all(fields):
            raise ValueError(
                f"package manifest line {number} is not 'name<TAB>version<TAB>arch[<TAB>source<TAB>source version]': "
                f"{line!r}"
            )
        name, version, arch = fields[:3]
        manifest[name] = {"version": version, "architecture": arch}
        if len(fields) == 5:
            manifest[name] |= {"source": fields[3], "source_version": fields[4]}
    return manifest
