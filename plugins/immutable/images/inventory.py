"""What an image holds, read by running it, as a CycloneDX SBOM: its Debian packages, its
distribution and, in an app image, the app's Python distributions with the sha256 of each wheel
the bake installed. The base image and every app image get one (immutable.sbom writes it)."""

from __future__ import annotations

from datetime import UTC, datetime

from packaging.utils import canonicalize_name, parse_wheel_filename

from immutable.images.engine import docker_client
from immutable.provenance import LABEL_CREATED, LABEL_VERSION
from immutable.sbom import OsPackage, PythonPackage, cyclonedx_json

APP_PYTHON = "/opt/app/bin/python"  # where a bake installs the app's environment; a base has none

LIST_PACKAGES = rf"""
dpkg-query -W -f '${{Package}}\t${{Version}}\t${{Architecture}}\n'
echo '--- os'
. /etc/os-release && echo "${{ID}}-${{VERSION_ID}}"
echo '--- python'
if [ -x {APP_PYTHON} ]; then
  {APP_PYTHON} -c 'import importlib.metadata as m
for d in m.distributions(): print(d.metadata["Name"], d.version, sep="\t")'
fi
"""


def image_sbom(
    *, image: str, repository: str, digest: str, labels: dict[str, str], wheels: dict[str, bytes] | None = None
) -> bytes:
    """The image's CycloneDX SBOM from what is installed in it (LIST_PACKAGES run in a container of
    it); `wheels` (file name -> bytes) are the ones a bake installed, whose sha256 it carries."""
    import hashlib

    output = docker_client().containers.run(
        image, entrypoint=["/bin/sh", "-c"], command=[LIST_PACKAGES], remove=True, network_disabled=True
    )
    wheel_sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in (wheels or {}).items()}
    return sbom_from_listing(
        output.decode(), repository=repository, digest=digest, labels=labels, wheel_sha256=wheel_sha256
    )


def sbom_from_listing(
    listing: str, *, repository: str, digest: str, labels: dict[str, str], wheel_sha256: dict[str, str]
) -> bytes:
    """The CycloneDX SBOM from what LIST_PACKAGES printed, wherever it ran (a container, a builder
    instance); `wheel_sha256` is {wheel file name: sha256 hex} of the wheels installed."""
    packages, _, rest = listing.partition("--- os\n")
    distro, _, python = rest.partition("--- python\n")
    wheel_sha = {_wheel_key(name): sha for name, sha in wheel_sha256.items()}
    os_packages = [OsPackage(*line.split("\t")) for line in packages.splitlines() if line.count("\t") == 2]
    python_packages = [
        PythonPackage(name, version, wheel_sha.get((canonicalize_name(name), version)))
        for name, version in (line.split("\t") for line in python.splitlines() if line.count("\t") == 1)
    ]
    created = labels.get(LABEL_CREATED)
    document = cyclonedx_json(
        repository=repository,
        version=labels.get(LABEL_VERSION, ""),
        digest=digest,
        created=datetime.fromisoformat(created) if created else datetime.fromtimestamp(0, UTC),
        distro=distro.strip(),
        os_packages=os_packages,
        python_packages=python_packages,
    )
    return document.encode()


def _wheel_key(filename: str) -> tuple[str, str]:
    """A wheel's (canonical name, version): `Sample_App-1.2.0-py3-none-any.whl` -> (sample-app, 1.2.0)."""
    name, version, _, _ = parse_wheel_filename(filename)
    return str(name), str(version)
