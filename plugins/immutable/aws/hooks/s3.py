"""S3: the artifact bucket where packaged wheels wait for the bake, and production's small records
(with their lock objects) in the same bucket."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from immutable.aws.hooks.base import RegionalAwsHook, error_code


class ArtifactS3Hook(RegionalAwsHook):
    client_type = "s3"

    def put_artifact(self, *, bucket: str, key: str, body: bytes, metadata: dict[str, str]) -> None:
        """Upload with a checksum S3 verifies on receipt; the sha256 also goes into the object's metadata."""
        self.conn.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
            Metadata=metadata,
        )
        self.log.info("Uploaded s3://%s/%s (%d bytes)", bucket, key, len(body))

    def artifact_metadata(self, *, bucket: str, key: str) -> dict[str, str] | None:
        try:
            return dict(self.conn.head_object(Bucket=bucket, Key=key)["Metadata"])
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get_artifact(self, *, bucket: str, key: str) -> bytes:
        return bytes(self.conn.get_object(Bucket=bucket, Key=key)["Body"].read())

    def presigned_get(self, *, bucket: str, key: str, expires_s: int) -> str:
        """A URL the builder instance fetches the artifact with (signed locally: no API call)."""
        return str(
            self.conn.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s)
        )


class RecordS3Hook(RegionalAwsHook):
    """JSON records, and the lock objects that guard their read-modify-write (one writer at a time)."""

    client_type = "s3"

    # What S3 answers a conditional write whose condition no longer holds (the object exists, or was
    # changed, or another write of it is in flight), or an If-Match on an object that is gone.
    CHANGED_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404")

    def get_record(self, *, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The record stored under `key` and its ETag, or (None, None) before the first write."""
        try:
            found = self.conn.get_object(Bucket=bucket, Key=key)
        except self.conn.exceptions.NoSuchKey:
            return None, None
        return dict(json.loads(found["Body"].read())), str(found["ETag"])

    def put_record(self, *, bucket: str, key: str, record: dict[str, Any], read_etag: str | None) -> bool:
        """Write the record only if it is still the one read (`read_etag`; None: there was none).
        False when another writer changed it since: nothing is written."""
        condition = {"IfMatch": read_etag} if read_etag else {"IfNoneMatch": "*"}
        try:
            self.conn.put_object(
                Bucket=bucket,
                Key=key,
                Body=json.dumps(record, indent=1, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
        except Exception as exc:
            if error_code(exc) not in self.CHANGED_CODES:
                raise
            return False
        return True

    def create_lock(self, *, bucket: str, key: str, taken_at: float) -> str | None:
        """Write the lock object only if none exists (a conditional put): its ETag, or None when
        another writer holds it."""
        return self._put_lock(bucket, key, taken_at, {"IfNoneMatch": "*"})

    def take_over_lock(self, *, bucket: str, key: str, stale_etag: str, taken_at: float) -> str | None:
        """Replace the stale lock `stale_etag` with ours, only if it is still that one: of two writers
        that found it stale, one gets it. Its ETag, or None when the lock changed or went meanwhile."""
        return self._put_lock(bucket, key, taken_at, {"IfMatch": stale_etag})

    def _put_lock(self, bucket: str, key: str, taken_at: float, condition: dict[str, str]) -> str | None:
        try:
            put = self.conn.put_object(Bucket=bucket, Key=key, Body=str(taken_at).encode(), **condition)
        except Exception as exc:
            if error_code(exc) not in self.CHANGED_CODES:
                raise
            return None
        return str(put["ETag"])

    def lock_state(self, *, bucket: str, key: str) -> tuple[float, str] | None:
        """When the lock's holder took it (epoch seconds; 0 when empty) and its ETag; None when free."""
        try:
            found = self.conn.get_object(Bucket=bucket, Key=key)
        except self.conn.exceptions.NoSuchKey:
            return None
        return float(found["Body"].read() or 0), str(found["ETag"])

    def delete_lock(self, *, bucket: str, key: str, etag: str) -> bool:
        """Delete the lock only if it is still ours (`etag`); False when another writer took it over."""
        try:
            self.conn.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except Exception as exc:
            if error_code(exc) not in self.CHANGED_CODES:
                raise
            return False
        return True
