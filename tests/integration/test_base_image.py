"""base_image end to end with dag.test() on the real Docker engine and a real registry."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from immutable.config import load_base_spec, load_platform
from immutable.network_tuning import SYSCTL_FILE, differences, parse_drop_in, shipped_network_tuning
from immutable.registry import RegistryClient
from tests.integration import helpers
from tests.integration.helpers import xcom

OCI = "org.opencontainers.image"

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db")]


def run_dag(conf: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    return helpers.run_dag("base_image.py", "base_image", conf)


def asset_events(run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "base-image/candidate", AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(e.extra) for e in events]


def run_in(image: str, command: str, user: str | None = None) -> tuple[int, str]:
    from immutable.images.engine import docker_client, run_in_image

    return run_in_image(docker_client(), image, ["sh", "-c", command], user=user)


@pytest.fixture(scope="module")
def first_build() -> dict[str, Any]:
    run, states = run_dag({"reason": "security", "cves": ["CVE-2023-4911"], "force": True})
    assert str(run.state) == "success", states
    assert set(states.values()) == {"success"}, states
    return {"run": run, "published": xcom(run, "publish")}


def test_publish_pushes_by_digest_and_moves_candidate(first_build: dict[str, Any]) -> None:
    spec, platform = load_base_spec(), load_platform()
    registry = RegistryClient(platform.build_registry)
    published = first_build["published"]
    assert published["digest"].startswith("sha256:")
    assert registry.manifest_digest(spec.repository, published["digest"]) == published["digest"]
    assert registry.manifest_digest(spec.repository, "candidate") == published["digest"]
    assert registry.manifest_digest(spec.repository, published["version"]) == published["digest"]


def test_provenance_labels_on_the_pushed_image(first_build: dict[str, Any]) -> None:
    from immutable.images.upstream import upstream_digest

    spec, platform = load_base_spec(), load_platform()
    published = first_build["published"]
    labels = RegistryClient(platform.build_registry).labels(spec.repository, published["digest"])
    assert labels is not None
    assert labels[f"{OCI}.version"] == published["version"]
    assert labels[f"{OCI}.created"].startswith(str(first_build["run"].run_after.date()))
    assert labels[f"{OCI}.revision"]
    assert labels[f"{OCI}.base.name"] == spec.upstream.image
    assert labels[f"{OCI}.base.digest"] == upstream_digest(spec.upstream.image)
    assert labels["io.immutable.base.reason"] == "security"
    assert labels["io.immutable.base.cves"] == "CVE-2023-4911"


def test_asset_event_carries_digest_version_reason_and_cves(first_build: dict[str, Any]) -> None:
    published = first_build["published"]
    events = asset_events(first_build["run"].run_id)
    assert len(events) == 1
    extra = events[0]
    assert extra["digest"] == published["digest"]
    assert extra["version"] == published["version"]
    assert extra["reason"] == "security"
    assert extra["cves"] == ["CVE-2023-4911"]
    assert extra["cves_verified"] == ["CVE-2023-4911"]  # glibc at or above 2.36-9+deb12u3 in the image
    assert extra["security_tracker"].endswith("(recorded excerpt)")  # the tracker is not reachable here


def test_the_published_base_is_told_once_to_the_webhook_and_by_mail(first_build: dict[str, Any], notified: Any) -> None:
    run_id, published = first_build["run"].run_id, first_build["published"]
    [posted] = notified.posted(run_id, "base_published")
    assert posted["version"] == published["version"] and posted["digest"] == published["digest"]
    assert posted["cause"] == "security for CVE-2023-4911"
    assert posted["task_id"] == "publish" and "/dags/base_image/runs/" in posted["link"]
    [mail] = notified.mailed(run_id, f"Base image {published['version']} published")
    assert mail["To"] == "release-team@example.com"


def test_pushed_image_is_hardened(first_build: dict[str, Any]) -> None:
    from immutable.images.engine import docker_client

    spec = load_base_spec()
    image = first_build["published"]["image"]
    docker_client().images.pull(image)
    assert run_in(image, "id -un") == (0, f"{spec.runtime_user.name}\n")
    for package in spec.remove_packages:
        code, _ = run_in(image, f"dpkg-query -W -f='${{Status}}' {package} | grep -q 'ok installed'")
        assert code != 0, f"{package} should be removed"
    code, out = run_in(image, r"find / -xdev -type f \( -perm -4000 -o -perm -2000 \)", user="root")
    assert out.strip() == "", f"setuid files left: {out}"
    code, drop_in = run_in(image, f"cat {SYSCTL_FILE}")
    assert code == 0 and differences(shipped_network_tuning(), parse_drop_in(drop_in)) == [], drop_in
    assert run_in(image, "python3 -c 'import ssl, venv'")[0] == 0


def test_package_manifest_is_recorded(first_build: dict[str, Any]) -> None:
    manifest = xcom(first_build["run"], "record_manifest")
    body = json.loads(Path(manifest["path"]).read_text())
    assert body["version"] == first_build["published"]["version"]
    assert "python3" in body["packages"]
    assert "e2fsprogs" not in body["packages"]
    assert manifest["packages"] == len(body["packages"]) > 50


def test_the_published_base_has_its_sbom_beside_it_listing_exactly_its_recorded_packages(
    first_build: dict[str, Any],
) -> None:
    import hashlib

    import httpx

    from immutable.platforms import platform_for
    from immutable.sbom import listed_packages, validate

    spec, published = load_base_spec(), first_build["published"]
    url = platform_for().images.sbom_url(None, spec.repository, published["digest"])
    assert url is not None, f"no SBOM beside {spec.repository}@{published['digest']}"
    document = httpx.get(url, timeout=10).text
    validate(document)
    assert published["sbom"] == f"sha256:{hashlib.sha256(document.encode()).hexdigest()}"
    assert asset_events(first_build["run"].run_id)[0]["sbom"] == published["sbom"]
    recorded = json.loads(Path(xcom(first_build["run"], "record_manifest")["path"]).read_text())["packages"]
    listed = listed_packages(document)
    assert listed["deb"] == {(name, package["version"]) for name, package in recorded.items()}
    assert "pypi" not in listed  # a base holds no app environment
    body = json.loads(document)
    assert body["metadata"]["component"]["version"] == published["version"]


def test_second_run_with_nothing_new_skips_then_force_builds_a_new_version(first_build: dict[str, Any]) -> None:
    spec, platform = load_base_spec(), load_platform()
    registry = RegistryClient(platform.build_registry)
    tags_before = registry.tags(spec.repository)

    run, states = run_dag({"reason": "weekly"})
    assert str(run.state) == "success"
    assert states["check_updates"] == "success"
    for task in ("build", "test", "record_manifest", "verify_cves", "publish"):
        assert states[task] == "skipped", states
    assert registry.tags(spec.repository) == tags_before
    assert asset_events(run.run_id) == []

    run, states = run_dag({"reason": "manual", "force": True})
    assert str(run.state) == "success", states
    published = xcom(run, "publish")
    first = first_build["published"]
    assert published["version"] != first["version"]
    assert tuple(int(p) for p in published["version"].split(".")) > tuple(int(p) for p in first["version"].split("."))
    assert registry.manifest_digest(spec.repository, "candidate") == published["digest"]
    # Nothing is deleted: the earlier candidate is still there by version and digest.
    assert registry.manifest_digest(spec.repository, first["version"]) == first["digest"]


def test_a_cve_the_image_does_not_fix_stops_the_publish_with_a_line_per_package(
    first_build: dict[str, Any], capfd: Any, caplog: Any
) -> None:
    """apt's CVE-2011-3374 has no fix in bookworm (the tracker: open): a rebuild claiming it is stopped."""
    spec, platform = load_base_spec(), load_platform()
    registry = RegistryClient(platform.build_registry)
    candidate = registry.manifest_digest(spec.repository, "candidate")
    run, states = run_dag({"reason": "security", "cves": ["CVE-2023-4911", "CVE-2011-3374"], "force": True})
    log = capfd.readouterr()
    assert str(run.state) == "failed", states
    assert states["build"] == "success" and states["verify_cves"] == "failed", states
    assert states["publish"] == "upstream_failed", states
    assert registry.manifest_digest(spec.repository, "candidate") == candidate  # nothing published
    assert asset_events(run.run_id) == []
    text = log.out + log.err
    assert "CVE-2011-3374: apt installed " in text and "no fix in bookworm yet (open) (bookworm)" in text, text[-3000:]
    # The CVE it does fix is logged with both versions (a log record: structlog's stdout is buffered).
    fixed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CVE-2023-4911: glibc installed ")]
    assert fixed and fixed[0].endswith("fixed in 2.36-9+deb12u3 (bookworm)"), fixed


def test_a_cve_id_the_tracker_does_not_know_is_refused_before_anything_is_built() -> None:
    run, states = run_dag({"reason": "security", "cves": ["CVE-2099-0001"], "force": True})
    assert str(run.state) == "failed", states
    assert states["resolve_upstream"] == "failed" and states["build"] == "upstream_failed", states
    from immutable.config import ConfigError
    from immutable.pipelines import base_image as steps

    with pytest.raises(ConfigError, match=r"field 'cves': \['CVE-2099-0001'\] are not in Debian's security tracker"):
        steps.resolve_upstream({"reason": "security", "cves": ["CVE-2099-0001"]})


def test_a_failing_check_names_itself(first_build: dict[str, Any]) -> None:
    from immutable.images import base
    from immutable.images.engine import docker_client
    from immutable.pipelines import base_image as steps

    # An image that breaks one promise: a setuid binary outside the allowlist.
    dockerfile = f"FROM {first_build['published']['image']}\nUSER root\nRUN chmod u+s /usr/bin/env\nUSER app\n"
    image, _ = docker_client().images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    try:
        results = base.test_image(image.id, load_base_spec())
        failed = {r.name: r.detail for r in results if not r.passed}
        assert list(failed) == ["setuid-audit"]
        assert "/usr/bin/env" in failed["setuid-audit"]
        with pytest.raises(base.BaseImageError, match=r"failed 1 check\(s\): setuid-audit") as raised:
            broken = {"image_id": image.id, "version": "broken"}
            steps.test_result(broken, steps.start_test(broken))  # locally the checks end at once
        assert "Nothing was published" in str(raised.value)
    finally:
        docker_client().images.remove(image.id, force=True)


def test_a_newer_upstream_in_its_registry_is_noticed_and_pulled(first_build: dict[str, Any]) -> None:
    """The upstream's registry (the build registry, serving an image under the upstream's name)
    publishes a newer image under the same tag while the engine still holds the older one:
    resolving the upstream asks the registry, pulls the newer image, and the rebuild decision says
    the upstream changed."""
    from immutable.base_policy import decide_rebuild
    from immutable.images.engine import docker_client
    from immutable.local.base_images import LocalBaseImages

    platform, spec, client = load_platform(), load_base_spec(), docker_client()
    name = f"{platform.build_registry}/debian:bookworm-slim"
    registry = RegistryClient(platform.build_registry)

    def publish_upstream(release: int) -> tuple[str, str]:
        dockerfile = f"FROM {spec.upstream.image}\nRUN echo {release} > /upstream-release\n"
        image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=name, rm=True)
        client.images.push(name)
        digest = registry.manifest_digest("debian", "bookworm-slim")
        assert digest is not None
        return str(image.id), digest

    mirror = spec.model_copy(update={"upstream": spec.upstream.model_copy(update={"image": name})})
    images = LocalBaseImages(platform)
    older_id, older = publish_upstream(1)
    newer_id, newer = "", ""
    try:
        assert images.resolve_upstream(mirror) == (name, older)
        newer_id, newer = publish_upstream(2)
        client.images.get(older_id).tag(name)  # the engine still holds the older release under the tag
        assert images.resolve_upstream(mirror) == (name, newer)
        assert client.images.get(name).id == newer_id  # pulled: the build would start from it
        decision = decide_rebuild(
            upstream_digest=newer,
            candidate_version="2026.01.01.1",
            candidate_upstream_digest=older,
            pending_upgrades=[],
            force=False,
        )
        assert decision.rebuild and f"upstream is now {newer}" in decision.why, decision
    finally:
        for image_id in (older_id, newer_id):
            if image_id:
                client.images.remove(image_id, force=True)
