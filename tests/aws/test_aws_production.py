"""Production on the aws platform against the emulator: Auto Scaling fleets per color behind ALB
weighted target groups, flips by listener weights, and the gates reading CloudWatch.

The emulator produces no ALB metrics, so `AlbMetrics` stands in for the load balancer's own
reporting: it puts per-target-group request, 5xx and response-time points for the colors that
exist, with the error rate the test asks of each version (see DESIGN.md's moto facts).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.aws.conftest import BUILD_REGION, REGIONS, AwsAccount

APP = "sample"
STEP_S = 1.0  # seconds between the points put for each color


PUT_BATCH = 500


class AlbMetrics:
    """Puts what an ALB reports for each of the app's target groups, every second, until stopped."""

    def __init__(self, account: AwsAccount, error_rates: dict[str, float]) -> None:
        self.account = account
        self.error_rates = error_rates  # "version" or "version@region" -> share of 5xx
        self.last_put: dict[str, int] = {}  # target group ARN -> last second put
        self.errors: list[str] = []  # failed rounds, retried at the next one
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(STEP_S):
            for region in REGIONS:
                # One failed call (the emulator busy, a group deleted under the loop) must not end the
                # thread: every later gate would find no data. The next round puts what was missed.
                try:
                    self._put(region)
                except Exception as exc:
                    self.errors.append(f"{region}: {exc!r}")

    def _put(self, region: str) -> None:
        """One point per second per metric since the last put: an ALB reports every period, however
        slowly this loop goes round the regions."""
        scaling = self.account.client("autoscaling", region)
        cloudwatch = self.account.client("cloudwatch", region)
        now = int(time.time())
        lb = self.account.regions[region].load_balancer_arn.split(":loadbalancer/", 1)[1]
        for group in scaling.describe_auto_scaling_groups()["AutoScalingGroups"]:
            tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
            if tags.get("immutable:app") != APP or not group.get("TargetGroupARNs"):
                continue
            target_group = group["TargetGroupARNs"][0]
            dimensions = [
                {"Name": "LoadBalancer", "Value": lb},
                {"Name": "TargetGroup", "Value": target_group.split(":", 5)[-1]},
            ]
            version = tags.get("immutable:version", "")
            error_rate = self.error_rates.get(f"{version}@{region}", self.error_rates.get(version, 0.0))
            # From the group's start: the ALB reports from the moment the targets register.
            since = self.last_put.get(target_group, int(group["CreatedTime"].timestamp()) - 1)
            data = []
            for second in range(since + 1, now + 1):
                requests = 50 + random.randint(-5, 5)
                for name, value in (
                    ("RequestCount", requests),
                    ("HTTPCode_Target_5XX_Count", round(requests * error_rate)),
                    ("TargetResponseTime", 0.02 + random.uniform(0, 0.004)),
                ):
                    stamp = datetime.fromtimestamp(second, UTC)
                    data.append({"MetricName": name, "Dimensions": dimensions, "Timestamp": stamp, "Value": value})
            for start in range(0, len(data), PUT_BATCH):  # PutMetricData takes at most 1,000 points a call
                cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data[start : start + PUT_BATCH])
            self.last_put[target_group] = now

    def __enter__(self) -> AlbMetrics:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture()
def upstream_ami(aws_account: AwsAccount) -> str:
    return aws_account.upstream_image_id


def listener_weights(account: AwsAccount, region: str) -> dict[str, int]:
    elb = account.client("elbv2", region)
    listener = elb.describe_listeners(ListenerArns=[account.regions[region].listener_arn])["Listeners"][0]
    weights: dict[str, int] = {}
    for action in listener["DefaultActions"]:
        for group in (action.get("ForwardConfig") or {}).get("TargetGroups", []):
            name = elb.describe_target_groups(TargetGroupArns=[group["TargetGroupArn"]])["TargetGroups"][0]
            weights[name["TargetGroupName"]] = int(group.get("Weight", 1))
    return weights


def groups(account: AwsAccount, region: str) -> set[str]:
    found = account.client("autoscaling", region).describe_auto_scaling_groups()["AutoScalingGroups"]
    return {g["AutoScalingGroupName"] for g in found if g["AutoScalingGroupName"].startswith(f"{APP}-")}


@pytest.fixture()
def production(aws_account: AwsAccount) -> Iterator[Any]:
    from immutable.config import load_platform
    from immutable.platforms import platform_for

    platform = load_platform()
    yield platform_for(platform).production
    # Leave the account as the next test expects it: nothing of the app, the listener answering 503.
    cleanup = platform_for(platform).production
    for region in REGIONS:
        for color in ("blue", "green", "canary", "baseline"):
            cleanup.fleets.destroy(APP, region, color, force=True)


def test_fleets_flip_by_listener_weights_and_keep_the_old_color(
    aws_account: AwsAccount, production: Any, upstream_ami: str
) -> None:
    from immutable.app_spec import app_spec
    from immutable.config import load_platform

    spec = app_spec(APP).for_platform(load_platform())
    region = BUILD_REGION
    assert production.live(APP, region) is None
    production.fleets.launch(
        spec=spec, region=region, color="blue", image=upstream_ami, digest="ami-v1", version="1.0.0", size=2
    )
    production.set_shares(APP, region, {"blue": 100})
    assert production.live(APP, region) == {"color": "blue", "version": "1.0.0", "digest": "ami-v1", "size": 2}
    # A retry of the same launch is a no-op; another release on a taken color is refused.
    production.fleets.launch(
        spec=spec, region=region, color="blue", image=upstream_ami, digest="ami-v1", version="1.0.0", size=2
    )
    with pytest.raises(Exception, match="runs another release"):
        production.fleets.launch(
            spec=spec, region=region, color="blue", image=upstream_ami, digest="ami-v2", version="1.1.0", size=2
        )
    production.fleets.launch(
        spec=spec, region=region, color="green", image=upstream_ami, digest="ami-v2", version="1.1.0", size=2
    )
    production.set_shares(APP, region, {"blue": 90, "green": 10})
    assert listener_weights(aws_account, region) == {"sample-blue": 90, "sample-green": 10}
    production.set_shares(APP, region, {"green": 100})
    assert listener_weights(aws_account, region) == {"sample-green": 100}
    assert production.live(APP, region)["version"] == "1.1.0"
    assert {"sample-eu-west-1-blue", "sample-eu-west-1-green"} <= groups(aws_account, region)
    # Every fleet's instances answer IMDSv2 only (the template's current version, as launched).
    ec2 = aws_account.client("ec2", region)
    for color in ("blue", "green"):
        [version] = ec2.describe_launch_template_versions(
            LaunchTemplateName=f"{APP}-{region}-{color}", Versions=["$Default"]
        )["LaunchTemplateVersions"]
        options = version["LaunchTemplateData"].get("MetadataOptions", {})
        assert options.get("HttpTokens") == "required" and options.get("HttpPutResponseHopLimit") == 1, options
    with pytest.raises(Exception, match="carries all of the app's traffic"):
        production.fleets.destroy(APP, region, "green")
    assert production.fleets.destroy(APP, region, "blue")
    assert groups(aws_account, region) == {"sample-eu-west-1-green"}


def test_a_launch_template_error_names_group_region_and_image_and_leaves_nothing(
    aws_account: AwsAccount, upstream_ami: str
) -> None:
    """The region's security group is gone: the group cannot be created from its launch template."""
    from immutable.app_spec import app_spec
    from immutable.aws.fleets import AwsFleets, FleetError
    from immutable.config import load_platform

    platform = load_platform()
    region = BUILD_REGION
    broken = platform.aws_region(region).model_copy(update={"security_group_ids": ["sg-0123456789abcdef0"]})
    regions = [r.model_copy(update={"aws": broken}) if r.name == region else r for r in platform.regions]
    fleets = AwsFleets(platform.model_copy(update={"regions": regions}))
    spec = app_spec(APP).for_platform(platform)
    name = f"{APP}-{region}-blue"
    with pytest.raises(FleetError) as failed:
        fleets.launch(
            spec=spec, region=region, color="blue", image=upstream_ami, digest="ami-v1", version="1.0.0", size=1
        )
    message = str(failed.value)
    assert name in message and region in message and upstream_ami in message, message
    assert "sg-0123456789abcdef0" in message, message  # the cause, as AWS said it
    assert name not in groups(aws_account, region)
    ec2 = aws_account.client("ec2", region)
    templates = ec2.describe_launch_templates()["LaunchTemplates"]
    assert name not in {t["LaunchTemplateName"] for t in templates}
    target_groups = aws_account.client("elbv2", region).describe_target_groups()["TargetGroups"]
    assert f"{APP}-blue" not in {t["TargetGroupName"] for t in target_groups}


def test_the_record_and_lease_live_in_the_artifact_bucket(aws_account: AwsAccount, production: Any) -> None:
    from immutable.production_state import LeaseHeld

    production.acquire(APP, "us-east-1", "run-a")
    with pytest.raises(LeaseHeld, match="run-a is changing sample's traffic in us-east-1"):
        production.acquire(APP, "us-east-1", "run-b")
    assert production.release(APP, "us-east-1", "run-a")
    production.note_flip(
        APP,
        "us-east-1",
        live={"color": "green", "version": "1.1.0", "digest": "ami-2"},
        previous={"color": "blue", "version": "1.0.0", "digest": "ami-1"},
        rollback_window_s=60,
        run_id="run-a",
    )
    stored = aws_account.client("s3").get_object(Bucket=aws_account.bucket, Key="production/us-east-1/sample.json")
    assert b'"previous_release"' in stored["Body"].read()
    assert production.record(APP, "us-east-1")["previous"]["version"] == "1.0.0"


def test_a_metrics_client_opens_one_cloudwatch_client_for_the_whole_trigger_run(
    aws_account: AwsAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    from immutable.aws.hooks.cloudwatch import CloudWatchMetricsHook
    from immutable.platforms import metrics_client_for

    made: list[str] = []
    original = CloudWatchMetricsHook.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(str(kwargs.get("region_name")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(CloudWatchMetricsHook, "__init__", counting)
    dimensions = {"target_group": "targetgroup/sample-canary/1", "load_balancer": "app/web/2"}
    backend = {
        "kind": "cloudwatch",
        "region": BUILD_REGION,
        "connection_id": "aws_default",
        "dimensions": {"canary": dimensions},
    }
    metric = {
        "namespace": "AWS/ApplicationELB",
        "name": "HTTPCode_Target_5XX_Count",
        "stat": "Sum",
        "dimensions": {"TargetGroup": "$target_group", "LoadBalancer": "$load_balancer"},
    }
    check = {"name": "error_rate", "cloudwatch": {"metric": metric, "divide_by": None}}

    async def fetch() -> tuple[Any, list[list[float]]]:
        async with metrics_client_for(backend) as client:
            query = client.query(check, app=APP, region=BUILD_REGION, color="canary", window="5s")
            now = time.time()
            return query, [await client.series(query, now - 60, now, 1.0) for _ in range(3)]

    query, series = asyncio.run(fetch())
    assert made == [BUILD_REGION]  # one client for the run's three fetches
    assert series == [[], [], []]  # nothing was put for this target group
    assert query["metric"]["dimensions"] == {"TargetGroup": "targetgroup/sample-canary/1", "LoadBalancer": "app/web/2"}
    assert query["divide_by"] is None
    with pytest.raises(ValueError, match="metric 'error_rate' has no `cloudwatch` query"):
        metrics_client_for(backend).query(check | {"cloudwatch": None}, color="blue")


@pytest.mark.parametrize(("canary_error_rate", "verdict"), [(0.0, "pass"), (0.3, "fail")])
def test_the_canary_gate_judges_cloudwatch_series(
    aws_account: AwsAccount, production: Any, upstream_ami: str, canary_error_rate: float, verdict: str
) -> None:
    from immutable.app_spec import app_spec
    from immutable.config import load_platform
    from immutable.platforms import platform_for
    from immutable.triggers import CanaryAnalysisTrigger

    spec = app_spec(APP).for_platform(load_platform())
    region = BUILD_REGION
    for color, version in (("canary", "9.9.9"), ("baseline", "1.0.0")):
        production.fleets.launch(
            spec=spec, region=region, color=color, image=upstream_ami, digest=f"ami-{color}", version=version, size=1
        )
    settings = spec.canary.model_copy(update={"interval_s": 12, "lifetime_s": 24, "min_samples": 8})
    trigger = CanaryAnalysisTrigger(
        backend=platform_for(load_platform()).metrics.backend(APP, region),
        metrics=[m.model_dump() for m in settings.metrics],
        analysis=settings.judge_settings(),
        labels={"app": APP, "region": region},
        start_at=time.time() + 2,
        interval_s=settings.interval_s,
        intervals=settings.intervals,
        step_s=settings.step_s,
        rate_window=settings.rate_window,
    )

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    with AlbMetrics(aws_account, {"9.9.9": canary_error_rate, "1.0.0": 0.0}):
        event = asyncio.run(first_event())
    assert event["status"] == verdict, [m for i in event["intervals"] for m in i["metrics"]]
    counted = {m["name"]: m for m in event["intervals"][-1]["metrics"]}
    assert counted["error_rate"]["counted"], counted
