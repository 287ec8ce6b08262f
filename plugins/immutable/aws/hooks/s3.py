"""S3: the artifact bucket where packaged wheels wait for the bake."""

from __future__ import annotations

import base64
import hashlib

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
