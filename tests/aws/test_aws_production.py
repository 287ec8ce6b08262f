"""Production on the aws platform against the emulator: Auto Scaling fleets per color behind ALB
weighted target groups, flips by listener weights, and the gates reading CloudWatch.

The emulator produces no ALB metrics, so `AlbMetrics` stands in for the load balancer's own
reporting: it puts per-target-group request, 5xx and response-time points for the colors that
exist, with the error rate the test asks of each version (see DESIGN.md's moto facts), as an ALB
does: one point per period, put some seconds after the period ends (ALB_ARRIVAL_S), inside the
bound the gates wait for (`aws.alb_metrics.delay_s`); 60 s and one to three minutes on AWS, scaled
down here to keep the suite short.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from tests.aws.conftest import ALB_ARRIVAL_S, BUILD_REGION, REGIONS, AwsAccount

APP = "sample"
STEP_S = 1.0  # seconds between the rounds that put the points that are due
LOG = logging.getLogger(__name__)


PUT_BATCH = 500


def response_times(requests: int) -> dict[str, list[float]]:
    """A period's response times as an ALB reports them, a distribution (values and their counts):
    half the requests fast, a few slow; the 90th percentile falls on the third value, about 30 ms."""
    fast = 0.015 + random.uniform(0, 0.002)
    shares = (0.5, 0.3, 0.15, 0.05)
    return {
        "Values": [fast, fast + 0.005, fast + 0.015, fast + 0.06],
        "Counts": [float(round(requests * share)) for share in shares],
    }


class AlbMetrics:
    """Puts what an ALB reports for each of the app's target groups (`app`: the sample unless told),
    once a period and late, until stopped."""

    def __init__(self, account: AwsAccount, error_rates: dict[str, float], app: str = APP) -> None:
        self.account = account
        self.app = app
        self.error_rates = error_rates  # "version" or "version@region" -> share of 5xx
        alb = yaml.safe_load(account.platform_file.read_text())["aws"]["alb_metrics"]
        self.period_s = int(alb["period_s"])
        self.bound_s = float(alb["delay_s"])  # what the gates wait for: a point put later breaks the model
        self.last_put: dict[str, int] = {}  # target group ARN -> start of the next period to put
        self.stop = threading.Event()
        # A thread per region: one slow round (the emulator busy) must not make another region late.
        self.threads = [threading.Thread(target=self._run, args=(region,), daemon=True) for region in REGIONS]

    def _run(self, region: str) -> None:
        # Clients made once: making one costs tens of milliseconds of CPU, which a round a second
        # per region would take from the code under test.
        scaling = self.account.client("autoscaling", region)
        cloudwatch = self.account.client("cloudwatch", region)
        while not self.stop.wait(STEP_S):
            # One failed call (the emulator busy, a group deleted under the loop) must not end the
            # thread: every later gate would find no data. The next round puts what was missed.
            try:
                self._put(region, scaling, cloudwatch)
            except Exception as exc:
                LOG.warning("ALB points for %s not put this round: %r", region, exc)

    def _put(self, region: str, scaling: Any, cloudwatch: Any) -> None:
        """One point per period per metric for every period that ended ALB_ARRIVAL_S ago or earlier
        and was not put yet: an ALB reports every period, late, however slowly this loop goes round."""
        period = self.period_s
        due = int((time.time() - ALB_ARRIVAL_S) // period) * period  # the end of the newest period that may be put
        lb = self.account.regions[region].load_balancer_arn.split(":loadbalancer/", 1)[1]
        for group in scaling.describe_auto_scaling_groups()["AutoScalingGroups"]:
            tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
            if tags.get("immutable:app") != self.app or not group.get("TargetGroupARNs"):
                continue
            target_group = group["TargetGroupARNs"][0]
            dimensions = [
                {"Name": "LoadBalancer", "Value": lb},
                {"Name": "TargetGroup", "Value": target_group.split(":", 5)[-1]},
            ]
            version = tags.get("immutable:version", "")
            error_rate = self.error_rates.get(f"{version}@{region}", self.error_rates.get(version, 0.0))
            # From the group's start: the ALB reports from the period the targets register in.
            created = int(group["CreatedTime"].timestamp()) // period * period
            since = self.last_put.get(target_group, created)
            data = []
            for start in range(since, due - period + 1, period):  # each period that ended by `due`
                requests = period * (50 + random.randint(-5, 5))
                stamp = datetime.fromtimestamp(start, UTC)  # a period's point is stamped at its start
                point = {"Dimensions": dimensions, "Timestamp": stamp}
                data += [
                    point | {"MetricName": "RequestCount", "Value": requests},
                    point | {"MetricName": "HTTPCode_Target_5XX_Count", "Value": round(requests * error_rate)},
                    point | {"MetricName": "TargetResponseTime", **response_times(requests)},
                ]
            for start in range(0, len(data), PUT_BATCH):  # PutMetricData takes at most 1,000 points a call
                cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data[start : start + PUT_BATCH])
            if data:
                late_s = time.time() - (due + self.bound_s)
                if late_s > 0:  # shown with a failed gate: the harness, not the code, missed the bound
                    LOG.warning(
                        "ALB points of %s up to %s put %.1fs after the gates' bound",
                        group["AutoScalingGroupName"],
                        datetime.fromtimestamp(due, UTC),
                        late_s,
                    )
            self.last_put[target_group] = max(since, due)

    def __enter__(self) -> AlbMetrics:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


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


def target_states(account: AwsAccount, region: str, target_group: str) -> set[str]:
    elb = account.client("elbv2", region)
    arn = elb.describe_target_groups(Names=[target_group])["TargetGroups"][0]["TargetGroupArn"]
    return {
        d["TargetHealth"]["State"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    }


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
    # The kept color takes no traffic yet is still health-checked (an ALB checks only the groups a
    # listener forwards to), so a flip back finds it healthy.
    assert target_states(aws_account, region, f"{APP}-blue") == {"healthy"}
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


@pytest.fixture()
def fleets_without_security_group(aws_account: AwsAccount) -> tuple[Any, Any]:
    """The build region's fleets, with its security group gone (a name AWS does not know), and the app."""
    from immutable.app_spec import app_spec
    from immutable.aws.fleets import AwsFleets
    from immutable.config import load_platform

    platform = load_platform()
    broken = platform.aws_region(BUILD_REGION).model_copy(update={"security_group_ids": ["sg-0123456789abcdef0"]})
    regions = [r.model_copy(update={"aws": broken}) if r.name == BUILD_REGION else r for r in platform.regions]
    return AwsFleets(platform.model_copy(update={"regions": regions})), app_spec(APP).for_platform(platform)


def test_a_launch_template_error_names_group_region_and_image_and_leaves_nothing(
    aws_account: AwsAccount, upstream_ami: str, fleets_without_security_group: tuple[Any, Any]
) -> None:
    """The region's security group is gone: the group cannot be created from its launch template."""
    from immutable.aws.fleets import FleetError

    fleets, spec = fleets_without_security_group
    region, name = BUILD_REGION, f"{APP}-{BUILD_REGION}-blue"
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


def test_a_launch_that_cannot_fill_fails_at_its_first_resume_and_leaves_nothing(
    aws_account: AwsAccount, upstream_ami: str, fleets_without_security_group: tuple[Any, Any]
) -> None:
    """Launched without waiting (the task then waits in the triggerer), a group whose instances AWS
    cannot launch (its security group is gone) is judged at the first resume by its scaling
    activities, removed, and the cause named: not at the end of the launch's timeout."""
    from immutable.aws.fleets import FleetError

    fleets, spec = fleets_without_security_group
    region, name = BUILD_REGION, f"{APP}-{BUILD_REGION}-blue"
    started_at = time.time()
    fleets.launch(
        spec=spec, region=region, color="blue", image=upstream_ami, digest="ami-v1", version="1.0.0", size=1, wait=False
    )
    assert name in groups(aws_account, region)  # AWS makes the group; its launches fail afterwards
    with pytest.raises(FleetError) as failed:
        fleets.pending_launch(spec=spec, region=region, color="blue", size=1, started_at=started_at)
    message = str(failed.value)
    assert "cannot launch its instances" in message and "sg-0123456789abcdef0" in message, message
    assert name in message and "Removed what the launch created" in message, message
    assert name not in groups(aws_account, region)
    target_groups = aws_account.client("elbv2", region).describe_target_groups()["TargetGroups"]
    assert f"{APP}-blue" not in {t["TargetGroupName"] for t in target_groups}


def test_a_fleet_is_waited_for_in_the_triggerer_and_a_restarted_triggerer_goes_on(
    aws_account: AwsAccount, production: Any, upstream_ami: str
) -> None:
    """A launch without waiting hands the platform's trigger (the provider's async waiter on target
    health) to the task; a new triggerer process rebuilds it from its serialized form and waits
    until every target is healthy (they are `initial` at first, as on AWS)."""
    from immutable.app_spec import app_spec
    from immutable.aws.triggers import WaiterTrigger
    from immutable.config import load_platform

    spec = app_spec(APP).for_platform(load_platform())
    region = REGIONS[2]
    started_at = time.time()
    production.fleets.launch(
        spec=spec,
        region=region,
        color="green",
        image=upstream_ami,
        digest="ami-v1",
        version="1.0.0",
        size=2,
        wait=False,
    )
    waiter = production.fleets.pending_launch(spec=spec, region=region, color="green", size=2, started_at=started_at)
    assert waiter is not None, "a fleet just launched cannot be healthy yet"
    trigger, timeout_s = waiter
    assert isinstance(trigger, WaiterTrigger) and trigger.parameters == {"size": 2} and timeout_s > 0
    restarted = WaiterTrigger(**trigger.serialize()[1])

    async def first_event() -> dict[str, Any]:
        async for event in restarted.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert event["status"] == "success", event
    assert target_states(aws_account, region, f"{APP}-green") == {"healthy"}
    assert (
        production.fleets.pending_launch(spec=spec, region=region, color="green", size=2, started_at=started_at) is None
    )


@pytest.mark.parametrize("synchronized", [False, True], ids=["one region", "regions in lockstep"])
def test_a_flip_waits_for_the_new_colors_health_between_steps_in_the_triggerer(
    aws_account: AwsAccount, production: Any, upstream_ami: str, monkeypatch: pytest.MonkeyPatch, synchronized: bool
) -> None:
    """A flip in two steps whose new targets are not healthy after the first (just registered: the
    load balancer is still checking them, `initial`): the task defers on the provider's waiter on
    target health, a restarted triggerer waits it out, and the task takes the last step (in every
    region at once, for a synchronized flip)."""
    from airflow.sdk.exceptions import TaskDeferred

    from immutable.aws.triggers import WaiterTrigger
    from immutable.config import load_platform
    from immutable.operators.fleets import FlipAllOperator, FlipOperator
    from immutable.pipelines import production as steps
    from immutable.platforms import platform_for
    from tests.aws.deferrals import RecordingTi, through_every_wait

    real_spec_for = steps.spec_for

    def in_two_steps(platform: Any, app: str) -> Any:
        spec = real_spec_for(platform, app)
        return spec.model_copy(update={"bluegreen": spec.bluegreen.model_copy(update={"weight_steps": [50.0, 100.0]})})

    monkeypatch.setattr(steps, "spec_for", in_two_steps)
    spec = in_two_steps(platform_for(load_platform()), APP)
    regions = list(REGIONS[1:]) if synchronized else [REGIONS[2]]

    def launched(region: str, color: str, version: str, *, wait: bool) -> dict[str, Any]:
        production.fleets.launch(
            spec=spec,
            region=region,
            color=color,
            image=upstream_ami,
            digest=version,
            version=version,
            size=2,
            wait=wait,
        )
        live = production.live(APP, region)
        return {
            "region": region,
            "color": color,
            "version": version,
            "digest": version,
            "previous": live,
            "already_live": False,
        }

    for region in regions:
        steps.flip({"app": APP, "version": "1.0.0"}, launched(region, "green", "1.0.0", wait=True), "test-flip-health")
    plan = {"app": APP, "version": "1.1.0"}
    new = [launched(region, "blue", "1.1.0", wait=False) for region in regions]
    operator = (
        FlipAllOperator(task_id="flip_all", plan=plan, launched=new)
        if synchronized
        else FlipOperator(task_id="flip", plan=plan, launched=new[0])
    )
    ti = RecordingTi()
    context = {"run_id": "test-flip-health", "ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    for region in regions:
        assert listener_weights(aws_account, region) == {f"{APP}-blue": 50, f"{APP}-green": 50}, region
    done, waited = through_every_wait(operator, deferred.value, context=context)
    assert [(type(t), t.serialize()[1]["waiter_name"]) for t in waited] == [(WaiterTrigger, "FleetHealthy")] * len(
        waited
    )
    flips = done if synchronized else [done]
    assert [(f["region"], f["flipped"], f["color"]) for f in flips] == [(r, True, "blue") for r in regions], flips
    for region in regions:
        assert listener_weights(aws_account, region) == {f"{APP}-blue": 100}, region
        assert target_states(aws_account, region, f"{APP}-blue") == {"healthy"}
    if synchronized:
        assert 0 <= ti.pushed["skew_s"] < 5


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


def _after_reading_before_writing(client: Any, action: Any) -> None:
    """Run `action` once: after the client's next read of an object and before its next write (a put
    or a delete), the moment another writer could move in."""
    writes = ("before-call.s3.PutObject", "before-call.s3.DeleteObject")

    def before_write(**_: Any) -> None:
        for event in writes:
            client.meta.events.unregister(event, before_write)
        action()

    def after_read(**_: Any) -> None:
        client.meta.events.unregister("after-call.s3.GetObject", after_read)
        for event in writes:
            client.meta.events.register(event, before_write)

    client.meta.events.register("after-call.s3.GetObject", after_read)


def test_a_stale_lock_is_taken_over_by_one_writer_only(aws_account: AwsAccount, production: Any) -> None:
    """Two writers find the same stale lock; the other one replaces it first. This one must not
    remove or overwrite the other's fresh lock: it waits until that one is released."""
    s3, bucket = aws_account.client("s3"), aws_account.bucket
    lock = "production/ap-south-1/sample.json.lock"
    s3.put_object(Bucket=bucket, Key=lock, Body=str(time.time() - 3600).encode())  # a crashed writer's
    other = str(time.time()).encode()
    seen: list[bytes] = []

    def other_takes_it_then_releases() -> None:
        s3.put_object(Bucket=bucket, Key=lock, Body=other)
        threading.Timer(2.0, lambda: seen.append(s3.get_object(Bucket=bucket, Key=lock)["Body"].read())).start()
        threading.Timer(2.5, lambda: s3.delete_object(Bucket=bucket, Key=lock)).start()

    # This writer reads the stale lock, then takes it over: the other writer moves in between.
    _after_reading_before_writing(production._records().conn, other_takes_it_then_releases)
    production.request_stop(APP, "ap-south-1", by="a person", reason="test", at=time.time())
    assert seen == [other], "the other writer's fresh lock was removed or overwritten"
    assert production.record(APP, "ap-south-1")["stop_requested"]["by"] == "a person"
    assert s3.list_objects_v2(Bucket=bucket, Prefix=lock)["KeyCount"] == 0, "this writer's lock was not released"


def test_a_writer_whose_lock_was_taken_over_writes_nothing(aws_account: AwsAccount, production: Any) -> None:
    """A writer paused past the stale limit wakes up after another took its lock and wrote the
    record: its own write is refused and the other's lock stays."""
    from immutable.aws.production import RecordLocked

    s3, bucket = aws_account.client("s3"), aws_account.bucket
    key = "production/ap-south-1/sample.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"note": "before"}')
    other_lock = str(time.time()).encode()
    with (
        pytest.raises(RecordLocked, match="changed by another writer"),
        production._locked(APP, "ap-south-1") as record,
    ):
        record["note"] = "from the paused writer"
        s3.put_object(Bucket=bucket, Key=key + ".lock", Body=other_lock)  # the takeover
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"note": "from the other writer"}')
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"note": "from the other writer"}'
    assert s3.get_object(Bucket=bucket, Key=key + ".lock")["Body"].read() == other_lock
    s3.delete_object(Bucket=bucket, Key=key + ".lock")
    s3.delete_object(Bucket=bucket, Key=key)


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


def test_an_error_rate_is_read_in_one_call_from_the_periods_that_ended(aws_account: AwsAccount) -> None:
    """The running period's point is left out even when it is there (the gate waited out the delay
    only for the periods that ended), whatever the window's edges, and a period without a 5xx point
    is a rate of zero."""
    from immutable.aws.metrics import CloudWatchMetricsClient

    dimensions = {"target_group": "targetgroup/sample-periods/1", "load_balancer": "app/web/2"}
    backend = {
        "kind": "cloudwatch",
        "region": BUILD_REGION,
        "connection_id": "aws_default",
        "dimensions": {"blue": dimensions},
    }
    named = {"TargetGroup": "$target_group", "LoadBalancer": "$load_balancer"}
    check = {
        "name": "error_rate",
        "cloudwatch": {
            "metric": {
                "namespace": "AWS/ApplicationELB",
                "name": "HTTPCode_Target_5XX_Count",
                "stat": "Sum",
                "dimensions": named,
            },
            "divide_by": {
                "namespace": "AWS/ApplicationELB",
                "name": "RequestCount",
                "stat": "Sum",
                "dimensions": named,
            },
        },
    }
    period = 5
    running = int(time.time() // period) * period + period  # a period that starts after the points are put
    # In the order the query names them (sorted): the emulator matches dimensions in order, AWS does not.
    put = [{"Name": "LoadBalancer", "Value": "app/web/2"}, {"Name": "TargetGroup", "Value": dimensions["target_group"]}]

    def point(name: str, start: int, value: float) -> dict[str, Any]:
        return {"MetricName": name, "Dimensions": put, "Timestamp": datetime.fromtimestamp(start, UTC), "Value": value}

    aws_account.client("cloudwatch", BUILD_REGION).put_metric_data(
        Namespace="AWS/ApplicationELB",
        MetricData=[
            point("RequestCount", running - 2 * period, 100),
            point("HTTPCode_Target_5XX_Count", running - 2 * period, 100),
            point("RequestCount", running - period, 100),  # no 5xx point: none failed
            point("RequestCount", running, 100),
            point("HTTPCode_Target_5XX_Count", running, 100),
        ],
    )
    time.sleep(max(0.0, running + 1 - time.time()))  # inside the running period, its point already there

    reads: list[str] = []

    async def fetch() -> tuple[list[float], list[float]]:
        async with CloudWatchMetricsClient(backend) as client:
            assert client._hook is not None
            client._hook.conn.meta.events.register(
                "before-call.cloudwatch.GetMetricData", lambda **_: reads.append("GetMetricData")
            )
            query = client.query(check, app=APP, region=BUILD_REGION, color="blue", window="5s")
            now = time.time()
            return (
                # Edges off the periods' (as a gate's moments fall): what counts is what lies wholly inside.
                await client.series(query, running - 2.5 * period, now, period),
                await client.series(query, running - 2.5 * period, running + 1.5 * period, period),
            )

    while_running, once_ended = asyncio.run(fetch())
    assert reads == ["GetMetricData"] * 2  # errors and requests in one read per series
    assert while_running == [1.0, 0.0]
    assert once_ended == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(("canary_error_rate", "verdict"), [(0.0, "pass"), (0.3, "fail")])
def test_the_canary_gate_judges_cloudwatch_series(
    aws_account: AwsAccount, production: Any, upstream_ami: str, canary_error_rate: float, verdict: str
) -> None:
    from immutable.pipelines.production import canary_timing_for, spec_for
    from immutable.platforms import platform_for
    from immutable.triggers import CanaryAnalysisTrigger

    platform = platform_for()
    spec = spec_for(platform, APP)  # the test platform's windows: three ALB periods an interval
    region = BUILD_REGION
    for color, version in (("canary", "9.9.9"), ("baseline", "1.0.0")):
        production.fleets.launch(
            spec=spec, region=region, color=color, image=upstream_ami, digest=f"ami-{color}", version=version, size=1
        )
    settings, timing = spec.canary, canary_timing_for(spec, platform)
    trigger = CanaryAnalysisTrigger(
        backend=platform.metrics.backend(APP, region),
        metrics=[m.model_dump() for m in settings.metrics],
        analysis=settings.judge_settings() | {"min_samples": timing.min_samples},
        labels={"app": APP, "region": region},
        start_at=time.time() + 2,
        interval_s=settings.interval_s,
        intervals=settings.intervals,
        step_s=timing.step_s,
        data_delay_s=timing.delay_s,
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
