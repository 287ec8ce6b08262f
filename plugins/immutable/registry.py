"""A small client for the OCI distribution API, for what the Docker SDK cannot ask a registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CHUNK_BYTES = 1 << 20  # 1 MiB per read while streaming a blob between registries
TIMEOUT_S = 30.0  # seconds; a local registry answers in milliseconds, a stuck one must not hang a task


class RegistryError(RuntimeError):
    """A registry failed; the message starts with the cause (`cause`), then what was being done."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(f"{cause}: {message}" if cause else message)
        self.cause = cause or message


def error_cause(body: str, limit: int = 200) -> str:
    """The root cause in a registry's error body, to say first. The distribution registry answers a
    JSON document of errors ({"code": "UNKNOWN", "message": "unknown error", "detail": ...}) whose
    detail holds the underlying Go error chain, as a string ("write /var/lib/registry/...: no space
    left on device", measured on a full disk) or as a structure ({"Op": "write", "Err": ...})."""
    import json

    chains: list[str] = []  # error texts, most telling first
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors:
        return body.strip()[:limit] or "no detail given"

    def leaves(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                leaves(inner, str(name))
        elif isinstance(value, list):
            for inner in value:
                leaves(inner, key)
        elif isinstance(value, str) and key.lower() in ("err", "error", "cause"):
            chains.append(value)

    for error in errors:
        if isinstance(error, dict):
            detail = error.get("detail")
            if isinstance(detail, str):  # "write /var/lib/registry/...: no space left on device"
                chains.append(detail)
            leaves(detail)
            chains.append(str(error.get("message") or ""))
    linked = [c for c in chains if ": " in c]
    best = max(linked, key=lambda c: c.count(": ")) if linked else next((c for c in chains if c), "")
    return best.rsplit(": ", 1)[-1].strip()[:limit] or "no detail given"


class RegistryClient:
    """Talks to one registry at `host:port` over plain HTTP (loopback registries only)."""

    def __init__(self, address: str, *, scheme: str = "http") -> None:
        self.address = address
        self.base_url = f"{scheme}://{address}/v2"
        self._client: Any = None

    @property
    def http(self) -> Any:
        """One connection pool per client: a new httpx client per request costs ~40 ms of CPU."""
        if self._client is None:
            import httpx

            # Plain HTTP needs no CA bundle, and loading one is most of that cost.
            self._client = httpx.Client(timeout=TIMEOUT_S, verify=self.base_url.startswith("https://"))
        return self._client

    def _get(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            return self.http.request(method, f"{self.base_url}{path}", headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"registry {self.address} did not answer {method} {path}: {exc}. "
                "Is it running? `make up` starts the local registries.",
                cause=str(exc) or type(exc).__name__,
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

    def raw_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """(exact bytes, media type, digest): copying these bytes keeps the digest identical."""
        response = self._get(f"/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"read manifest {repository}:{reference}")
        digest = (
            response.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(response.content).hexdigest()
        )
        return response.content, response.headers["Content-Type"].split(";")[0], digest

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete the manifest and every tag pointing at it (its blobs go at the next garbage
        collection). False if it was already gone."""
        response = self._get(f"/{repository}/manifests/{digest}", method="DELETE")
        if response.status_code == 404:
            return False
        if response.status_code == 405:
            raise RegistryError(
                f"registry {self.address} does not allow deletes; it was started before retention existed: "
                "restart it (`make down && make up`) so it reads its new config (storage.delete.enabled)",
                cause="deletes disabled",
            )
        self._raise_for(response, f"delete {repository}@{digest}")
        return True

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._get(f"/{repository}/blobs/{digest}", method="HEAD")
        if response.status_code == 404:
            return False
        self._raise_for(response, f"look up blob {digest} in {repository}")
        return True

    def blob(self, repository: str, digest: str) -> bytes:
        response = self._get(f"/{repository}/blobs/{digest}")
        self._raise_for(response, f"read blob {digest} from {repository}")
        data = bytes(response.content)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"blob {digest} from {self.address}/{repository} does not match its digest")
        return data

    def upload_blob(self, repository: str, digest: str, data: bytes | Iterator[bytes]) -> None:
        """Monolithic upload: POST for a session, PUT the bytes (or a stream of them) with their digest.

        The registry checks the content against the digest and refuses a mismatch.
        """
        import httpx

        start = self._get(f"/{repository}/blobs/uploads/", method="POST")
        self._raise_for(start, f"start a blob upload to {repository}")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"{self.base_url.rsplit('/v2', 1)[0]}{location}"
        separator = "&" if "?" in location else "?"
        try:
            response = self.http.put(
                f"{location}{separator}digest={digest}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=TIMEOUT_S * 10,
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.address} failed during the upload of {digest}: {exc}") from exc
        self._raise_for(response, f"upload blob {digest} to {repository}")

    def copy_blob_to(self, target: RegistryClient, repository: str, digest: str) -> int:
        """Stream one blob from this registry into `target` without holding it in memory; returns bytes sent."""
        import httpx

        sent = 0
        try:
            with self.http.stream("GET", f"{self.base_url}/{repository}/blobs/{digest}") as response:
                self._raise_for(response, f"read blob {digest} from {repository}")

                def chunks() -> Iterator[bytes]:
                    nonlocal sent
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        sent += len(chunk)
                        yield chunk

                target.upload_blob(repository, digest, chunks())
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.address} failed while sending blob {digest}: {exc}") from exc
        return sent

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        import httpx

        try:
            response = self.http.put(
                f"{self.base_url}/{repository}/manifests/{reference}",
                content=body,
                headers={"Content-Type": media_type},
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.address} failed to store manifest {reference}: {exc}") from exc
        self._raise_for(response, f"store manifest {repository}:{reference}")
        return str(response.headers.get("Docker-Content-Digest", ""))

    def push_artifact(
        self, repository: str, tag: str, files: list[tuple[bytes, str, dict[str, str]]], artifact_type: str
    ) -> str:
        """Store files as an OCI artifact (an image manifest with an empty config); returns its digest."""
        empty = b"{}"
        empty_digest = "sha256:" + hashlib.sha256(empty).hexdigest()
        if not self.blob_exists(repository, empty_digest):
            self.upload_blob(repository, empty_digest, empty)
        layers = []
        for data, media_type, notes in files:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if not self.blob_exists(repository, digest):
                self.upload_blob(repository, digest, data)
            layers.append({"mediaType": media_type, "digest": digest, "size": len(data), "annotations": notes})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": len(empty)},
            "layers": layers,
        }
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        self.put_manifest(repository, tag, body, OCI_MANIFEST)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def _raise_for(self, response: Any, action: str) -> None:
        if response.status_code >= 400:
            body = response.read()[:20_000].decode(errors="replace") if hasattr(response, "read") else ""
            shown = body if len(body) <= 300 else body[:150] + " ... " + body[-150:]
            raise RegistryError(
                f"registry {self.address} refused to {action}: HTTP {response.status_code} {shown}",
                cause=error_cause(body) if body else f"HTTP {response.status_code}",
            )
