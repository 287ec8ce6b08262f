"""`make aws-smoke`: the aws platform once through on a real account, then everything it made removed.

What the emulator cannot show (an SSM agent registering, an ALB health-checking and reporting late
per-minute metrics, real AMI and copy times) only a real account shows. This runs, against the
account and regions the user names and nothing else: the base build, a first release of a smoke app
to two regions, a second release through the canary and the blue/green flip, and a rollback; then it
removes every resource it made, prints them, the time each phase took and a cost estimate. It stops
at the first failed phase, and the cleanup runs all the same.

It never touches the user's own images or apps: its base repository (`immutable-smoke/base`) and
app (`smoke`, the sample's code) are its own, so are its artifact keys (`apps/smoke/`,
`sboms/…smoke…`, `production/<region>/smoke.json`); the listeners are the platform file's, which
should be a listener of its own (see the README). Credentials are boto's default chain, through
the Amazon provider's connection (`aws.connection_id`). It refuses to start unless the account id
and the regions are given explicitly and match what the credentials and the platform file say.

The parent process only orchestrates; each phase runs in a child process (`--phase`) with its own
Airflow home, the DAGs run with `dag.test()`, as the tests run them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml

SMOKE_APP = "smoke"
SMOKE_REPOSITORY = f"apps/{SMOKE_APP}"
SMOKE_BASE_REPOSITORY = "immutable-smoke/base"
FIRST_VERSION, SECOND_VERSION = "1.0.0", "1.1.0"
RESULT_MARK = "SMOKE-RESULT "
# On-demand USD per hour in us-east-1 (late 2026) of the instance types people pick for this; others
# are estimated at the t3.medium price and said so. Prices differ a little per region.
HOURLY_USD = {"t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3a.micro": 0.0094}
FALLBACK_TYPE = "t3.medium"
# With the real ALB's one-minute metrics, minutes late: one canary interval of seven points, a
# post-flip window of five (used unless the platform file has its own `timing_overrides`).
REAL_TIMING = {
    "canary": {"warmup_s": 60, "interval_s": 420, "lifetime_s": 420, "step_s": 60, "min_samples": 7},
    "bluegreen": {"size": 1, "step_pause_s": 10, "post_flip_warmup_s": 60, "post_flip_window_s": 300},
}
PHASES = ("identity", "base", "release", "rollback")
LIVE_STATES = ("pending", "running", "stopping", "stopped")  # an instance that still costs
ROOT = Path(__file__).resolve().parents[2]


class SmokeRefused(ValueError):
    """The request does not name exactly what the smoke may touch; nothing was started."""


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str
    result: dict[str, Any] = field(default_factory=dict)


# --- what may be touched (pure) ---------------------------------------------------------------


def check_request(account: str, regions: list[str], document: dict[str, Any]) -> list[str]:
    """The smoke's regions, the build region first; SmokeRefused naming the field and allowed values."""
    if not re.fullmatch(r"\d{12}", account or ""):
        raise SmokeRefused(f"ACCOUNT: '{account}' is not an AWS account id (12 digits); name the account to use")
    from immutable.config import ConfigError, PlatformConfig, parse_model

    try:
        parse_model(PlatformConfig, document, "the platform file").aws_settings  # ruff: ignore[useless-expression] (raises if not aws)
    except ConfigError as exc:
        raise SmokeRefused(f"{exc}; give an aws platform file (see include/aws/platform.yaml)") from None
    known = [str(r["name"]) for r in document.get("regions", [])]
    if len(regions) < 2 or len(set(regions)) != len(regions):
        raise SmokeRefused(f"REGIONS: '{','.join(regions)}' must be two or more different regions out of {known}")
    unknown = [r for r in regions if r not in known]
    if unknown:
        raise SmokeRefused(f"REGIONS: {unknown} not in the platform file; allowed: {known}")
    build = str(document.get("aws", {}).get("build_region"))
    if build not in regions:
        raise SmokeRefused(f"REGIONS: must include the platform's build_region '{build}', where the AMIs are built")
    return [build, *[r for r in regions if r != build]]


def smoke_document(document: dict[str, Any], regions: list[str]) -> dict[str, Any]:
    """The platform file for the smoke: only its regions, the pilot (build region) first, then the rest."""
    smoke = json.loads(json.dumps(document))
    by_name = {str(r["name"]): r for r in smoke["regions"]}
    smoke["regions"] = [by_name[r] for r in regions]
    smoke["rollout"] = {"waves": [[regions[0]], regions[1:]]}
    smoke.setdefault("timing_overrides", REAL_TIMING)
    return smoke


def estimate_cost(instances: list[dict[str, Any]], now: datetime) -> tuple[float, list[str]]:
    """USD for the instance time the smoke used (each instance from its launch to `now`: an upper
    bound for those already gone), and the assumptions, one line each."""
    total, notes = 0.0, []
    for instance in instances:
        kind = str(instance.get("InstanceType", FALLBACK_TYPE))
        price = HOURLY_USD.get(kind)
        if price is None:
            price = HOURLY_USD[FALLBACK_TYPE]
            notes.append(f"{kind}: priced as {FALLBACK_TYPE}")
        launched = instance.get("LaunchTime")
        started = launched if isinstance(launched, datetime) else datetime.fromisoformat(str(launched))
        hours = max((now - started).total_seconds(), 60.0) / 3600  # billed per second, one minute at least
        total += hours * price
    notes.append("EBS snapshots, S3, CloudWatch and SSM requests for this run: under a cent each")
    notes.append("the load balancers are the platform file's, not counted")
    return total, sorted(set(notes), key=notes.index)


# --- the parent: refuse, run the phases, always clean up ----------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make aws-smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--account", default="", help="the AWS account id the credentials must be for")
    parser.add_argument("--regions", default="", help="two or more regions of the platform file, comma-separated")
    parser.add_argument("--platform", default=str(ROOT / "include" / "platform.yaml"), help="an aws platform file")
    parser.add_argument("--phase", choices=[*PHASES, "inventory", "cleanup"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return run_phase(args.phase, Path(args.work), args.account)
    try:
        document = yaml.safe_load(Path(args.platform).read_text())
        regions = check_request(args.account, [r for r in args.regions.split(",") if r], document)
    except (OSError, SmokeRefused) as exc:
        print(f"aws-smoke refused, nothing was started: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="immutable-aws-smoke-"))
    code = 1
    try:
        prepare(work, smoke_document(document, regions))
        code = orchestrate(work, args.account, regions)
    finally:
        if code == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:  # each phase's whole log is there
            print(f"the phases' logs are in {work}", file=sys.stderr)
    return code


def prepare(work: Path, document: dict[str, Any]) -> None:
    """The smoke's own platform file, base spec and app spec, and a fresh Airflow metadata DB."""
    (work / "platform.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    base = yaml.safe_load((ROOT / "include" / "base" / "base.yaml").read_text())
    (work / "base.yaml").write_text(yaml.safe_dump(base | {"repository": SMOKE_BASE_REPOSITORY}, sort_keys=False))
    apps = work / "apps"
    apps.mkdir()
    sample = (ROOT / "include" / "apps" / "sample.yaml").read_text()
    (apps / f"{SMOKE_APP}.yaml").write_text(re.sub(r"(?m)^name: sample\b", f"name: {SMOKE_APP}", sample, count=1))
    (work / "state").mkdir()
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=phase_env(work))


def phase_env(work: Path) -> dict[str, str]:
    return os.environ | {
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "IMMUTABLE_PLATFORM_FILE": str(work / "platform.yaml"),
        "IMMUTABLE_BASE_SPEC_FILE": str(work / "base.yaml"),
        "IMMUTABLE_APPS_DIR": str(work / "apps"),
        "IMMUTABLE_STATE_DIR": str(work / "state"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")])),
    }


def child(phase: str, work: Path, account: str) -> Phase:
    """One phase in its own process; its last line carries the result."""
    started = time.monotonic()
    print(f"--- {phase} ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "immutable.aws_smoke", "--phase", phase, "--work", str(work), "--account", account],
        env=phase_env(work),
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    (work / f"{phase}.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    result = json.loads(lines[-1][len(RESULT_MARK) :]) if lines else {}
    if done.returncode != 0 or not result.get("ok"):
        cause = result.get("error") or (done.stdout + done.stderr).strip()[-2000:] or f"exit {done.returncode}"
        return Phase(phase, seconds, False, cause, result)
    return Phase(phase, seconds, True, str(result.get("detail", "")), result)


def orchestrate(work: Path, account: str, regions: list[str]) -> int:
    print(f"aws-smoke: account {account}, regions {', '.join(regions)} (pilot {regions[0]})", flush=True)
    phases: list[Phase] = []
    for name in PHASES:
        phase = child(name, work, account)
        phases.append(phase)
        print(f"    {'ok' if phase.ok else 'FAILED'} in {phase.seconds:.0f}s: {phase.detail}", flush=True)
        if not phase.ok:
            break
    if not phases[0].ok:  # not the account named (or none answers): nothing was made, and nothing is touched
        print(f"aws-smoke stopped before making anything: {phases[0].detail}", flush=True)
        return 1
    inventory = child("inventory", work, account)
    cleanup = child("cleanup", work, account)
    print(report(phases, inventory, cleanup, datetime.now(UTC)))
    return 0 if all(p.ok for p in phases) and len(phases) == len(PHASES) and cleanup.ok else 1


def report(phases: list[Phase], inventory: Phase, cleanup: Phase, now: datetime) -> str:
    lines = ["", "=== aws-smoke ===", "phases:"]
    lines += [f"  {p.name:<10} {'ok' if p.ok else 'FAILED':<7} {p.seconds:7.0f}s  {p.detail}" for p in phases]
    resources: dict[str, list[str]] = inventory.result.get("resources", {})
    lines.append("resources it created:" if resources else f"resources: could not be listed ({inventory.detail})")
    for kind, names in resources.items():
        lines.append(f"  {kind:<16} {', '.join(names) or '-'}")
    cost, notes = estimate_cost(inventory.result.get("instances", []), now)
    lines.append(f"cost estimate: about ${cost:.2f} of instance time ({'; '.join(notes)})")
    if cleanup.ok:
        lines.append(f"cleanup: {cleanup.detail}")
    else:
        lines.append(f"CLEANUP FAILED, remove the resources above by hand: {cleanup.detail}")
    return "\n".join(lines)


# --- the phases (child processes) -----------------------------------------------------------------


def run_phase(phase: str, work: Path, account: str) -> int:
    try:
        result = {"identity": identity, "base": base, "release": release, "rollback": rollback}.get(phase)
        if result is None:
            identity(account)  # the inventory and the cleanup never run in another account
        outcome = result(account) if result else (inventory() if phase == "inventory" else cleanup())
        print(RESULT_MARK + json.dumps({"ok": True} | outcome, default=str), flush=True)
        return 0
    except Exception as exc:
        print(RESULT_MARK + json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1


def identity(account: str) -> dict[str, Any]:
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    from immutable.config import load_platform

    platform = load_platform()
    found = StsHook(aws_conn_id=platform.aws_settings.connection_id).conn.get_caller_identity()["Account"]
    if found != account:
        raise SmokeRefused(f"the credentials are for account {found}, not {account}; nothing was started")
    return {"detail": f"credentials are for account {found}"}


def run(dag_file: str, dag_id: str, conf: dict[str, Any]) -> str:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / dag_file))
    if bag.import_errors:
        raise RuntimeError(f"{dag_file} does not load: {bag.import_errors}")
    dag_run = bag.dags[dag_id].test(run_conf=conf)
    failed = [ti.task_id for ti in dag_run.get_task_instances() if str(ti.state) == "failed"]
    if str(dag_run.state) != "success":
        raise RuntimeError(f"{dag_id} {conf} ended {dag_run.state}; failed tasks: {failed} (see the phase's log)")
    return str(dag_run.run_id)


def base(account: str) -> dict[str, Any]:
    run_id = run("base_image.py", "base_image", {"reason": "manual", "force": True})
    return {"detail": f"base_image published {SMOKE_BASE_REPOSITORY} ({run_id})"}


def release(account: str) -> dict[str, Any]:
    with Traffic() as traffic:
        first = run("releases.py", f"release_{SMOKE_APP}", {"version": FIRST_VERSION})
        second = run("releases.py", f"release_{SMOKE_APP}", {"version": SECOND_VERSION})
    live = expect_live(SECOND_VERSION, "after the second release")
    return {
        "detail": f"{FIRST_VERSION}, then {SECOND_VERSION} through canary and flip ({first}, {second}); {traffic}",
        "live": live,
    }


def rollback(account: str) -> dict[str, Any]:
    with Traffic() as traffic:
        run_id = run("rollbacks.py", f"rollback_{SMOKE_APP}", {"reason": "aws-smoke"})
    live = expect_live(FIRST_VERSION, "after the rollback")
    return {"detail": f"every region back on {FIRST_VERSION} ({run_id}); {traffic}", "live": live}


def expect_live(version: str, when: str) -> dict[str, Any]:
    """Every region's live version and color as the production records say; RuntimeError unless
    each runs `version` and its listener sends all of the smoke's traffic to that color."""
    from immutable.platforms import platform_for

    platform = platform_for()
    production = platform.production
    live: dict[str, Any] = {}
    wrong: dict[str, Any] = {}
    for region in platform.config.regions:
        record = production.live(SMOKE_APP, region.name) or {}
        shares = production.shares(SMOKE_APP, region.name)
        live[region.name] = {"version": record.get("version"), "color": record.get("color"), "shares": shares}
        if record.get("version") != version or round(shares.get(str(record.get("color")), 0)) != 100:
            wrong[region.name] = live[region.name]
    if wrong:
        raise RuntimeError(f"{when} these regions do not run {version} with all of the traffic: {wrong}")
    return live


class Traffic:
    """Users for the canary and the gates: GETs on each region's load balancer while a phase runs."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.counts = {"ok": 0, "failed": 0}
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Traffic:
        from immutable.aws.hooks.elbv2 import ElbV2Hook
        from immutable.platforms import platform_for

        config = platform_for().config
        for region in config.regions:
            url = ElbV2Hook.for_region(config, region.name).listener_url(config.aws_region(region.name).listener_arn)
            thread = threading.Thread(target=self._send, args=(url,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _send(self, url: str) -> None:
        import httpx

        # verify=False: an HTTPS listener's certificate names the site, not the load balancer's DNS name
        with httpx.Client(timeout=5, verify=False) as client:
            while not self.stop.wait(0.1):
                try:
                    ok = client.get(url).status_code < 500
                except httpx.HTTPError:
                    ok = False
                self.counts["ok" if ok else "failed"] += 1

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def __str__(self) -> str:
        return f"traffic: {self.counts['ok']} answered, {self.counts['failed']} failed"


def _smoke_images(config: Any, region: str) -> list[dict[str, Any]]:
    from immutable.aws.amis import ec2
    from immutable.aws.tags import TAG_REPOSITORY

    hook = ec2(config, region)
    return [
        i for repo in (SMOKE_BASE_REPOSITORY, SMOKE_REPOSITORY) for i in hook.find_images(tags={TAG_REPOSITORY: repo})
    ]


def _smoke_instances(config: Any, region: str) -> list[dict[str, Any]]:
    """Every instance the smoke launched, terminated ones too (for the cost): builders and test
    environments carry the repository's tag, fleet members the app's."""
    from immutable.aws.amis import ec2

    conn = ec2(config, region).conn
    found = []
    for key, values in (
        ("immutable:repository", [SMOKE_BASE_REPOSITORY, SMOKE_REPOSITORY]),
        ("immutable:app", [SMOKE_APP]),
    ):
        reservations = conn.describe_instances(Filters=[{"Name": f"tag:{key}", "Values": values}])["Reservations"]
        found += [i for r in reservations for i in r["Instances"]]
    return list({i["InstanceId"]: i for i in found}.values())


def _smoke_keys(config: Any) -> list[str]:
    from immutable.aws.amis import s3

    bucket = config.aws_settings.artifact_bucket
    conn = s3(config).conn
    prefixes = [
        f"apps/{SMOKE_APP}/",
        f"sboms/{SMOKE_REPOSITORY}/",
        f"sboms/{SMOKE_BASE_REPOSITORY}/",
        f"revocations/{SMOKE_REPOSITORY}/",
        f"revocations/{SMOKE_BASE_REPOSITORY}/",
    ]
    keys = []
    for prefix in prefixes:
        for page in conn.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [str(o["Key"]) for o in page.get("Contents", [])]
    records = [f"production/{r.name}/{SMOKE_APP}.json" for r in config.regions]  # exactly: not smoke-api.json
    for key in [*records, *(f"{k}.lock" for k in records)]:
        if s3(config).artifact_metadata(bucket=bucket, key=key) is not None:
            keys.append(key)
    return keys


def inventory() -> dict[str, Any]:
    from immutable.aws.fleets import COLORS, group_name
    from immutable.platforms import platform_for

    config = platform_for().config
    resources: dict[str, list[str]] = {"AMIs": [], "instances": [], "groups": [], "artifacts": []}
    instances = []
    for region in config.regions:
        resources["AMIs"] += [f"{i['ImageId']} ({region.name})" for i in _smoke_images(config, region.name)]
        found = _smoke_instances(config, region.name)
        instances += [{"InstanceType": i.get("InstanceType"), "LaunchTime": i.get("LaunchTime")} for i in found]
        resources["instances"] += [f"{i['InstanceId']} ({region.name}, {i['State']['Name']})" for i in found]
        fleets = platform_for().production.fleets
        resources["groups"] += [
            group_name(SMOKE_APP, region.name, color)
            for color in COLORS
            if fleets.members(SMOKE_APP, region.name, color)
        ]
    resources["artifacts"] = [f"s3://{config.aws_settings.artifact_bucket}/{k}" for k in _smoke_keys(config)]
    return {
        "detail": ", ".join(f"{len(v)} {k}" for k, v in resources.items()),
        "resources": resources,
        "instances": instances,
    }


def deregister(hook: Any, image_id: str) -> list[str]:
    """The AMI and, with it, its snapshots: what was removed."""
    return [image_id, *hook.deregister_image(image_id=image_id)]


def cleanup() -> dict[str, Any]:
    """Everything of the smoke's, in every region: its fleets (both colors, their templates and
    target groups), builders and test instances left by a failed phase, its AMIs with their
    snapshots, its artifacts and records. Each removal on its own: one that fails is reported at
    the end and does not leave the others' resources behind."""
    from immutable.aws.amis import ec2, s3
    from immutable.aws.fleets import COLORS
    from immutable.aws.tags import TAG_ROLE
    from immutable.platforms import platform_for

    platform = platform_for()
    config = platform.config
    removed: list[str] = []
    failed: list[str] = []

    def attempt(what: str, action: Callable[[], object]) -> None:
        """Run one removal; what it removed is its answer when it lists it, else `what`."""
        try:
            done = action()
        except Exception as exc:
            failed.append(f"{what}: {type(exc).__name__}: {exc}")
            return
        removed.extend(done if isinstance(done, list) else [what])

    for region in config.regions:
        hook = ec2(config, region.name)
        for color in COLORS:  # answers what it removed: nothing when there is no such fleet
            attempt(
                f"{SMOKE_APP} {color} fleet in {region.name}",
                partial(platform.production.fleets.destroy, SMOKE_APP, region.name, color, force=True),
            )
        for instance in _smoke_instances(config, region.name):
            tags = {t["Key"] for t in instance.get("Tags", [])}
            if instance["State"]["Name"] in LIVE_STATES and TAG_ROLE in tags:  # fleet members go with their group
                instance_id = str(instance["InstanceId"])
                attempt(instance_id, partial(hook.terminate_instances, instance_ids=[instance_id], wait=False))
        for image in _smoke_images(config, region.name):
            attempt(str(image["ImageId"]), partial(deregister, hook, str(image["ImageId"])))
    bucket = config.aws_settings.artifact_bucket
    for key in _smoke_keys(config):
        attempt(f"s3://{bucket}/{key}", partial(s3(config).conn.delete_object, Bucket=bucket, Key=key))
    if failed:
        raise RuntimeError(f"removed {len(removed)}; could not remove: {'; '.join(failed)}")
    artifacts = sum(1 for r in removed if r.startswith("s3://"))
    return {"detail": f"removed {len(removed) - artifacts} resources and {artifacts} artifacts", "removed": removed}


if __name__ == "__main__":
    sys.exit(main())
