"""Every app image has its SBOM beside it, in every region it was copied to, covered by its signature:
valid CycloneDX 1.6, listing exactly the Debian packages the image's package manifest lists and the
wheels the release packaged, with their sha256."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.helpers import APP, REGIONS, xcom

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_platform", "airflow_db", "production_platform")]


def test_every_region_holds_the_sbom_the_signature_names_and_it_lists_what_the_image_holds(
    two_good_releases: dict[str, Any],
) -> None:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    from immutable.app_spec import app_spec
    from immutable.config import load_platform
    from immutable.images.base import package_manifest
    from immutable.local.base_images import SBOM_ARTIFACT_TYPE, SBOM_OF
    from immutable.platforms import platform_for
    from immutable.registry import RegistryClient
    from immutable.sbom import SBOM_MEDIA_TYPE, listed_packages, sbom_tag, validate
    from immutable.signing import SignatureError

    run = two_good_releases["second"]
    baked, packaged = xcom(run, "bake"), xcom(run, "package")
    repository, digest = app_spec(APP).repository, baked["digest"]
    images = platform_for().images
    manifest = package_manifest(baked["image"])  # the package list the base build wrote into the image
    wheels = {
        (str(name), str(version))
        for name, version, _, _ in map(parse_wheel_filename, [packaged["wheel"], *packaged.get("dependencies", [])])
    }
    app_wheel_name, app_wheel_version, _, _ = parse_wheel_filename(packaged["wheel"])
    documents = {}
    for region in [None, *REGIONS]:
        url = images.sbom_url(region, repository, digest)
        assert url is not None, f"no SBOM beside {repository}@{digest} in {region or 'the build registry'}"
        documents[region] = httpx.get(url, timeout=10).text
        validate(documents[region])
        images.verify_in(region, repository, digest)  # the signature names this very document
    assert len(set(documents.values())) == 1, "every region holds the same SBOM"
    document = documents[None]
    listed = listed_packages(document)
    assert listed["deb"] == {(name, package["version"]) for name, package in manifest.items()}
    assert {(canonicalize_name(name), version) for name, version in listed["pypi"]} == wheels
    body = json.loads(document)
    assert body["metadata"]["component"]["version"] == "1.1.0"
    [app_wheel] = [
        c
        for c in body["components"]
        if (canonicalize_name(c["name"]), c["version"]) == (str(app_wheel_name), str(app_wheel_version))
    ]
    assert app_wheel["hashes"] == [{"alg": "SHA-256", "content": packaged["sha256"].removeprefix("sha256:")}]

    # Another document put in its place in a region: the image is refused there, naming the SBOM.
    registry = RegistryClient(f"127.0.0.1:{load_platform().region(REGIONS[1]).registry_port}")
    forged = json.dumps(body | {"components": body["components"][1:]})  # one package fewer

    def store(text: str) -> None:
        files = [(text.encode(), SBOM_MEDIA_TYPE, {SBOM_OF: digest})]
        registry.push_artifact(repository, sbom_tag(digest), files, SBOM_ARTIFACT_TYPE)

    store(forged)
    try:
        with pytest.raises(SignatureError, match="is not the one signed"):
            images.verify_in(REGIONS[1], repository, digest)
    finally:  # the genuine one back (the same bytes, so the same digest)
        store(document)
    images.verify_in(REGIONS[1], repository, digest)
