"""A registry's failure says its cause first, however long the registry's answer."""

from __future__ import annotations

import json

from immutable.registry import RegistryError, error_cause

# What the distribution registry answers when its storage is full (its shape, shortened paths).
FULL_DISK = json.dumps(
    {
        "errors": [
            {
                "code": "UNKNOWN",
                "message": "unknown error",
                "detail": {
                    "DriverName": "filesystem",
                    "Enclosed": {
                        "Op": "write",
                        "Path": "/var/lib/registry/docker/registry/v2/repositories/apps/sample/_uploads/"
                        + "0" * 400
                        + "/data",
                        "Err": "no space left on device",
                    },
                },
            },
            {
                "code": "UNKNOWN",
                "message": "filesystem: write /var/lib/registry/docker/registry/v2/repositories/apps/sample/"
                + "x" * 600
                + ": no space left on device",
            },
        ]
    }
)


# What the distribution registry 2.8 answered on a full disk in the drill (tests/integration), path shortened.
MEASURED_FULL_DISK = json.dumps(
    {
        "errors": [
            {
                "code": "UNKNOWN",
                "message": "unknown error",
                "detail": "write /var/lib/registry/docker/registry/v2/repositories/immutable/base/_uploads/"
                "57b30b98-bafd-4a54-921f-0aed08ae64c6/data: no space left on device",
            }
        ]
    }
)


def test_the_measured_full_disk_answer_is_named_by_its_cause() -> None:
    assert error_cause(MEASURED_FULL_DISK) == "no space left on device"


def test_a_full_disk_is_named_first() -> None:
    assert error_cause(FULL_DISK) == "no space left on device"
    error = RegistryError(f"registry 127.0.0.1:5602 refused to upload blob: HTTP 500 {FULL_DISK}", cause="x")
    assert str(error).startswith("x: registry 127.0.0.1:5602 refused")


def test_a_body_that_is_not_json_or_empty_still_gives_a_short_cause() -> None:
    assert error_cause("upstream connect error") == "upstream connect error"
    assert error_cause('{"errors": []}') == '{"errors": []}'
    assert len(error_cause("y" * 5000)) == 200


def test_a_copy_that_fails_for_a_full_disk_says_so_first(tmp_path: object) -> None:
    from immutable.images.replicate import CopyError, copy_with_retries

    class FullRegistry:
        address = "127.0.0.1:5602"

    class Source:
        address = "127.0.0.1:5600"

        def raw_manifest(self, repository: str, reference: str) -> None:
            raise RegistryError("registry 127.0.0.1:5602 refused to upload blob", cause=error_cause(FULL_DISK))

    try:
        copy_with_retries(
            Source(),  # type: ignore[arg-type]
            FullRegistry(),  # type: ignore[arg-type]
            "apps/sample",
            "sha256:" + "a" * 64,
            [],
            region="us-east",
            attempts=2,
            backoff_s=0.01,
        )
    except CopyError as exc:
        assert str(exc).startswith("no space left on device: copying apps/sample@sha256:"), str(exc)
        assert "region us-east (registry 127.0.0.1:5602) failed after 2 attempts" in str(exc)
    else:
        raise AssertionError("the copy did not fail")
