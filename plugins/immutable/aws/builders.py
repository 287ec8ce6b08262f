"""Instances of ours in the build region: builders, test and probe instances, and the AMI they become.

They are tagged with their role and run, and always terminated, whatever happens; a retry first
terminates what an earlier try of the same run left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from immutable.aws.amis import TAG_VALUE_MAX, AwsImageError, ami_tags, created_at, ec2, s3, ssm
from immutable.aws.tags import TAG_REPOSITORY, TAG_ROLE, TAG_RUN
from immutable.paths import INCLUDE_DIR

if TYPE_CHECKING:
    from immutable.aws.hooks.ssm import CommandResult
    from immutable.config import PlatformConfig

log = logging.getLogger(__name__)

BUILD_SCRIPT_TIMEOUT_S = 3600  # seconds: a base build (dist-upgrade) or a bake on the builder
CHECK_TIMEOUT_S = 600  # seconds: checks and probes on a test instance
# AWS sets no limit on CreateImage: the first snapshot of a large or busy volume can take most of an
# hour. An image still pending after this is kept for the task's retry, never deregistered.
IMAGE_CREATE_TIMEOUT_S = 3600.0
SSM_AGENT_USER_DATA = INCLUDE_DIR / "aws" / "ssm-agent-user-data.sh"


def ami_name(repository: str, tag: str) -> str:
    """The AMI's name: the repository and the version (a base) or build tag (an app image). AWS
    wants names unique per account and region, and each build has its own tag."""
    return f"{repository.replace('/', '-')}-{tag}"


def ssm_agent_user_data() -> str:
    """The user data that installs and starts the SSM agent where the AMI has none (Debian's own)."""
    return SSM_AGENT_USER_DATA.read_text()


@contextmanager
def instance(
    platform: PlatformConfig,
    *,
    image_id: str,
    role: str,
    run_id: str,
    subnet_id: str,
    security_group_ids: list[str],
    instance_profile: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Generator[str, None, None]:
    """A running instance of ours in the build region; terminated on the way out, whatever happened
    (a builder whose AMI is still being made is run in stages instead: `start_script_on_builder`)."""
    instance_id = _launch(
        platform,
        image_id=image_id,
        role=role,
        run_id=run_id,
        subnet_id=subnet_id,
        security_group_ids=security_group_ids,
        instance_profile=instance_profile,
        extra_tags=extra_tags,
    )
    failed = True
    try:
        ec2(platform).wait_instances(instance_ids=[instance_id], state="running")
        yield instance_id
        failed = False
    finally:
        _terminate(platform, role=role, instance_id=instance_id, failed=failed)


def _launch(
    platform: PlatformConfig,
    *,
    image_id: str,
    role: str,
    run_id: str,
    subnet_id: str,
    security_group_ids: list[str],
    instance_profile: str | None,
    extra_tags: dict[str, str] | None,
) -> str:
    """One instance of ours, tagged with its role and run, with the SSM agent's user data."""
    settings = platform.aws_settings
    tags = {TAG_ROLE: role, TAG_RUN: run_id[:TAG_VALUE_MAX], "Name": f"immutable-{role}"} | (extra_tags or {})
    try:
        return ec2(platform).run_instance(
            image_id=image_id,
            instance_type=settings.instance_type,
            subnet_id=subnet_id,
            security_group_ids=security_group_ids,
            instance_profile=instance_profile,
            user_data=ssm_agent_user_data(),
            tags=tags,
        )
    except Exception as exc:
        raise AwsImageError(
            f"could not launch a {role} instance from {image_id} in {settings.build_region} (subnet {subnet_id}): {exc}"
        ) from exc


def _terminate(platform: PlatformConfig, *, role: str, instance_id: str, failed: bool) -> None:
    region = platform.aws_settings.build_region
    try:
        ec2(platform).terminate_instances(instance_ids=[instance_id])
        log.info("terminated %s instance %s in %s", role, instance_id, region)
    except Exception as exc:
        log.exception("could not terminate %s instance %s in %s", role, instance_id, region)
        if not failed:  # never hide the error that brought us here
            raise AwsImageError(
                f"could not terminate the {role} instance {instance_id} in {region}: {exc}; "
                "terminate it by hand (it is tagged immutable:role and immutable:run)"
            ) from exc


def terminate_leftovers(platform: PlatformConfig, *, role: str, run_id: str) -> list[str]:
    """Instances of this role and run still alive (a worker that died mid-task): terminate them."""
    hook = ec2(platform)
    found = [i["InstanceId"] for i in hook.find_instances(tags={TAG_ROLE: role, TAG_RUN: run_id[:TAG_VALUE_MAX]})]
    hook.terminate_instances(instance_ids=found)
    return found


INVENTORY_MARK = "=== immutable: what this builder holds ==="
PACKAGE_LIST_MARK = "=== immutable: the base image package list ==="


def with_inventory(script: list[str], *, package_list: str | None = None) -> list[str]:
    """`script`, then what the builder holds (the SBOM's listing and, for a base, its package list)
    printed after it by the same SSM command: read just before the builder is imaged, with no command
    (and no wait) of its own. A script that fails prints no inventory (`set -e`)."""
    import shlex

    from immutable.images.inventory import LIST_PACKAGES

    shown = [f"echo {shlex.quote(INVENTORY_MARK)}", LIST_PACKAGES]
    if package_list:
        shown += [f"echo {shlex.quote(PACKAGE_LIST_MARK)}", f"cat {shlex.quote(package_list)}"]
    return [*script, *shown]


def inventory_of(stdout: str) -> tuple[str, str, str]:
    """(the script's own output, the SBOM's listing, the package list) from a `with_inventory` run;
    an empty listing where the script printed none (an emulator's builder runs nothing)."""
    output, _, inventory = stdout.partition(INVENTORY_MARK + "\n")
    listing, _, package_list = inventory.partition(PACKAGE_LIST_MARK + "\n")
    return output, listing, package_list


def run_script(
    platform: PlatformConfig, instance_id: str, script: list[str], comment: str, timeout_s: int
) -> CommandResult:
    """Run the script over SSM; its output whole, however long (a dist-upgrade's failure is at the end,
    past what the invocation keeps: the rest is read from the artifact bucket, where the instance put it)."""
    bucket = platform.aws_settings.artifact_bucket
    result = ssm(platform).run_shell(
        instance_id=instance_id, commands=script, comment=comment, timeout_s=timeout_s, output_bucket=bucket
    )
    return _read_whole(platform, result)


def _read_whole(platform: PlatformConfig, result: CommandResult) -> CommandResult:
    return replace(
        result,
        stdout=_whole(platform, result.stdout, result.stdout_url),
        stderr=_whole(platform, result.stderr, result.stderr_url),
    )


def _whole(platform: PlatformConfig, content: str, url: str) -> str:
    from immutable.aws.hooks.ssm import CONTENT_LIMIT

    if len(content) < CONTENT_LIMIT or not url:
        return content
    bucket, key = s3_location(url)
    try:
        return s3(platform).get_artifact(bucket=bucket, key=key).decode(errors="replace")
    except Exception as exc:  # the cut output still says most; say why the rest is missing
        log.warning("could not read the complete output at %s: %s", url, exc)
        return content + f"\n[output cut at {CONTENT_LIMIT} characters; the rest at {url} could not be read: {exc}]"


def s3_location(url: str) -> tuple[str, str]:
    """Bucket and key of an S3 object URL, path style (s3.<region>.amazonaws.com/<bucket>/<key>) or
    virtual-hosted (<bucket>.s3.<region>.amazonaws.com/<key>)."""
    parsed = urlparse(url)
    path = unquote(parsed.path).lstrip("/")
    host = parsed.hostname or ""
    if host.startswith("s3.") or host.startswith("s3-") or host == "s3.amazonaws.com":
        bucket, _, key = path.partition("/")
        return bucket, key
    return host.split(".s3", 1)[0], path


def start_image(
    platform: PlatformConfig, *, instance_id: str, name: str, description: str, tags: dict[str, str]
) -> str:
    """Stop the instance and create the AMI (tagged as it is created); returns its id at once."""
    hook = ec2(platform)
    hook.stop_instance(instance_id=instance_id)
    return hook.create_image(instance_id=instance_id, name=name, description=description, tags=ami_tags(tags))


def settle_image(platform: PlatformConfig, *, image_id: str, name: str) -> str:
    """Wait for an AMI this run is making, then judge it (`judge_image`)."""
    image = ec2(platform).wait_image_settled(image_id=image_id, timeout_s=IMAGE_CREATE_TIMEOUT_S)
    return judge_image(platform, image, image_id=image_id, name=name)


def finish_image(platform: PlatformConfig, *, image_id: str, name: str, role: str, run_id: str) -> str:
    """After a wait in the triggerer: terminate the builder the AMI was made from (kept while it was
    made), then judge the AMI as it is now (`judge_image`)."""
    ended = terminate_leftovers(platform, role=role, run_id=run_id)
    if ended:
        log.info("terminated %s instance(s) %s now that %s is settled", role, ended, image_id)
    return judge_image(platform, ec2(platform).get_image(image_id=image_id), image_id=image_id, name=name)


def judge_image(platform: PlatformConfig, image: dict[str, Any] | None, *, image_id: str, name: str) -> str:
    """An AMI this run is making, once waited for: its id if available. One that failed is
    deregistered (a retry builds again); one still pending is kept, since AWS may yet finish it: the
    task's retry finds it by its run tag (`own_image`) and waits for it instead of building another."""
    region = platform.aws_settings.build_region
    hook = ec2(platform)
    state = str((image or {}).get("State", "missing"))
    if state == "available":
        return image_id
    if state == "pending":
        raise AwsImageError(
            f"AMI {image_id} ({name}) is still pending in {region} after {IMAGE_CREATE_TIMEOUT_S:g}s; it is "
            "kept, since AWS may yet finish it: a retry of this task waits for it instead of building again"
        )
    reason = (image or {}).get("StateReason", {}).get("Message") or "no reason given"
    if image is not None:
        hook.deregister_image(image_id=image_id)
    raise AwsImageError(
        f"AMI {image_id} ({name}) is {state} in {region} ({reason}); it was deregistered, a retry builds it again"
    )


def earlier_try(platform: PlatformConfig, image: dict[str, Any], *, wait: bool) -> dict[str, Any] | None:
    """What to do with the AMI an earlier try of this run made: {"image_id", "pending", "started_at"}
    (still pending and `wait=False`: the task waits for it in the triggerer, counting from its
    creation; else reused once available), or None when it failed (deregistered): build again."""
    if not wait and image.get("State") == "pending":
        began = created_at(image)
        log.info("%s, made by an earlier try of this run, is still pending; waiting for it", image["ImageId"])
        return {"image_id": str(image["ImageId"]), "pending": True, "started_at": began.timestamp() if began else None}
    reused = own_image(platform, image)
    if reused is None:
        return None
    log.info("already made by this run as %s; reusing it", reused)
    return {"image_id": reused, "pending": False, "started_at": None}


def own_image(platform: PlatformConfig, image: dict[str, Any]) -> str | None:
    """An AMI an earlier try of this run made: its id once available (waited for while pending), or
    None when it failed, after deregistering it, so the caller builds again."""
    image_id, name = str(image["ImageId"]), str(image.get("Name", image["ImageId"]))
    state = str(image.get("State", ""))
    if state == "available":  # already known: no need to ask EC2 again
        return image_id
    if state == "pending":
        return settle_image(platform, image_id=image_id, name=name)
    log.warning("%s (%s) from an earlier try is %s; deregistering it and building again", image_id, name, state)
    ec2(platform).deregister_image(image_id=image_id)
    return None


@contextmanager
def builder_instance(
    platform: PlatformConfig, *, image_id: str, role: str, run_id: str, repository: str
) -> Generator[str, None, None]:
    """An instance in the builder subnet (base build or bake), after terminating what an earlier try
    of this run left; terminated on the way out."""
    terminate_leftovers(platform, role=role, run_id=run_id)
    with instance(
        platform, **_builder_placement(platform, image_id=image_id, role=role, run_id=run_id, repository=repository)
    ) as instance_id:
        yield instance_id


def _builder_placement(
    platform: PlatformConfig, *, image_id: str, role: str, run_id: str, repository: str
) -> dict[str, Any]:
    """A builder's launch arguments: the image, and where it runs (subnet, security groups, profile, tags)."""
    builder = platform.aws_settings.builder
    return {
        "image_id": image_id,
        "role": role,
        "run_id": run_id,
        "subnet_id": builder.subnet_id,
        "security_group_ids": list(builder.security_group_ids),
        "instance_profile": builder.instance_profile,
        "extra_tags": {TAG_REPOSITORY: repository},
    }


# --- a script run in stages over SSM, each wait in the triggerer ----------------------------------------
#
# The task waits in the triggerer for the instance's SSM agent to come online ("agent"), sends the
# script and waits for it to end ("script"), and gets its result ("done"). The record is plain JSON
# (it travels with the deferred task); `advance_script` moves it on once a wait is over, or returns
# it unchanged when the wait must go on. A builder is terminated at any failure; an environment's
# instance is left to its environment's teardown.


def start_script_on_builder(
    platform: PlatformConfig,
    *,
    image_id: str,
    role: str,
    run_id: str,
    repository: str,
    script: list[str],
    comment: str,
    timeout_s: int,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Launch a builder (after terminating what an earlier try of this run left) to run `script`;
    `context` is what the caller needs once the script is done. Returns the "agent" stage."""
    terminate_leftovers(platform, role=role, run_id=run_id)
    instance_id = _launch(
        platform, **_builder_placement(platform, image_id=image_id, role=role, run_id=run_id, repository=repository)
    )
    log.info("builder %s launched from %s", instance_id, image_id)
    return start_script(
        platform,
        instance_id=instance_id,
        role=role,
        script=script,
        comment=comment,
        timeout_s=timeout_s,
        context=context,
        terminate_on_failure=True,
    )


def start_script(
    platform: PlatformConfig,
    *,
    instance_id: str,
    role: str,
    script: list[str],
    comment: str,
    timeout_s: int,
    context: dict[str, Any],
    terminate_on_failure: bool,
) -> dict[str, Any]:
    """The "agent" stage of `script` on a running instance of ours (`role` names it in messages)."""
    from immutable.aws.hooks.ssm import AGENT_TIMEOUT_S

    log.info("%s instance %s: waiting for its SSM agent in the triggerer to run %s", role, instance_id, comment)
    return {
        "stage": "agent",
        "instance_id": instance_id,
        "role": role,
        "script": script,
        "comment": comment,
        "timeout_s": timeout_s,
        "deadline": time.time() + AGENT_TIMEOUT_S,
        "context": context,
        "terminate_on_failure": terminate_on_failure,
    }


def script_waiter(platform: PlatformConfig, stage: dict[str, Any]) -> tuple[Any, float]:
    """The trigger a stage waits on (the provider's async waiter with the project's SSM waiters,
    include/aws/waiters/ssm.json) and how long, in seconds, until its deadline."""
    from immutable.aws.triggers import WaiterTrigger

    settings = platform.aws_settings
    instance_id = stage["instance_id"]
    if stage["stage"] == "agent":
        name, args = "AgentOnline", {"Filters": [{"Key": "InstanceIds", "Values": [instance_id]}]}
        what = f"the SSM agent of {stage['role']} instance {instance_id}"
    else:
        name, args = "CommandEnded", {"CommandId": stage["command_id"], "InstanceId": instance_id}
        what = f"SSM command {stage['command_id']} ({stage['comment']}) on {stage['role']} instance {instance_id}"
    left_s = max(float(settings.wait_poll_s), stage["deadline"] - time.time())
    trigger = WaiterTrigger(
        service="ssm",
        waiter_name=name,
        waiter_args=args,
        description=what,
        region_name=settings.build_region,
        aws_conn_id=settings.connection_id,
        waiter_delay=settings.wait_poll_s,
        waiter_max_attempts=max(1, int(left_s // settings.wait_poll_s) + 1),
    )
    return trigger, left_s


def advance_script(platform: PlatformConfig, stage: dict[str, Any]) -> dict[str, Any]:
    """After a wait: "agent" online → the script is sent ("script"); "script" ended → its whole
    result ("done", `result`). A stage whose wait must go on comes back unchanged. Past a stage's
    deadline, or on any error, the error is raised (a builder terminated first)."""
    from immutable.aws.hooks.ssm import AGENT_TIMEOUT_S

    hook = ssm(platform)
    instance_id = stage["instance_id"]
    try:
        past_deadline = time.time() > stage["deadline"]
        if stage["stage"] == "agent":
            status = hook.agent_status(instance_id=instance_id)
            if status != "Online":
                if past_deadline:
                    raise hook.agent_not_online(instance_id, status, AGENT_TIMEOUT_S)
                return stage
            command_id = hook.send_shell(
                instance_id=instance_id,
                commands=stage["script"],
                comment=stage["comment"],
                timeout_s=stage["timeout_s"],
                output_bucket=platform.aws_settings.artifact_bucket,
            )
            deadline = time.time() + stage["timeout_s"] + 60
            sent = {k: v for k, v in stage.items() if k != "script"}  # not carried through the next wait
            return sent | {"stage": "script", "command_id": command_id, "deadline": deadline}
        result = hook.command_result(command_id=stage["command_id"], instance_id=instance_id, ended=past_deadline)
        if result is None:
            return stage
        whole: CommandResult = _read_whole(platform, result)
        return stage | {"stage": "done", "result": asdict(whole)}
    except Exception as exc:
        where = f"{stage['role']} instance {instance_id} ({stage['comment']}): {exc}"
        if not stage.get("terminate_on_failure", True):
            raise AwsImageError(where) from exc
        _terminate(platform, role=stage["role"], instance_id=instance_id, failed=True)
        raise AwsImageError(f"{where}; the instance is terminated") from exc


def script_result(stage: dict[str, Any]) -> CommandResult:
    from immutable.aws.hooks.ssm import CommandResult

    return CommandResult(**stage["result"])


def image_after_script(
    platform: PlatformConfig,
    stage: dict[str, Any],
    image_the_builder: Callable[[PlatformConfig, str, CommandResult, dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Once the script is done on the builder (`stage` "done"): `image_the_builder` judges its result
    and starts the AMI, whose making the task waits for in the triggerer, the builder kept until then.
    A failed script, or any error here, terminates the builder. Returns what it made, pending."""
    try:
        made = image_the_builder(platform, stage["instance_id"], script_result(stage), stage["context"])
    except Exception:
        terminate_builder(platform, stage)
        raise
    log.info(
        "%s: AMI %s started from builder %s; waiting for it in the triggerer",
        stage["comment"],
        made["image_id"],
        stage["instance_id"],
    )
    return made | {"pending": True}


def terminate_after_script(platform: PlatformConfig, stage: dict[str, Any]) -> None:
    """The instance a finished script ran on goes (an error if AWS would not terminate it)."""
    _terminate(platform, role=stage["role"], instance_id=stage["instance_id"], failed=False)


def terminate_builder(platform: PlatformConfig, stage: dict[str, Any]) -> None:
    """After a failure with the builder's script done: the builder goes (never hiding the failure)."""
    _terminate(platform, role=stage["role"], instance_id=stage["instance_id"], failed=True)
