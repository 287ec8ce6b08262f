"""Sign an image digest together with its provenance, and verify before every deploy (ed25519).

The signature travels with the image: it is stored in the same registry repository as a small
OCI artifact tagged `sha256-<hex>.sig`, so copying an image to a region copies its signature.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.config import PlatformConfig
from immutable.paths import PROJECT_ROOT

SIGNATURE_MEDIA_TYPE = "application/vnd.immutable.signature.v1+json"
# Labels covered by the signature: changing any of them after signing is tampering.
SIGNED_LABEL_PREFIXES = ("org.opencontainers.image.", "io.immutable.")


class SignatureError(RuntimeError):
    """An image is unsigned, or its signature does not match; the deploy must not go on."""


def signature_tag(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"{algorithm}-{hexdigest}.sig"


def revocation_tag(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"{algorithm}-{hexdigest}.revoked"


def artifact_tags(digest: str) -> list[str]:
    """The artifacts stored beside an image in its repository (its signature, its SBOM, its revocation
    if it was revoked): they travel with it to every region and go when it goes."""
    from immutable.sbom import sbom_tag

    return [signature_tag(digest), sbom_tag(digest), revocation_tag(digest)]


def signed_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(labels.items()) if k.startswith(SIGNED_LABEL_PREFIXES)}


def payload(repository: str, digest: str, labels: dict[str, str], sbom: str | None = None) -> bytes:
    """Canonical bytes that are signed: the digest, the provenance labels and, where the image has
    one, its SBOM's digest, nothing else."""
    body: dict[str, Any] = {"repository": repository, "digest": digest, "labels": signed_labels(labels)}
    if sbom is not None:
        body["sbom"] = sbom
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signer:
    private_pem: bytes

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(self.private_pem, password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, repository: str, digest: str, labels: dict[str, str], sbom: str | None = None) -> dict[str, Any]:
        body = payload(repository, digest, labels, sbom)
        return {"payload": base64.b64encode(body).decode(), "signature": self.sign_bytes(body)}

    def sign_bytes(self, body: bytes) -> str:
        """The base64 ed25519 signature of `body` (any canonical document: an image's payload, a revocation)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(self.private_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key is not an ed25519 private key")
        return base64.b64encode(key.sign(body)).decode()


def signature_valid(body: bytes, signature: str, public_pem: bytes) -> bool:
    """Whether `signature` (base64) signs `body` with the key whose public half is `public_pem`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public_key = serialization.load_pem_public_key(public_pem)
    if not isinstance(public_key, Ed25519PublicKey):
        raise SignatureError("the verification key is not an ed25519 public key")
    try:
        public_key.verify(base64.b64decode(signature), body)
    except (ValueError, InvalidSignature):
        return False
    return True


def verify(
    document: dict[str, Any] | None,
    *,
    repository: str,
    digest: str,
    labels: dict[str, str],
    public_pem: bytes,
    sbom: str | None = None,
) -> None:
    """Raise SignatureError unless `document` signs exactly this digest and these labels with our key,
    and, if it signs an SBOM, unless `sbom` (the digest of the one stored beside the image) is it."""
    where = f"{repository}@{digest}"
    if document is None:
        raise SignatureError(f"{where} is not signed; only images signed by the release pipeline may be deployed")
    try:
        body = base64.b64decode(document["payload"])
        valid = signature_valid(body, str(document["signature"]), public_pem)
    except (KeyError, ValueError):
        valid = False
    if not valid:
        raise SignatureError(
            f"the signature of {where} does not verify with the pipeline's key (wrong key or altered "
            "signature); refusing to deploy"
        )
    signed = json.loads(body)
    if signed.get("digest") != digest:
        raise SignatureError(f"the signature found for {where} signs another digest: {signed.get('digest')}")
    expected = signed_labels(labels)
    if signed.get("labels") != expected:
        changed = sorted(
            k
            for k in set(expected) | set(signed.get("labels", {}))
            if expected.get(k) != signed.get("labels", {}).get(k)
        )
        raise SignatureError(f"the provenance of {where} differs from what was signed (labels {changed}); refusing")
    signed_sbom = signed.get("sbom")
    if signed_sbom is not None and signed_sbom != sbom:
        raise SignatureError(
            f"the SBOM beside {where} is not the one signed ({sbom or 'none is stored'}, signed {signed_sbom}); "
            "refusing"
        )


def ensure_key(path: Path) -> str:
    """Create an ed25519 key for the local platform if there is none; returns what was done."""
    if path.exists():
        return f"{path} present"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written whole under another name, then linked: two processes starting at once (a scheduler and
    # a CLI, or two test workers) end with one key, and neither reads a half-written file.
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_bytes(pem)
    draft.chmod(0o600)
    try:
        os.link(draft, path)
    except FileExistsError:
        return f"{path} present"
    finally:
        draft.unlink()
    return f"{path} created"


def key_path(platform: PlatformConfig) -> Path:
    path = Path(platform.signing.key_file)
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_signer(platform: PlatformConfig) -> Signer:
    """The key from the Airflow connection if configured, else from the key file."""
    if platform.signing.connection_id:
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(platform.signing.connection_id)
        if not connection.password:
            raise SignatureError(
                f"Airflow connection '{platform.signing.connection_id}' has no password; put the PEM key there"
            )
        return Signer(connection.password.encode())
    path = key_path(platform)
    if not path.exists():
        raise SignatureError(f"signing key {path} not found; `make up` creates one for the local platform")
    return Signer(path.read_bytes())
