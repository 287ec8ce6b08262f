from __future__ import annotations

from pathlib import Path

import pytest

from immutable.signing import SignatureError, Signer, ensure_key, signature_tag, verify

DIGEST = "sha256:" + "ab" * 32
LABELS = {
    "org.opencontainers.image.version": "1.0.0",
    "org.opencontainers.image.base.digest": "sha256:" + "cd" * 32,
    "io.immutable.app.artifact.sha256": "sha256:" + "ef" * 32,
    "maintainer": "not covered by the signature",
}


@pytest.fixture()
def signer(tmp_path: Path) -> Signer:
    key = tmp_path / "key.pem"
    assert "created" in ensure_key(key)
    assert "present" in ensure_key(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    return Signer(key.read_bytes())


def test_a_signed_image_verifies(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS)
    verify(document, repository="apps/sample", digest=DIGEST, labels=LABELS, public_pem=signer.public_pem())


def test_labels_outside_provenance_may_change(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS)
    relabelled = LABELS | {"maintainer": "someone else"}
    verify(document, repository="apps/sample", digest=DIGEST, labels=relabelled, public_pem=signer.public_pem())


def test_a_tampered_label_is_refused(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS)
    tampered = LABELS | {"org.opencontainers.image.version": "9.9.9"}
    with pytest.raises(SignatureError, match=r"differs from what was signed.*org.opencontainers.image.version"):
        verify(document, repository="apps/sample", digest=DIGEST, labels=tampered, public_pem=signer.public_pem())


def test_another_digest_is_refused(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS)
    other = "sha256:" + "00" * 32
    with pytest.raises(SignatureError, match="signs another digest"):
        verify(document, repository="apps/sample", digest=other, labels=LABELS, public_pem=signer.public_pem())


def test_a_wrong_key_is_refused(signer: Signer, tmp_path: Path) -> None:
    ensure_key(tmp_path / "other.pem")
    other = Signer((tmp_path / "other.pem").read_bytes())
    document = other.sign("apps/sample", DIGEST, LABELS)
    with pytest.raises(SignatureError, match="does not verify with the pipeline's key"):
        verify(document, repository="apps/sample", digest=DIGEST, labels=LABELS, public_pem=signer.public_pem())


def test_an_altered_signature_is_refused(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS)
    document["signature"] = document["signature"][:-4] + "AAA="
    with pytest.raises(SignatureError, match="does not verify"):
        verify(document, repository="apps/sample", digest=DIGEST, labels=LABELS, public_pem=signer.public_pem())


def test_a_missing_signature_is_refused(signer: Signer) -> None:
    with pytest.raises(SignatureError, match="is not signed"):
        verify(None, repository="apps/sample", digest=DIGEST, labels=LABELS, public_pem=signer.public_pem())


def test_signature_tag_is_a_valid_tag() -> None:
    assert signature_tag(DIGEST) == f"sha256-{'ab' * 32}.sig"


SBOM = "sha256:" + "5b" * 32


def test_the_signature_covers_the_sbom_stored_beside_the_image(signer: Signer) -> None:
    document = signer.sign("apps/sample", DIGEST, LABELS, sbom=SBOM)
    common: dict[str, object] = {"repository": "apps/sample", "digest": DIGEST, "labels": LABELS}
    verify(document, **common, public_pem=signer.public_pem(), sbom=SBOM)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match=r"the SBOM beside apps/sample@sha256:abab.* is not the one signed"):
        verify(document, **common, public_pem=signer.public_pem(), sbom="sha256:" + "00" * 32)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="none is stored"):
        verify(document, **common, public_pem=signer.public_pem(), sbom=None)  # type: ignore[arg-type]
    # An image signed before SBOMs existed names none: whatever is stored beside it is not its promise.
    older = signer.sign("apps/sample", DIGEST, LABELS)
    verify(older, **common, public_pem=signer.public_pem(), sbom=SBOM)  # type: ignore[arg-type]
