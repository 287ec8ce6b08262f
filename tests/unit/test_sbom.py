"""An image's bill of materials (immutable.sbom): valid CycloneDX 1.6, exactly what it was given, stable."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from immutable.sbom import OsPackage, PythonPackage, SbomError, cyclonedx_json, listed_packages, validate

DIGEST = "sha256:" + "ab" * 32
OS = [
    OsPackage("libc6", "2.36-9+deb12u14", "amd64"),
    OsPackage("ca-certificates", "20230311+deb12u1", "all"),
    OsPackage("libc6", "2.36-9+deb12u14", "amd64"),  # dpkg lists a package once; a repeat is folded
]
PY = [PythonPackage("sample-app", "1.2.0", "cd" * 32), PythonPackage("Flask", "3.1.0")]


def document(**changes: object) -> str:
    arguments: dict[str, object] = {
        "repository": "apps/sample",
        "version": "1.2.0",
        "digest": DIGEST,
        "created": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        "distro": "debian-12",
        "os_packages": OS,
        "python_packages": PY,
    } | changes
    return cyclonedx_json(**arguments)  # type: ignore[arg-type]


def test_the_document_is_valid_cyclonedx_and_lists_exactly_the_packages_given() -> None:
    text = document()
    validate(text)
    assert listed_packages(text) == {
        "deb": {("libc6", "2.36-9+deb12u14"), ("ca-certificates", "20230311+deb12u1")},
        "pypi": {("sample-app", "1.2.0"), ("Flask", "3.1.0")},
    }
    body = json.loads(text)
    assert body["bomFormat"] == "CycloneDX" and body["specVersion"] == "1.6"
    assert body["metadata"]["component"]["type"] == "container"
    assert body["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    purls = {c["name"]: c["purl"] for c in body["components"]}
    assert purls["libc6"] == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12"
    assert purls["Flask"] == "pkg:pypi/flask@3.1.0"
    wheel = next(c for c in body["components"] if c["name"] == "sample-app")
    assert wheel["hashes"] == [{"alg": "SHA-256", "content": "cd" * 32}]
    # The image depends on every package it lists: the graph is complete.
    [root] = [d for d in body["dependencies"] if d["ref"] == f"image:{DIGEST}"]
    assert len(root["dependsOn"]) == 4


def test_the_same_image_gives_the_same_bytes_and_another_image_another_serial() -> None:
    assert document() == document(os_packages=list(reversed(OS)))
    other = json.loads(document(digest="sha256:" + "ef" * 32))
    assert other["serialNumber"] != json.loads(document())["serialNumber"]


def test_a_document_that_breaks_the_schema_is_refused_naming_what() -> None:
    broken = document().replace('"SHA-256"', '"SHA-999"')
    with pytest.raises(SbomError, match=re.escape("not a valid CycloneDX 1.6 document: 'SHA-999' is not one of")):
        validate(broken)


def test_a_listing_printed_anywhere_becomes_the_sbom_with_the_installed_wheels_hashes() -> None:
    """What LIST_PACKAGES prints, in a container locally or on a builder instance over SSM on aws."""
    from immutable.images.inventory import sbom_from_listing

    listing = (
        "libc6\t2.36-9+deb12u4\tamd64\nzlib1g\t1:1.2.13.dfsg-1\tamd64\n"
        "--- os\ndebian-12\n"
        "--- python\nSample-App\t1.2.0\nhttpx\t0.28.1\n"
    )
    labels = {
        "org.opencontainers.image.version": "1.2.0",
        "org.opencontainers.image.created": "2026-12-01T10:00:00+00:00",
    }
    wheels = {"sample_app-1.2.0-py3-none-any.whl": "ab" * 32}
    document = sbom_from_listing(
        listing, repository="apps/sample", digest="ami-0123", labels=labels, wheel_sha256=wheels
    )
    validate(document.decode())
    assert listed_packages(document.decode()) == {
        "deb": {("libc6", "2.36-9+deb12u4"), ("zlib1g", "1:1.2.13.dfsg-1")},
        "pypi": {("Sample-App", "1.2.0"), ("httpx", "0.28.1")},
    }
    body = json.loads(document)
    assert body["metadata"]["component"]["version"] == "1.2.0"
    hashes = {c["name"]: c.get("hashes") for c in body["components"] if c["purl"].startswith("pkg:pypi/")}
    assert hashes == {"Sample-App": [{"alg": "SHA-256", "content": "ab" * 32}], "httpx": None}
    assert "distro=debian-12" in next(c["purl"] for c in body["components"] if c["name"] == "libc6")
