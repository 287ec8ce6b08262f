"""Revocation records: signed, bound to one image, and read as refusals with the reason and who."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immutable.config import ConfigError, PlatformConfig, load_platform
from immutable.revocation import Revocation, parse_revoke_params, read_document, signed_document
from immutable.signing import SignatureError, ensure_key

DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def platform(tmp_path: Path) -> PlatformConfig:
    key = tmp_path / "signing.pem"
    ensure_key(key)
    config = load_platform()
    return config.model_copy(update={"signing": config.signing.model_copy(update={"key_file": str(key)})})


def record(**changes: str) -> Revocation:
    fields = {
        "kind": "app",
        "repository": "apps/sample",
        "digest": DIGEST,
        "version": "1.2.0",
        "reason": "CVE-2026-0001 in the app's own code",
        "revoked_by": "alice",
        "revoked_at": "2026-12-01T10:00:00+00:00",
    }
    return Revocation.model_validate(fields | changes)


def test_a_signed_record_reads_back_as_a_sentence_with_reason_and_who(platform: PlatformConfig) -> None:
    document = signed_document(platform, record())
    read = read_document(platform, document, repository="apps/sample", digest=DIGEST)
    assert read == record()
    assert read.sentence() == (
        f"apps/sample@{DIGEST} (1.2.0) was revoked by alice at 2026-12-01T10:00:00+00:00: "
        "CVE-2026-0001 in the app's own code"
    )


def test_an_altered_record_is_refused_as_a_record(platform: PlatformConfig) -> None:
    stored = json.loads(signed_document(platform, record()))
    stored["record"]["revoked_by"] = "mallory"
    with pytest.raises(SignatureError, match="does not verify with the pipeline's key"):
        read_document(platform, json.dumps(stored).encode(), repository="apps/sample", digest=DIGEST)
    with pytest.raises(SignatureError, match="unreadable"):
        read_document(platform, b"not json", repository="apps/sample", digest=DIGEST)


def test_a_record_moved_onto_another_image_is_refused(platform: PlatformConfig) -> None:
    document = signed_document(platform, record())
    other = "sha256:" + "d" * 64
    with pytest.raises(SignatureError, match="names another image"):
        read_document(platform, document, repository="apps/sample", digest=other)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "image", "app": "sample", "reference": "1.0.0", "reason": "bad"}, "kind"),
        ({"kind": "app", "app": "", "reference": "1.0.0", "reason": "bad"}, "app"),
        ({"kind": "base", "app": "sample", "reference": "1.0.0", "reason": "bad"}, "app"),
        ({"kind": "app", "app": "sample", "reference": "", "reason": "bad"}, "reference"),
        ({"kind": "app", "app": "sample", "reference": "1.0.0; rm -rf /", "reason": "bad"}, "reference"),
        ({"kind": "app", "app": "sample", "reference": "1.0.0", "reason": ""}, "reason"),
    ],
)
def test_a_bad_form_names_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'|{field}"):
        parse_revoke_params(params)
