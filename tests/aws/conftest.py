"""The aws platform against a real moto server (the only stand-in: no real account exists here).

Which fixture gives what:
- `moto_server` (session): `moto_server` listening on 127.0.0.1 (port 5890, or $MOTO_PORT; a free
  port when that one is taken), in its own process group, stopped with its group at the end.
  Returns the endpoint URL.
- `aws_endpoint` (session): the realism layer (tests/aws/realism.py) in front of that server, in
  its own process: answers as AWS does where moto is more forgiving (target groups outside a
  listener `unused`, a new AMI not found for a moment, snapshots in use after deregistration,
  CopyImage's client token and tags). Every client of the tests and of the code under test uses it.
- `api_calls` (session, autouse for tests/aws): every AWS call the code under test makes, as
  `service:Operation` (IAM action names), recorded with botocore's `before-call` event on every
  boto3 and aiobotocore session created from then on (the hooks' and the triggers' sessions
  included). `tests/aws/test_zz_iam_policy.py` (collected last) checks them against
  include/aws/iam-policy.json. Test setup and assertions use `boto(service, region)`, whose calls
  are not recorded.
- `aws_account` (session): what an account already has in eu-west-1 (build region), us-east-1 and
  ap-south-1: a VPC, two subnets and a security group per region, an ALB with an HTTP listener
  (fixed-response default action), the builder/dev/staging subnets, the artifact bucket, an upstream
  AMI published through an SSM parameter; and an aws platform YAML (short timings) naming all of it.
  Returns an `AwsAccount`.
- `aws_env` (module, autouse for tests/aws): points the tests in tests/aws at that account:
  AWS_* test credentials, AIRFLOW_CONN_AWS_DEFAULT (endpoint_url in its extra) and
  IMMUTABLE_PLATFORM_FILE; all restored after the module, so other folders keep the local platform.
- `airflow_db` (tests/conftest.py) for dag.test(); `tests.integration.helpers.run_dag` runs a DAG.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TEST_STATE, require

BUILD_REGION = "eu-west-1"
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
ARTIFACT_BUCKET = "immutable-test-artifacts"
UPSTREAM_PARAMETER = "/immutable/test/debian/bookworm/amd64"  # moto refuses the /aws/ prefix for our own
MOTO_START_TIMEOUT_S = 30.0  # seconds
ALB_PERIOD_S = 5  # seconds: one ALB point per period (60 on AWS)
ALB_DELAY_S = 8.0  # seconds: the platform's bound on how late a period's point arrives (180 on AWS)
# When the test's ALB puts a period's point (AWS: one to three minutes): inside the bound, as on AWS,
# with room for the putting thread's own lag on a loaded machine.
ALB_ARRIVAL_S = 3.0
# Instance profiles the account has for instances that take SSM commands (the agent needs one).
BUILDER_PROFILE = "immutable-builder"
STAGING_PROFILE = "immutable-staging"
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": BUILD_REGION,
}
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
# IAM action names that differ from the API operation (service prefix or action).
IAM_SERVICE_PREFIX = {"monitoring": "cloudwatch"}
IAM_ACTION = {
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "ssm:GetParameters": "ssm:GetParameters",
}


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    with closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    moto = Path(sys.executable).parent / "moto_server"
    require("moto server", moto.exists(), f"{moto} is missing: pip install 'moto[server]'")
    port = int(os.environ.get("MOTO_PORT", "5890"))
    if _port_taken(port):
        port = _free_port()  # another session's emulator: never share its state
    yield from _serve("moto", [str(moto), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}")


@pytest.fixture(scope="session")
def aws_endpoint(moto_server: str) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "tests.aws.realism", "--upstream", moto_server, "--port", str(port)]
    yield from _serve("aws-realism", command, f"http://127.0.0.1:{port}")


def _serve(name: str, command: list[str], endpoint: str) -> Iterator[str]:
    """Start a server in its own process group, yield its endpoint once it answers, then stop the group."""
    log = (TEST_STATE / name).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],  # the repo, so `-m tests.aws.realism` imports
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                require(name, False, f"it did not answer on {endpoint} (log: {log})")
            time.sleep(0.2)
        yield endpoint
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)


def _answers(endpoint: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{endpoint}/moto-api/", timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass
class ApiCallRecorder:
    """`service:Operation` (IAM names) of every call made through recorded boto3 sessions."""

    calls: dict[str, int] = field(default_factory=dict)

    def handler(self, model: Any = None, **_: Any) -> None:
        if model is None:
            return
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        name = f"{IAM_SERVICE_PREFIX.get(service, service)}:{model.name}"
        name = IAM_ACTION.get(name, name)
        self.calls[name] = self.calls.get(name, 0) + 1


RECORDER = ApiCallRecorder()


@pytest.fixture(scope="session", autouse=True)
def api_calls() -> Iterator[ApiCallRecorder]:
    import aiobotocore.session
    import boto3.session

    recorder = RECORDER
    original = boto3.session.Session.__init__
    original_async = aiobotocore.session.AioSession.__init__

    def init(self: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.events.register("before-call", recorder.handler)

    def init_async(self: aiobotocore.session.AioSession, *args: Any, **kwargs: Any) -> None:
        # the triggers' calls: the provider's async waiters run on aiobotocore sessions
        original_async(self, *args, **kwargs)
        self.register("before-call", recorder.handler)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boto3.session.Session, "__init__", init)
        patch.setattr(aiobotocore.session.AioSession, "__init__", init_async)
        yield recorder
    out = TEST_STATE / "aws-api-calls.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recorder.calls, indent=2, sort_keys=True))


def boto(service: str, region: str = BUILD_REGION, endpoint: str | None = None) -> Any:
    """A boto3 client for test setup and assertions: pointed at the emulator, its calls not recorded."""
    import boto3.session

    session = boto3.session.Session(region_name=region, **_credentials())
    session.events.unregister("before-call", RECORDER.handler)
    return session.client(service, endpoint_url=endpoint or os.environ["IMMUTABLE_TEST_AWS_ENDPOINT"])


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}


@dataclass(frozen=True)
class AwsRegionIds:
    vpc_id: str
    subnet_ids: list[str]
    security_group_id: str
    load_balancer_arn: str
    listener_arn: str


@dataclass(frozen=True)
class AwsAccount:
    endpoint: str
    platform_file: Path
    regions: dict[str, AwsRegionIds]
    builder_subnet: str
    dev_subnet: str
    staging_subnet: str
    bucket: str
    upstream_image_id: str
    upstream_parameter: str

    def client(self, service: str, region: str = BUILD_REGION) -> Any:
        return boto(service, region, self.endpoint)


def _region_network(endpoint: str, region: str, index: int) -> AwsRegionIds:
    ec2 = boto("ec2", region, endpoint)
    vpc_id = ec2.create_vpc(CidrBlock=f"10.{index}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.{index}.{n}.0/24", AvailabilityZone=f"{region}{zone}")["Subnet"][
            "SubnetId"
        ]
        for n, zone in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="immutable-web", Description="web fleets", VpcId=vpc_id)["GroupId"]
    elb = boto("elbv2", region, endpoint)
    lb_arn = elb.create_load_balancer(Name="immutable-web", Subnets=subnets, SecurityGroups=[sg], Type="application")[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    listener_arn = elb.create_listener(
        LoadBalancerArn=lb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain", "MessageBody": "no app"},
            }
        ],
    )["Listeners"][0]["ListenerArn"]
    return AwsRegionIds(vpc_id, subnets, sg, lb_arn, listener_arn)


def _upstream_image(account_ec2: Any, ssm: Any, subnet: str) -> str:
    """An upstream AMI of our own (a moto default AMI, re-imaged), published through an SSM parameter."""
    seed = account_ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = account_ec2.run_instances(
        ImageId=seed, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet
    )["Instances"][0]["InstanceId"]
    image_id = account_ec2.create_image(InstanceId=instance, Name="debian-12-amd64-20260101-0000")["ImageId"]
    account_ec2.terminate_instances(InstanceIds=[instance])
    ssm.put_parameter(Name=UPSTREAM_PARAMETER, Value=image_id, Type="String", DataType="aws:ec2:image")
    return str(image_id)


def platform_document(
    regions: dict[str, AwsRegionIds], builder: str, dev: str, staging: str, sg: str, **aws: Any
) -> dict[str, Any]:
    return {
        "platform": "aws",
        "aws": {
            "connection_id": "aws_default",
            "build_region": BUILD_REGION,
            "instance_type": "t3.micro",
            "upstream_ami": {"ssm_parameter": UPSTREAM_PARAMETER, "image_id": None},
            "builder": {"subnet_id": builder, "security_group_ids": [sg], "instance_profile": BUILDER_PROFILE},
            "environments": {
                "dev": {"subnet_id": dev, "security_group_ids": [sg]},
                "staging": {"subnet_id": staging, "security_group_ids": [sg], "instance_profile": STAGING_PROFILE},
            },
            "artifact_bucket": ARTIFACT_BUCKET,
            "smoke_checks": "target_health",  # moto's instances serve no HTTP
            "image_retention": {"keep": 2, "min_age_days": 0},
            # An ALB's metrics come once a minute, minutes late; scaled down here, the same shape:
            # the gates must step by the period and wait out the delay (the test's AlbMetrics obeys it).
            "alb_metrics": {"period_s": ALB_PERIOD_S, "delay_s": ALB_DELAY_S},
            "wait_poll_s": 2,  # the emulator's waits last seconds (tests/aws/realism.py)
        }
        | aws,
        "regions": [
            {
                "name": name,
                "aws": {
                    "vpc_id": ids.vpc_id,
                    "subnet_ids": ids.subnet_ids,
                    "security_group_ids": [ids.security_group_id],
                    "listener_arn": ids.listener_arn,
                    "kms_key_id": None,
                },
            }
            for name, ids in regions.items()
        ],
        "rollout": {"waves": [[REGIONS[0]], list(REGIONS[1:])]},
        "copy": {"attempts": 2, "backoff_s": 0.5},
        "signing": {"key_file": str(TEST_STATE / "keys" / "release-signing.pem")},
        # Shorter than tests/platform.yaml: the emulator answers at once and the test's ALB points
        # come every ALB_PERIOD_S: an interval of seven periods holds six whole points per side, one
        # more than a comparison at the spec's confidence needs (metric_timing.samples_for_confidence),
        # so one point put late on a loaded machine does not decide a test.
        "timing_overrides": {
            "canary": {
                "warmup_s": 2,
                "interval_s": 7 * ALB_PERIOD_S,
                "lifetime_s": 7 * ALB_PERIOD_S,
                "step_s": 1,  # less than a period: the gate steps by the period
                "rate_window": "5s",
                "min_samples": 5,  # what the confidence needs; the interval holds six
            },
            "bluegreen": {
                "size": 2,
                "step_pause_s": 1,
                "post_flip_warmup_s": 5,
                "post_flip_window_s": 2 * ALB_PERIOD_S,
                "post_flip_step_s": 1,
                "rollback_window_s": 900,
            },
        },
    }


@pytest.fixture(scope="session")
def aws_account(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> AwsAccount:
    from immutable.signing import ensure_key

    endpoint = aws_endpoint
    # The releases sign their AMIs with the test platform's key; on a fresh checkout nothing made it yet.
    ensure_key(TEST_STATE / "keys" / "release-signing.pem")
    regions = {name: _region_network(endpoint, name, index) for index, name in enumerate(REGIONS, start=1)}
    ec2 = boto("ec2", BUILD_REGION, endpoint)
    vpc = regions[BUILD_REGION].vpc_id
    extra = {
        role: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{n}.0/24", AvailabilityZone=f"{BUILD_REGION}a")["Subnet"][
            "SubnetId"
        ]
        for role, n in (("builder", 10), ("dev", 11), ("staging", 12))
    }
    boto("s3", BUILD_REGION, endpoint).create_bucket(
        Bucket=ARTIFACT_BUCKET, CreateBucketConfiguration={"LocationConstraint": BUILD_REGION}
    )
    iam = boto("iam", BUILD_REGION, endpoint)
    for profile in (BUILDER_PROFILE, STAGING_PROFILE):
        iam.create_role(RoleName=profile, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
        iam.create_instance_profile(InstanceProfileName=profile)
        iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    upstream = _upstream_image(ec2, boto("ssm", BUILD_REGION, endpoint), extra["builder"])
    document = platform_document(
        regions, extra["builder"], extra["dev"], extra["staging"], regions[BUILD_REGION].security_group_id
    )
    platform_file = tmp_path_factory.mktemp("aws") / "platform.yaml"
    platform_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return AwsAccount(
        endpoint=endpoint,
        platform_file=platform_file,
        regions=regions,
        builder_subnet=extra["builder"],
        dev_subnet=extra["dev"],
        staging_subnet=extra["staging"],
        bucket=ARTIFACT_BUCKET,
        upstream_image_id=upstream,
        upstream_parameter=UPSTREAM_PARAMETER,
    )


def connection_uri(endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": BUILD_REGION},
        }
    )


@pytest.fixture(scope="module", autouse=True)
def aws_env(request: pytest.FixtureRequest) -> Iterator[AwsAccount | None]:
    """The aws platform for this module's tests; the env is put back after the module."""
    if request.module.__name__.endswith("test_zz_iam_policy") and "aws_account" not in request.fixturenames:
        yield None  # the IAM test reads the recorder only; it needs no emulator
        return
    account: AwsAccount = request.getfixturevalue("aws_account")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TEST_CREDENTIALS.items():
            patch.setenv(key, value)
        patch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_uri(account.endpoint))
        patch.setenv("IMMUTABLE_PLATFORM_FILE", str(account.platform_file))
        patch.setenv("IMMUTABLE_TEST_AWS_ENDPOINT", account.endpoint)
        yield account


@pytest.fixture
def aws_platform_file(aws_account: AwsAccount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a variant of the account's platform (e.g. `kms_key_id` in a region) and use it for this test."""

    def write(mutate: Callable[[dict[str, Any]], None]) -> Path:
        document = yaml.safe_load(aws_account.platform_file.read_text())
        mutate(document)
        path = tmp_path / "platform.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        monkeypatch.setenv("IMMUTABLE_PLATFORM_FILE", str(path))
        return path

    return write


def run_dag_until(file_name: str, dag_id: str, conf: dict[str, Any], last: list[str]) -> tuple[Any, dict[str, str]]:
    """dag.test() of the tasks `last` and everything upstream of them (the images half of a release)."""
    from tests.integration.helpers import load_dag

    full = load_dag(file_name, dag_id)
    dag = full.partial_subset(task_ids=last, include_upstream=True)
    for task in dag.tasks:  # partial_subset loses a mapped task's literal expand input; put it back
        original = full.task_dict[task.task_id]
        if hasattr(original, "expand_input"):
            task.expand_input = original.expand_input
    run = dag.test(run_conf=conf)
    states = {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
        for ti in run.get_task_instances()
    }
    return run, states


@pytest.fixture(scope="session")
def aws_base_candidate(aws_account: AwsAccount, airflow_db: None) -> str:
    """The base AMI on the `candidate` channel, built once by the base_image DAG if no test did already."""
    from tests.integration.helpers import run_dag

    def candidate() -> str | None:
        images = aws_account.client("ec2").describe_images(
            Owners=["self"], Filters=[{"Name": "tag:immutable:channel:candidate", "Values": ["true"]}]
        )["Images"]
        return str(images[0]["ImageId"]) if images else None

    if candidate() is None:
        with pytest.MonkeyPatch.context() as patch:  # the session fixture may come before the module's env
            for key, value in TEST_CREDENTIALS.items():
                patch.setenv(key, value)
            patch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_uri(aws_account.endpoint))
            patch.setenv("IMMUTABLE_PLATFORM_FILE", str(aws_account.platform_file))
            run, states = run_dag("base_image.py", "base_image", {"reason": "manual", "force": True})
        assert str(run.state) == "success", states
    found = candidate()
    assert found is not None
    return found
