from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from immutable.config import ConfigError, load_platform

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "include" / "aws" / "platform.yaml"


def example() -> dict[str, object]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_example_aws_platform_validates() -> None:
    platform = load_platform(EXAMPLE)
    assert platform.platform == "aws"
    aws = platform.aws_settings
    assert aws.build_region == "eu-west-1"
    assert aws.upstream_ami.ssm_parameter == "/aws/service/debian/release/bookworm/latest/amd64"
    assert aws.upstream_ami.image_id is None
    assert aws.environments.get("staging").subnet_id == "subnet-0123456789abcdef2"
    assert platform.aws_region("ap-south-1").kms_key_id == "alias/immutable-images"
    assert [r.name for r in platform.regions] == ["eu-west-1", "us-east-1", "ap-south-1"]
    assert platform.waves == [["eu-west-1"], ["us-east-1", "ap-south-1"]]


def test_a_local_platform_has_no_aws_settings() -> None:
    platform = load_platform(ROOT / "include" / "platform.yaml")
    with pytest.raises(ConfigError, match="not 'aws'"):
        _ = platform.aws_settings
    with pytest.raises(ConfigError, match="has no 'aws' block"):
        platform.aws_region("eu-west")


def test_aws_platform_requires_the_aws_block(tmp_path: Path) -> None:
    data = example()
    del data["aws"]
    with pytest.raises(ConfigError, match="field 'aws' is required when platform is 'aws'"):
        load_platform(write(tmp_path, data))


def test_each_aws_region_requires_its_aws_block(tmp_path: Path) -> None:
    data = example()
    regions = data["regions"]
    assert isinstance(regions, list)
    del regions[1]["aws"]
    with pytest.raises(ConfigError, match=r"regions\.1 \(us-east-1\): field 'aws'"):
        load_platform(write(tmp_path, data))


def test_build_region_must_be_one_of_the_regions(tmp_path: Path) -> None:
    data = example()
    data["aws"]["build_region"] = "eu-central-1"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"aws.build_region 'eu-central-1' is not one of the regions"):
        load_platform(write(tmp_path, data))


@pytest.mark.parametrize(
    ("upstream", "ok"),
    [
        ({"ssm_parameter": None, "image_id": "ami-0abc"}, True),
        ({"image_id": "ami-0abc"}, True),
        ({"ssm_parameter": "/x/y", "image_id": "ami-0abc"}, False),
        ({"ssm_parameter": None, "image_id": None}, False),
    ],
)
def test_upstream_ami_is_exactly_one_source(tmp_path: Path, upstream: dict[str, object], ok: bool) -> None:
    data = example()
    data["aws"]["upstream_ami"] = upstream  # type: ignore[index]
    if ok:
        assert load_platform(write(tmp_path, data)).aws_settings.upstream_ami.image_id == "ami-0abc"
    else:
        with pytest.raises(ConfigError, match="exactly one of 'ssm_parameter'"):
            load_platform(write(tmp_path, data))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("aws", "smoke_checks"), "ping", "aws.smoke_checks"),
        (("aws", "builder", "subnet_id"), "net-1", "aws.builder.subnet_id"),
        (("aws", "artifact_bucket"), "Bad_Bucket", "aws.artifact_bucket"),
        (("aws", "image_retention", "keep"), 0, "aws.image_retention.keep"),
        (("aws", "environments", "prod"), {"subnet_id": "subnet-1", "security_group_ids": ["sg-1"]}, "prod"),
        # Instances that take SSM commands need a profile: without one the SSM agent never registers.
        (("aws", "builder", "instance_profile"), None, "aws.builder.instance_profile"),
        (("aws", "environments", "staging", "instance_profile"), None, "aws.environments.staging.instance_profile"),
    ],
)
def test_bad_aws_fields_are_named(tmp_path: Path, path: tuple[str, ...], value: object, field: str) -> None:
    data = copy.deepcopy(example())
    node: dict[str, object] = data
    for key in path[:-1]:
        node = node[key]  # type: ignore[assignment]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=f"field '[^']*{field}"):
        load_platform(write(tmp_path, data))


def test_smoke_checks_names_the_allowed_values(tmp_path: Path) -> None:
    data = example()
    data["aws"]["smoke_checks"] = "ping"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"'http' or 'target_health'"):
        load_platform(write(tmp_path, data))


def test_a_region_listener_must_be_an_elbv2_listener_arn(tmp_path: Path) -> None:
    data = example()
    data["regions"][0]["aws"]["listener_arn"] = "arn:aws:s3:::bucket"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"field 'regions\.0\.aws\.listener_arn'"):
        load_platform(write(tmp_path, data))


def test_aws_regions_need_no_local_ports(tmp_path: Path) -> None:
    platform = load_platform(write(tmp_path, example()))
    assert all(r.registry_port == 0 for r in platform.regions)


def test_local_platform_still_requires_its_ports(tmp_path: Path) -> None:
    data = {"platform": "local", "regions": [{"name": "eu-west", "registry_port": 5501, "lb_port": 8101}]}
    with pytest.raises(ConfigError, match=r"regions\.0 \(eu-west\): lb_admin_port required when platform is 'local'"):
        load_platform(write(tmp_path, data))


def test_gate_windows_too_short_for_the_alb_metrics_are_refused_naming_the_field(tmp_path: Path) -> None:
    """One ALB point a minute: a 2-minute canary interval holds 2 points, too few to compare."""
    from immutable.pipelines.production import spec_for
    from immutable.platforms import platform_for

    data = copy.deepcopy(example())
    data["timing_overrides"] = {"canary": {"interval_s": 120, "lifetime_s": 240}}
    platform = platform_for(load_platform(write(tmp_path, data)))
    with pytest.raises(ConfigError, match=r"app 'sample' on the aws platform: canary\.interval_s 120 .*at least 360s"):
        spec_for(platform, "sample")
    data["timing_overrides"] = {"bluegreen": {"post_flip_window_s": 30}}
    platform = platform_for(load_platform(write(tmp_path, data)))
    with pytest.raises(ConfigError, match=r"bluegreen\.post_flip_window_s 30 .*at least 60s"):
        spec_for(platform, "sample")
    data["timing_overrides"] = None
    spec = spec_for(platform_for(load_platform(write(tmp_path, data))), "sample")
    assert spec.canary.interval_s >= 360
