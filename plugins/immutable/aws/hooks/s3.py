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

    # What S3 answers a conditional put (If-None-Match) when the object exists, or another is in flight.
    LOCK_TAKEN_CODES = ("PreconditionFailed", "ConditionalRequestConflict")

    def get_record(self, *, bucket: str, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None before the first write."""
        try:
            body = self.conn.get_object(Bucket=bucket, Key=key)["Body"]
        except self.conn.exceptions.NoSuchKey:
            return None
        return dict(json.loads(body.read()))

    def put_record(self, *, bucket: str, key: str, record: dict[str, Any]) -> None:
        self.conn.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(record, indent=1, sort_keys=True).encode(),
            ContentType="application/json",
        )

    def create_lock(self, *, bucket: str, key: str, taken_at: float) -> bool:
        """Write the lock object only if none exists (a conditional put): False when another writer holds it."""
        try:
            self.conn.put_object(Bucket=bucket, Key=key, Body=str(taken_at).encode(), IfNoneMatch="*")
        except Exception as exc:
            if error_code(exc) not in self.LOCK_TAKEN_CODES:
                raise
            return False
        return True

    def lock_taken_at(self, *, bucket: str, key: str) -> float:
        """When the lock's holder took it (epoch seconds; 0 when the object is empty)."""
        return float(self.conn.get_object(Bucket=bucket, Key=key)["Body"].read() or 0)

    def delete_lock(self, *, bucket: str, key: str) -> None:
        self.conn.delete_object(Bucket=bucket, Key=key)
