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

from immutable.aws.fleets import NO_RELEASE_ACTION, AwsFleets, target_group_name
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
        found = self._records().get_record(bucket=self.settings.artifact_bucket, key=self._key(app, region))
        return found if found is not None else {}

    @contextlib.contextmanager
    def _locked(self, app: str, region: str) -> Generator[dict[str, Any]]:
        """Read-modify-write under a lock object that only one writer can create (If-None-Match)."""
        records, bucket = self._records(), self.settings.artifact_bucket
        lock_key = self._key(app, region) + ".lock"
        deadline = time.monotonic() + LOCK_WAIT_S
        while not records.create_lock(bucket=bucket, key=lock_key, taken_at=time.time()):
            held_since = records.lock_taken_at(bucket=bucket, key=lock_key)
            if time.time() - held_since > LOCK_STALE_S:
                log.warning("taking over the stale lock s3://%s/%s", bucket, lock_key)
                records.delete_lock(bucket=bucket, key=lock_key)
                continue
            if time.monotonic() > deadline:
                raise RecordLocked(
                    f"s3://{bucket}/{lock_key} has been held for {time.time() - held_since:.0f}s by another "
                    "writer of this app's record in this region; run the task again"
                )
            time.sleep(1.0)
        try:
            record = self.record(app, region)
            yield record
            records.put_record(bucket=bucket, key=self._key(app, region), record=record)
        finally:
            records.delete_lock(bucket=bucket, key=lock_key)

    # --- traffic --------------------------------------------------------------------------

    def _color_arns(self, app: str, region: str) -> dict[str, str]:
        elb = self.fleets.elb(region)
        found = {}
        for color in ("blue", "green", "canary", "baseline"):
            target_group = elb.target_group(target_group_name(app, color))
            if target_group:
                found[color] = target_group["TargetGroupArn"]
        return found

    def shares(self, app: str, region: str) -> dict[str, float]:
        weights = self.fleets.elb(region).forward_weights(self.platform.aws_region(region).listener_arn)
        colors = {arn: color for color, arn in self._color_arns(app, region).items()}
        total = sum(weights.values())
        return {colors[arn]: 100.0 * w / total for arn, w in weights.items() if arn in colors and total}

    def set_shares(self, app: str, region: str, shares: dict[str, float]) -> None:
        """One listener change: the colors named take these percentages, every other color none."""
        arns = self._color_arns(app, region)
        missing = sorted(c for c, share in shares.items() if share > 0 and c not in arns)
        if missing:
            raise RuntimeError(f"{app} in {region}: no target group for {missing}; launch those fleets first")
        weights = {arns[c]: round(share) for c, share in shares.items() if c in arns and share > 0}
        self.fleets.elb(region).set_forward_weights(
            self.platform.aws_region(region).listener_arn, weights, fallback=NO_RELEASE_ACTION
        )
        log.info("%s %s: traffic now %s", app, region, shares)
