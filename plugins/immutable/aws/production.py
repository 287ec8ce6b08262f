"""Production on AWS: which color is live comes from the ALB listener's weights, what it runs from
the Auto Scaling groups' tags. The small record the platform cannot hold (the kept color's
retirement time, the earlier release, the lease) is an S3 object per app and region in the
artifact bucket, changed under a lock object written with a conditional put.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from immutable.aws.fleets import NO_RELEASE_ACTION, AwsFleets
from immutable.config import PlatformConfig
from immutable.production_state import ProductionState

if TYPE_CHECKING:
    from immutable.aws.hooks.s3 import RecordS3Hook

log = logging.getLogger(__name__)

LOCK_WAIT_S = 60.0  # seconds to wait for another writer of the same record
LOCK_STALE_S = 120.0  # a lock older than this was left by a crashed writer


class RecordLocked(RuntimeError):
    pass


class AwsProduction(ProductionState):
    def __init__(self, platform: PlatformConfig) -> None:
        self.platform = platform
        self.settings = platform.aws_settings
        self.fleets = AwsFleets(platform)

    def _records(self) -> RecordS3Hook:
        from immutable.aws.hooks.s3 import RecordS3Hook

        return RecordS3Hook.for_region(self.platform, self.settings.build_region)

    def _key(self, app: str, region: str) -> str:
        return f"production/{region}/{app}.json"

    # --- record ---------------------------------------------------------------------------

    def record(self, app: str, region: str) -> dict[str, Any]:
        found, _ = self._records().get_record(bucket=self.settings.artifact_bucket, key=self._key(app, region))
        return found if found is not None else {}

    @contextlib.contextmanager
    def _locked(self, app: str, region: str) -> Generator[dict[str, Any]]:
        """Read-modify-write under a lock object only one writer can hold. Every write is conditional:
        the lock is created only if absent, taken over only if it is still the stale one seen, and
        released only if it is still ours; the record is written only if nobody changed it since it
        was read. So a writer thought dead that wakes up can neither steal the lock nor overwrite."""
        records, bucket = self._records(), self.settings.artifact_bucket
        key = self._key(app, region)
        lock_key = key + ".lock"
        deadline = time.monotonic() + LOCK_WAIT_S
        while (ours := records.create_lock(bucket=bucket, key=lock_key, taken_at=time.time())) is None:
            held = records.lock_state(bucket=bucket, key=lock_key)
            if held is None:
                continue  # released meanwhile: try again at once
            held_since, held_etag = held
            if time.time() - held_since > LOCK_STALE_S:
                log.warning("taking over the stale lock s3://%s/%s", bucket, lock_key)
                ours = records.take_over_lock(bucket=bucket, key=lock_key, stale_etag=held_etag, taken_at=time.time())
                if ours is not None:
                    break
                continue  # another writer took it first, or it went: look again
            if time.monotonic() > deadline:
                raise RecordLocked(
                    f"s3://{bucket}/{lock_key} has been held for {time.time() - held_since:.0f}s by another "
                    "writer of this app's record in this region; run the task again"
                )
            time.sleep(1.0)
        try:
            found, etag = records.get_record(bucket=bucket, key=key)
            record = found if found is not None else {}
            yield record
            if not records.put_record(bucket=bucket, key=key, record=record, read_etag=etag):
                raise RecordLocked(
                    f"s3://{bucket}/{key} was changed by another writer while this one held its lock (the lock "
                    "was taken over as stale); nothing was written: run the task again"
                )
        finally:
            if not records.delete_lock(bucket=bucket, key=lock_key, etag=ours):
                log.warning("s3://%s/%s was taken over by another writer; left to it", bucket, lock_key)

    # --- traffic --------------------------------------------------------------------------

    def shares(self, app: str, region: str) -> dict[str, float]:
        weights = self.fleets.elb(region).forward_weights(self.platform.aws_region(region).listener_arn)
        colors = {arn: color for color, arn in self.fleets.target_group_arns(app, region).items()}
        total = sum(weights.values())
        return {colors[arn]: 100.0 * w / total for arn, w in weights.items() if arn in colors and total}

    def set_shares(self, app: str, region: str, shares: dict[str, float]) -> None:
        """One listener change: the colors named take these percentages, every other color none."""
        arns = self.fleets.target_group_arns(app, region)
        missing = sorted(c for c, share in shares.items() if share > 0 and c not in arns)
        if missing:
            raise RuntimeError(f"{app} in {region}: no target group for {missing}; launch those fleets first")
        weights = {arns[c]: round(share) for c, share in shares.items() if c in arns and share > 0}
        self.fleets.elb(region).set_forward_weights(
            self.platform.aws_region(region).listener_arn, weights, fallback=NO_RELEASE_ACTION
        )
        log.info("%s %s: traffic now %s", app, region, shares)
