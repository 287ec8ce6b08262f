"""release_sample end to end with dag.test(): real engine, real registries, real containers."""

from __future__ import annotations

from typing import Any

import pytest

from immutable.config import load_base_spec, load_platform
from immutable.registry import RegistryClient
from tests.integration.helpers import load_dag, run_dag, xcom

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]

OCI = "org.opencontainers.image"
REPOSITORY = "apps/sample"
NEW_VERSION = "1.4.0"


def release(conf: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    return run_dag("releases.py", "release_sample", conf)


def registries() -> dict[str, RegistryClient]:
    platform = load_platform()
    return {"build": RegistryClient(platform.build_registry)} | {
        r.name: RegistryClient(f"127.0.0.1:{r.registry_port}") for r in platform.regions
    }


def app_tags() -> dict[str, list[str]]:
    return {name: registry.tags(REPOSITORY) for name, registry in registries().items()} | {
        "artifacts": registries()["build"].tags("artifacts/sample")
    }


def test_the_same_digest_is_in_every_region(first_release: dict[str, Any]) -> None:
    digest = first_release["baked"]["digest"]
    assert first_release["summary"]["regions"] == {"eu-west": digest, "us-east": digest, "ap-south": digest}
    for name, registry in registries().items():
        assert registry.manifest_digest(REPOSITORY, digest) == digest, name
        assert registry.manifest_digest(REPOSITORY, "1.0.0") == digest, name


def test_provenance_labels(first_release: dict[str, Any]) -> None:
    digest = first_release["baked"]["digest"]
    config = registries()["us-east"].image_config(REPOSITORY, digest)
    assert config is not None
    labels = config["config"]["Labels"]
    assert labels[f"{OCI}.version"] == "1.0.0"
    assert labels[f"{OCI}.revision"]
    assert labels[f"{OCI}.created"].startswith(str(first_release["run"].run_after.date()))
    # The base the release resolved at validate (the candidate then; other tests may move it
    # since), pinned by digest, and the build registry's tag of that base version names it.
    base = xcom(first_release["run"], "validate")["base"]
    assert labels[f"{OCI}.base.digest"] == base["digest"]
    assert registries()["build"].manifest_digest(base["repository"], base["version"]) == base["digest"]
    assert labels[f"{OCI}.base.name"].startswith(f"{load_platform().build_registry}/immutable/base:")
    packaged = xcom(first_release["run"], "package")
    assert labels["io.immutable.app.artifact.sha256"] == packaged["sha256"]
    assert packaged["wheel"] == "sample_app-1.0.0-py3-none-any.whl"
    # The app runs as the base's non-root user.
    assert config["config"]["User"] == load_base_spec().runtime_user.name


def test_the_signature_verifies_in_every_region(first_release: dict[str, Any]) -> None:
    from immutable.platforms import platform_for

    images = platform_for().images
    digest = first_release["baked"]["digest"]
    for region in [None, "eu-west", "us-east", "ap-south"]:
        assert images.verify_in(region, REPOSITORY, digest)["org.opencontainers.image.version"] == "1.0.0"


def test_an_unsigned_image_is_refused_before_deploy(first_release: dict[str, Any]) -> None:
    from immutable.images import base as base_images
    from immutable.images.engine import docker_client
    from immutable.pipelines import release as steps
    from immutable.signing import SignatureError

    # Same content, re-pushed under another tag without going through sign: a new, unsigned digest.
    client = docker_client()
    build = load_platform().build_registry
    signed = f"{build}/{REPOSITORY}@{first_release['baked']['digest']}"
    client.images.pull(signed)
    image = client.images.build(
        fileobj=__import__("io").BytesIO(f"FROM {signed}\nLABEL org.opencontainers.image.version=6.6.6\n".encode()),
        rm=True,
    )[0]
    digest = base_images.push(image.id, f"{build}/{REPOSITORY}", "unsigned")
    try:
        with pytest.raises(SignatureError, match="is not signed"):
            steps.copy_to_region(
                {"app": "sample"},
                {"repository": REPOSITORY, "digest": digest, "tags": ["unsigned"], "labels": {}},
                "eu-west",
            )
        assert registries()["eu-west"].manifest_digest(REPOSITORY, digest) is None
    finally:
        client.images.remove(image.id, force=True)


def test_dev_and_staging_leave_nothing_behind(first_release: dict[str, Any]) -> None:
    from immutable.local import environments

    run_id = first_release["run"].run_id
    assert first_release["states"]["destroy_dev_env"] == "success"
    assert first_release["states"]["destroy_staging_env"] == "success"
    for kind in ("dev", "staging"):
        assert environments.leftovers(environments.environment_name(kind, "sample", run_id)) == []
    staged = xcom(first_release["run"], "staging_test")
    assert "100 requests, 0 failure(s)" in staged["output"]


def test_a_stopped_region_fails_alone_then_completes_without_resending_layers(first_release: dict[str, Any]) -> None:
    from immutable.images.replicate import CopyError
    from immutable.localctl import registry_services
    from immutable.pipelines import release as steps

    # A version no test released before: the copy really is an app-only change on a known base.
    us_east = next(s for s in registry_services() if s.name == "registry-us-east")
    us_east.stop()
    try:
        run, states = release({"version": NEW_VERSION})
        assert str(run.state) == "failed"
        assert states["copy_to_region[1]"] == "failed"
        assert states["copy_to_region[0]"] == states["copy_to_region[2]"] == "success"
        plan, baked = xcom(run, "validate"), xcom(run, "bake")
        with pytest.raises(CopyError, match=r"region us-east \(registry 127\.0\.0\.1:5602\) failed after 2 attempts"):
            steps.copy_to_region(plan, baked, "us-east")
        for region in ("eu-west", "ap-south"):
            assert registries()[region].manifest_digest(REPOSITORY, NEW_VERSION) == baked["digest"]
        eu_copy = xcom(run, "copy_to_region", map_index=0)
        # An app-only change: the base layers were already in the region and did not travel again.
        assert eu_copy["skipped_blobs"], eu_copy
    finally:
        us_east.start()
    # Retry the failed region (what clearing the task does): it completes, sending only what is missing.
    report = steps.copy_to_region(plan, baked, "us-east")
    assert registries()["us-east"].manifest_digest(REPOSITORY, NEW_VERSION) == baked["digest"]
    first_layers = registries()["build"].manifest(REPOSITORY, first_release["baked"]["digest"])
    assert first_layers is not None
    already_there = {layer["digest"] for layer in first_layers["layers"]}
    assert already_there & set(report["skipped_blobs"]), report
    assert not already_there & set(report["pushed_blobs"]), report
    # And a second retry sends nothing at all.
    again = steps.copy_to_region(plan, baked, "us-east")
    assert again["pushed_blobs"] == [] and again["bytes_pushed"] == 0


def test_a_failing_smoke_check_fails_dev_test_and_still_tears_down(first_release: dict[str, Any]) -> None:
    from immutable.local import environments

    before = app_tags()
    # 0.9.0-broken answers 500 on / (see the sample app's faults.json).
    run, states = release({"version": "0.9.0-broken"})
    assert str(run.state) == "failed"
    assert states["dev_test"] == "failed"
    assert states["destroy_dev_env"] == "success"
    assert states["staging_test"] == "upstream_failed"
    assert all(states[f"copy_to_region[{i}]"] == "upstream_failed" for i in range(3)), states
    assert environments.leftovers(environments.environment_name("dev", "sample", run.run_id)) == []
    after = app_tags()
    for region in ("eu-west", "us-east", "ap-south"):
        assert "0.9.0-broken" not in after[region]
    assert after["eu-west"] == before["eu-west"]


def test_bad_trigger_values_stop_before_anything_is_built(first_release: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    before = app_tags()
    for conf in ({"version": "1.0"}, {"version": "v2.0.0"}, {"version": "2.0.0", "note": "x" * 600}):
        with pytest.raises(ParamValidationError):
            load_dag("releases.py", "release_sample").test(run_conf=conf)
    # Valid for the form but not for this app: a ref for an app built from a repo folder.
    run, states = release({"version": "2.0.0", "ref": "main"})
    assert str(run.state) == "failed"
    assert states["validate"] == "failed"
    assert states["package"] == "upstream_failed"
    assert app_tags() == before


def test_an_unknown_app_is_refused_at_validate() -> None:
    from datetime import UTC, datetime

    from immutable.config import ConfigError
    from immutable.pipelines import release as steps

    with pytest.raises(ConfigError, match=r"unknown app 'nope'.*known apps: \['sample', 'sample-critical'\]"):
        steps.validate("nope", {"version": "1.0.0"}, [], datetime.now(UTC))
