"""An image's bill of materials as a CycloneDX 1.6 JSON document: the Debian packages installed in it
and the Python distributions of its app, with versions (and the wheels' sha256 where known).

Pure: the platform reads the package lists from the image. The same image gives the same bytes (the
serial number derives from the digest, the timestamp is the image's creation), so the document's
digest can be signed, and a retried step stores the very same document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPEC_VERSION = "1.6"


def sbom_tag(digest: str) -> str:
    """Where an image's SBOM is stored beside it in its repository, as its signature is."""
    algorithm, hexdigest = digest.split(":", 1)
    return f"{algorithm}-{hexdigest}.sbom"


class SbomError(ValueError):
    """A document that is not a valid CycloneDX 1.6 bill of materials."""


@dataclass(frozen=True, order=True)
class OsPackage:
    name: str
    version: str
    arch: str


@dataclass(frozen=True, order=True)
class PythonPackage:
    name: str
    version: str
    sha256: str | None = None  # of the wheel installed, where the release packaged it


def cyclonedx_json(
    *,
    repository: str,
    version: str,
    digest: str,
    created: datetime,
    distro: str,
    os_packages: Iterable[OsPackage],
    python_packages: Iterable[PythonPackage] = (),
) -> str:
    """The image's CycloneDX 1.6 document (JSON text); `distro` as purl's qualifier, e.g. debian-12."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"immutable-sbom:{repository}@{digest}"))
    bom.metadata.timestamp = created
    algorithm, _, hexdigest = digest.partition(":")
    image = Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=version,
        bom_ref=f"image:{digest}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)] if algorithm == "sha256" else [],
    )
    bom.metadata.component = image
    components = [
        Component(
            type=ComponentType.LIBRARY,
            name=package.name,
            version=package.version,
            bom_ref=f"deb:{package.name}:{package.arch}",
            purl=PackageURL("deb", "debian", package.name, package.version, {"arch": package.arch, "distro": distro}),
        )
        for package in sorted(set(os_packages))
    ]
    components += [
        Component(
            type=ComponentType.LIBRARY,
            name=package.name,
            version=package.version,
            bom_ref=f"pypi:{package.name}",
            purl=PackageURL("pypi", None, package.name.lower(), package.version),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=package.sha256)] if package.sha256 else [],
        )
        for package in sorted(set(python_packages))
    ]
    for component in components:
        bom.components.add(component)
    bom.register_dependency(image, components)
    return str(JsonV1Dot6(bom).output_as_string(indent=None))


def validate(document: str) -> None:
    """Raise SbomError unless `document` is valid against the CycloneDX 1.6 JSON schema."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document)
    if error is not None:
        raise SbomError(f"not a valid CycloneDX {SPEC_VERSION} document: {str(error).splitlines()[0]}")


def listed_packages(document: str) -> dict[str, set[tuple[str, str]]]:
    """What a document lists, by package type: {"deb": {(name, version)}, "pypi": {...}}."""
    listed: dict[str, set[tuple[str, str]]] = {}
    for component in json.loads(document).get("components", []):
        kind = str(component.get("purl", "")).removeprefix("pkg:").split("/", 1)[0]
        listed.setdefault(kind, set()).add((component["name"], component["version"]))
    return listed
