"""A small client for the OCI distribution API, for what the Docker SDK cannot ask a registry."""

from __future__ import annotations

import json
from typing import Any

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
TIMEOUT_S = 30.0  # seconds; a local registry answers in milliseconds, a stuck one must not hang a task


class RegistryError(RuntimeError):
    pass


class RegistryClient:
    """Talks to one registry at `host:port` over plain HTTP (loopback registries only)."""

    def __init__(self, address: str, *, scheme: str = "http") -> None:
        self.address = address
        self.base_url = f"{scheme}://{address}/v2"

    def _get(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"registry {self.address} did not answer {method} {path}: {exc}. "
                "Is it running? `make up` starts the local registries."
            ) from exc

    def ping(self) -> bool:
        try:
            return self._get("/").status_code == 200
        except RegistryError:
            return False

    def tags(self, repository: str) -> list[str]:
        response = self._get(f"/{repository}/tags/list")
        if response.status_code == 404:
            return []
        self._raise_for(response, f"list tags of {repository}")
        return sorted(response.json().get("tags") or [])

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        response = self._get(f"/{repository}/manifests/{reference}", method="HEAD", headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"look up {repository}:{reference}")
        return response.headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> dict[str, Any] | None:
        response = self._get(f"/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"read manifest {repository}:{reference}")
        return json.loads(response.content)

    def image_config(self, repository: str, reference: str) -> dict[str, Any] | None:
        """The image's config blob (labels, user, env), read without pulling the image."""
        manifest = self.manifest(repository, reference)
        if manifest is None:
            return None
        config_digest = manifest.get("config", {}).get("digest")
        if not config_digest:
            raise RegistryError(f"{repository}:{reference} is not a single-platform image manifest")
        response = self._get(f"/{repository}/blobs/{config_digest}")
        self._raise_for(response, f"read config of {repository}:{reference}")
        return json.loads(response.content)

    def labels(self, repository: str, reference: str) -> dict[str, str] | None:
        config = self.image_config(repository, reference)
        if config is None:
            return None
        return dict((config.get("config") or {}).get("Labels") or {})

    def _raise_for(self, response: Any, action: str) -> None:
        if response.status_code >= 400:
            raise RegistryError(
                f"registry {self.address} refused to {action}: HTTP {response.status_code} {response.text[:300]}"
            )
