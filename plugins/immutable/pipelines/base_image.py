"""The base_image DAG's task bodies. Each is idempotent: a retry repeats no side effect twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from immutable.base_policy import BaseImageError
from immutable.config import (
    BaseImageRunParams,
    BaseImageSpec,
    ConfigError,
    load_base_spec,
    parse_base_params,
    state_dir,
)
from immutable.payloads import BuiltBase
from immutable.platforms import platform_for

if TYPE_CHECKING:
    from immutable.security_tracker import TrackerData

log = logging.getLogger(__name__)


def tracker_data(spec: BaseImageSpec) -> TrackerData:
    """Debian's security tracker data for the base's suite (fetched, cached, or the recorded excerpt)."""
    from immutable import security_tracker
    from immutable.paths import PROJECT_ROOT

    return security_tracker.load(spec.security_tracker, spec.upstream.suite, state_dir(), PROJECT_ROOT)


def resolve_upstream(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the trigger and the config, then find the upstream image's immutable id."""
    run_params = parse_base_params(params)
    spec = load_base_spec()
    if run_params.cves:  # an id the tracker does not know is refused before anything is built
        tracker = tracker_data(spec)
        unknown = [cve for cve in run_params.cves if not any(cve in cves for cves in tracker.entries.values())]
        if unknown:
            raise ConfigError(
                f"base_image trigger: field 'cves': {unknown} are not in Debian's security tracker data for "
                f"{spec.upstream.suite} ({tracker.source}); give the ids the tracker lists for this rebuild"
            )
    image, digest = platform_for().images.resolve_upstream(spec)
    log.info("upstream %s is %s", image, digest)
    return {"image": image, "digest": digest, "params": run_params.model_dump()}


def start_upgrade_probe(upstream: dict[str, Any], run_after: datetime) -> dict[str, Any]:
    """When the upstream is the candidate's own (and no rebuild is forced), start listing the
    candidate's packages with an upgrade in the archive now (`upgrade_probe_waiter` names what it
    still waits for); else nothing to probe: {"upgradable": [], "probed": false}."""
    spec, images = load_base_spec(), platform_for().images
    params = BaseImageRunParams.model_validate(upstream["params"])
    candidate = images.base_candidate(spec)
    if params.force or not candidate.digest or candidate.upstream_digest != upstream["digest"]:
        return {"upgradable": [], "probed": False}
    log.info("upstream unchanged: listing the pending upgrades of the candidate %s", candidate.digest)
    running = images.start_pending_upgrades(spec, candidate.digest, run_id=f"check-{run_after.isoformat()}")
    return running | {"probed": True}


def upgrade_probe_waiter(running: dict[str, Any]) -> tuple[Any, float] | None:
    return platform_for().images.pending_upgrades_waiter(running)


def finish_upgrade_probe(running: dict[str, Any]) -> dict[str, Any]:
    return platform_for().images.finish_pending_upgrades(running) | {"probed": running["probed"]}


def check_updates(upstream: dict[str, Any], probed: dict[str, Any], run_after: datetime) -> dict[str, Any] | None:
    """Decide whether anything is new (the probe's pending upgrades among the reasons); returns the
    build plan, or None to skip the rest."""
    from immutable.base_policy import decide_rebuild
    from immutable.versioning import next_version

    spec, images = load_base_spec(), platform_for().images
    params = BaseImageRunParams.model_validate(upstream["params"])
    candidate = images.base_candidate(spec)
    pending: list[str] = list(probed.get("upgradable", []))
    decision = decide_rebuild(
        upstream_digest=upstream["digest"],
        candidate_version=candidate.version,
        candidate_upstream_digest=candidate.upstream_digest,
        pending_upgrades=pending,
        force=params.force,
    )
    log.info("rebuild: %s, because %s", decision.rebuild, decision.why)
    if not decision.rebuild:
        log.info("skipping build, test and publish: %s", decision.why)
        return None
    versions = images.base_versions(spec.repository)
    version = next_version(versions, run_after.date())
    log.info("new version: %s (existing versions: %d)", version, len(versions))
    return {
        "version": version,
        "why": decision.why,
        "created": run_after.isoformat(),
        "previous": candidate.version,
    }


def build(upstream: dict[str, Any], plan: dict[str, Any], run_id: str, *, wait: bool = True) -> dict[str, Any]:
    """Build the base. With `wait=False` a platform whose images take long to make may answer
    "pending": the task defers until the image is done (`operators.images.BuildBaseOperator`), then
    calls `finish_build`."""
    from immutable.provenance import build_labels

    spec = load_base_spec()
    labels = build_labels(
        spec=spec,
        version=plan["version"],
        created=datetime.fromisoformat(plan["created"]),
        upstream_digest=upstream["digest"],
        params=BaseImageRunParams.model_validate(upstream["params"]),
        run_id=run_id,
    )
    built = platform_for().images.build_base(
        spec=spec, upstream=upstream, version=plan["version"], labels=labels, run_id=run_id, wait=wait
    )
    log.info("%s %s as %s", "building" if built.pending else "built", plan["version"], built.image_id)
    return built.dump()


def finish_build(built: dict[str, Any]) -> dict[str, Any]:
    """After a wait of a base build in the triggerer: the image, done; a build still pending (its
    next wait: the builder's script, then the image); or an error saying why."""
    done = platform_for().images.finish_base(BuiltBase.of(built))
    log.info("%s %s as %s", "building" if done.pending else "built", done.version, done.image_id or "(no image yet)")
    return done.dump()


def start_test(built: dict[str, Any]) -> dict[str, Any]:
    """Start the checks of every promise on the built image (`test_waiter` names what they still wait
    for; `test_result` judges them once they have ended)."""
    return platform_for().images.start_test_base(spec=load_base_spec(), built=BuiltBase.of(built))


def test_waiter(running: dict[str, Any]) -> tuple[Any, float] | None:
    return platform_for().images.test_base_waiter(running)


def finish_test(running: dict[str, Any]) -> dict[str, Any]:
    return platform_for().images.finish_test_base(running)


def test_result(built: dict[str, Any], ended: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks' table in the log; a failing check stops the run before anything is published."""
    from immutable.base_policy import CheckResult, format_checks

    image = BuiltBase.of(built)
    results = [CheckResult(**check) for check in ended["checks"]]
    table = format_checks(results)
    log.info("base image checks for %s:\n%s", image.version, table)
    failed = [r for r in results if not r.passed]
    if failed:
        raise BaseImageError(
            f"base image {image.version} failed {len(failed)} check(s): {', '.join(r.name for r in failed)}.\n"
            f"{table}\nNothing was published. Fix the script under include/base/scripts/ or the lists in "
            "include/base/base.yaml behind the failing check, then trigger base_image with force=true."
        )
    return [{"name": r.name, "detail": r.detail} for r in results]


def record_manifest(built: dict[str, Any]) -> dict[str, Any]:
    from immutable.base_policy import write_manifest

    image = BuiltBase.of(built)
    manifest = platform_for().images.base_packages(image)
    path, digest = write_manifest(manifest, version=image.version, out_dir=state_dir() / "manifests")
    log.info("package manifest of %s: %d packages, %s (%s)", image.version, len(manifest), path, digest)
    for label, value in sorted(image.labels.items()):
        log.info("label %s=%s", label, value)
    return {"path": str(path), "sha256": digest, "packages": len(manifest)}


def verify_cves(upstream: dict[str, Any], built: dict[str, Any]) -> dict[str, Any]:
    """A security rebuild proves its fixes: every package each CVE names is installed at or above its
    fixed version in the base's suite, or absent. Otherwise nothing is published."""
    from immutable.cve_check import check_fixes

    params = BaseImageRunParams.model_validate(upstream["params"])
    if not params.cves:
        log.info("no CVE ids given: nothing to verify")
        return {"verified": [], "tracker": None, "tracker_age_s": None}
    spec = load_base_spec()
    tracker = tracker_data(spec)
    manifest = platform_for().images.base_packages(BuiltBase.of(built))
    report = check_fixes(params.cves, spec.upstream.suite, tracker.entries, manifest)
    for verdict in report.verdicts:
        log.info("%s", verdict.line())
    if not report.ok:
        lines = [verdict.line() for verdict in report.unfixed]
        lines += [f"{cve}: not in the tracker's data ({tracker.source})" for cve in report.unknown]
        raise BaseImageError(
            f"{built['version']} does not fix every CVE this security rebuild names, so nothing is published:\n"
            + "\n".join(f"  {line}" for line in lines)
            + "\nRebuild (force=true) once the fixed versions are in the archive, or leave these ids out."
        )
    log.info("verified against %s: %s", tracker.source, report.verified)
    return {"verified": report.verified, "tracker": tracker.source, "tracker_age_s": tracker.age_s}


def publish(
    upstream: dict[str, Any], built: dict[str, Any], manifest: dict[str, Any], verified: dict[str, Any]
) -> dict[str, Any]:
    images = platform_for().images
    published = images.publish_base(spec=load_base_spec(), built=BuiltBase.of(built))
    params = upstream["params"]
    log.info("published %s as %s@%s (candidate moved)", published.version, published.repository, published.digest)
    # Weekly rebuilds must not fill the disk: older bases nothing names any more go.
    retained = images.retain(published.repository, datetime.now(UTC), protect=[published.digest])
    log.info("base image retention: %s", retained or "nothing to do")
    return published.dump() | {
        "reason": params["reason"],
        "cves": params["cves"],
        "fast_track": params["fast_track"],
        "upstream_digest": upstream["digest"],
        "manifest_sha256": manifest["sha256"],
        "cves_verified": verified["verified"],
        "security_tracker": verified["tracker"],
    }
