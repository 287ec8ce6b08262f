"""Production figures: flip time, failed requests during flips, rollback by flip-back vs by redeploy.

Prints figures side by side from one run; asserts nothing. Runs its own local platform
(bench/bench_platform.yaml: instance `bench`, one region on ports 6100-6199, state in var/bench):
registries, HAProxy and the traffic generator as the library starts them, and fleets of the sample
app baked from a fresh base, so the demo's and the tests' platforms on the same engine are never
touched. Everything it started is stopped and removed at the end, var/bench included.

Run: `PYTHONPATH=plugins .venv/bin/python bench/production.py`
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

# immutable.paths reads these when it is imported: they are set before any immutable import.
os.environ["IMMUTABLE_PLATFORM_FILE"] = str(Path(__file__).resolve().parent / "bench_platform.yaml")
os.environ["IMMUTABLE_STATE_DIR"] = str(Path(__file__).resolve().parents[1] / "var" / "bench")

from bench_images import remove_images, repetitions, say_if_quick

from immutable import provenance
from immutable.app_spec import AppSpec, app_spec
from immutable.config import BaseImageRunParams, PlatformConfig, load_base_spec, load_platform
from immutable.images import app, base
from immutable.images.engine import docker_client
from immutable.images.replicate import copy_image
from immutable.images.upstream import upstream_digest
from immutable.local.fleets import LABEL_INSTANCE, LocalFleets
from immutable.local.loadbalancer import LoadBalancer
from immutable.local.production import LocalProduction
from immutable.local.services import Service
from immutable.local.traffic import REQUEST_TIMEOUT_S, failures_between, read_stats
from immutable.localctl import production_services, registry_services
from immutable.registry import RegistryClient

PLATFORM_FILE = Path(os.environ["IMMUTABLE_PLATFORM_FILE"])
STATE_DIR = Path(os.environ["IMMUTABLE_STATE_DIR"])  # removed at the end
APP = "sample"
OLD, NEW = "1.0.0", "1.1.0"  # both healthy: the "bad" release fails a gate by decree, not by errors
OLD_COLOR, NEW_COLOR = "blue", "green"
BASE_REPO = "immutable/base"  # in the bench's build registry
LOCAL_SUFFIX = "-benchprod"  # local tags of our images, apart from the other benchmarks' `-bench`
RUN_ID = "bench-production"
FLIPS = repetitions(10, 4)  # flips in the back-and-forth run (half each way)
DWELL_S = 3.0  # seconds of traffic on a color before the next flip
ROLLBACKS = repetitions(3, 1)  # repetitions of each rollback method
POLL_S = 0.005  # seconds between share reads while waiting for the LB to report 100%
SERVED_STREAK = 8  # consecutive answers of the new version through the LB that count as "served"
WAIT_TIMEOUT_S = 30.0  # longest wait for shares, answers or fresh traffic stats
STATS_POLL_S = 0.1  # seconds between reads of the traffic generator's stats (written every 1 s)
LATE_FAILURE_S = REQUEST_TIMEOUT_S + 1.0  # a request failing at its timeout is logged this much later
REDEPLOY_ROLLBACK_WINDOW_S = 0.0  # the redeploy case: the kept color's window is over


# --- platform -------------------------------------------------------------------------------


class BenchPlatform:
    """The bench instance's services and images; close() stops and removes all of it."""

    def __init__(self) -> None:
        self.platform: PlatformConfig = load_platform()
        assert self.platform.local.instance == "bench", f"{PLATFORM_FILE} must name instance 'bench'"
        self.region = self.platform.regions[0]
        self.spec: AppSpec = app_spec(APP).for_platform(self.platform)
        self.production = LocalProduction(self.platform, STATE_DIR)
        self.fleets: LocalFleets = self.production.fleets
        self.lb = LoadBalancer(self.region, STATE_DIR)
        self.started: list[Service] = []
        self.built: list[str] = []  # image ids: apps first, base last (the order they can go in)
        self.digests: dict[str, str] = {}

    def start(self, services: Sequence[Service]) -> None:
        for service in services:
            self.started.append(service)  # before start(): a half-started one is still stopped
            service.start()

    def image(self, version: str) -> str:
        """Where the fleets pull from: the region's registry, by digest."""
        return f"127.0.0.1:{self.region.registry_port}/{self.spec.repository}@{self.digests[version]}"

    def launch(self, color: str, version: str) -> None:
        self.fleets.launch(
            spec=self.spec,
            region=self.region.name,
            color=color,
            image=self.image(version),
            digest=self.digests[version],
            version=version,
            size=self.spec.bluegreen.size,
        )

    def entry(self, color: str, version: str) -> dict[str, str]:
        return {"color": color, "version": version, "digest": self.digests[version]}

    def note_flip(self, live: dict[str, str], previous: dict[str, str] | None, window_s: float) -> None:
        """The production record a release's flip leaves, so a flip back has what it reads."""
        self.production.note_flip(
            APP, self.region.name, live=live, previous=previous, rollback_window_s=window_s, run_id=RUN_ID
        )

    def close(self) -> None:
        """Everything this run made: our services, our containers (instance bench), our images, var/bench."""
        errors: list[str] = []
        for service in reversed(self.started):
            try:
                service.stop()
            except Exception as exc:
                errors.append(f"{service.name}: {exc}")
        try:
            client = docker_client()
            filters = {"label": f"{LABEL_INSTANCE}={self.platform.local.instance}"}
            for container in client.containers.list(all=True, filters=filters):
                container.remove(force=True)
            remove_images(client, self.built)
        except Exception as exc:
            errors.append(f"docker cleanup: {exc}")
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        for error in errors:
            print(f"cleanup: {error}")


# --- images ---------------------------------------------------------------------------------


def build_images(bench: BenchPlatform) -> float:
    """A fresh base, then OLD and NEW baked on it as the release DAG does, copied to the region.

    Image ids land in bench.built as soon as they exist, for cleanup. Returns the seconds it took.
    """
    started = time.monotonic()
    spec = bench.spec
    build = bench.platform.build_registry
    base_spec = load_base_spec().model_copy(update={"repository": f"immutable/base{LOCAL_SUFFIX}"})
    created = datetime.now(UTC)
    base_version = created.strftime("%Y.%m.%d.%H%M%S")
    labels = base.build_labels(
        spec=base_spec,
        version=base_version,
        created=created,
        upstream_digest=upstream_digest(base_spec.upstream.image),
        params=BaseImageRunParams(reason="manual"),
        run_id=RUN_ID,
    )
    base_id = base.build(spec=base_spec, upstream_ref=base_spec.upstream.image, version=base_version, labels=labels)
    bench.built.append(base_id)
    base_digest = base.push(base_id, f"{build}/{BASE_REPO}", base_version)
    base_ref = f"{build}/{BASE_REPO}@{base_digest}"
    uid = base_spec.runtime_user.uid
    region = RegistryClient(f"127.0.0.1:{bench.region.registry_port}")
    for version in (OLD, NEW):
        with app.with_tempdir() as tmp:
            tree = app.checkout(spec, "", Path(tmp))
            source_tar = app.source_archive(tree, version, uid)
        wheels = app.build_wheels(base_ref=base_ref, source_tar=source_tar, uid=uid)
        wheel = app.app_wheel_name(wheels, spec.packaging.distribution, version)
        image_labels = {
            provenance.LABEL_VERSION: version,
            provenance.LABEL_REVISION: tree.revision,
            provenance.LABEL_BASE_DIGEST: base_digest,
            provenance.LABEL_APP: spec.name,
            provenance.LABEL_ARTIFACT: app.sha256(wheels[wheel]),
            provenance.LABEL_RUN_ID: RUN_ID,
        }
        context = app.bake_context(spec=spec, base=base_spec, base_ref=base_ref, version=version, wheels=wheels)
        image_id = app.bake(context=context, labels=image_labels, tag=f"{spec.repository}{LOCAL_SUFFIX}:{version}")
        bench.built.insert(0, image_id)
        digest = base.push(image_id, f"{build}/{spec.repository}", version)
        copy_image(RegistryClient(build), region, spec.repository, digest, [version])
        bench.digests[version] = digest
    return time.monotonic() - started


# --- measuring ------------------------------------------------------------------------------


def wait_for(what: str, done: Callable[[], bool], poll_s: float) -> float:
    """Poll until done; returns the monotonic time it first was."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {WAIT_TIMEOUT_S:.0f}s")
        time.sleep(poll_s)
    return time.monotonic()


def wait_full(bench: BenchPlatform, color: str) -> float:
    """When the LB first reports 100% of the app's new requests on `color`."""
    return wait_for(f"{color} at 100%", lambda: bench.lb.shares(APP).get(color, 0.0) >= 100.0, POLL_S)


def wait_served(client: httpx.Client, bench: BenchPlatform, version: str) -> float:
    """When SERVED_STREAK requests in a row through the LB were answered by `version`."""
    url = f"http://127.0.0.1:{bench.region.lb_port}/version"
    streak = 0

    def answered() -> bool:
        nonlocal streak
        response = client.get(url, headers={"Host": APP})
        ok = response.status_code == 200 and response.json().get("version") == version
        streak = streak + 1 if ok else 0
        return streak >= SERVED_STREAK

    return wait_for(f"{version} answering through the LB", answered, 0.0)


@dataclass
class Mark:
    """One traffic-generator stats write: its wall time and the requests sent to the region by then."""

    at: float
    sent: int


def mark(bench: BenchPlatform) -> Mark:
    """The first stats written from now on: a count and a time that belong together."""
    now = time.time()
    found: list[Mark] = []

    def fresh() -> bool:
        stats = read_stats(STATE_DIR)
        if stats.get("updated", 0.0) < now:
            return False
        found.append(Mark(stats["updated"], int(stats["regions"][bench.region.name][APP]["sent"])))
        return True

    wait_for("fresh traffic stats", fresh, STATS_POLL_S)
    return found[0]


@dataclass
class Window:
    """Requests sent and failed between two marks; failures are read at the end (late ones land late)."""

    start: Mark
    end: Mark
    failed: int = 0

    @property
    def sent(self) -> int:
        return self.end.sent - self.start.sent

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    @property
    def per_1000(self) -> float:
        return 1000 * self.failed / max(self.sent, 1)

    def count(self, region: str) -> None:
        self.failed = len(failures_between(STATE_DIR, self.start.at, self.end.at, region))


@dataclass
class Flip:
    commanded_s: float  # set_shares returned
    reported_s: float  # the LB reports 100% on the new color
    served_s: float  # the new version answers SERVED_STREAK requests in a row through the LB


@dataclass
class Rollback:
    launch_s: float  # redeploy only: pull, start, healthy, in the LB at weight 0
    shares_s: float  # 100% on the old color
    total_s: float  # ... and the new color removed
    window: Window


@dataclass
class Figures:
    build_s: float = 0.0
    quiet: Window | None = None
    flipping: Window | None = None
    flips: list[Flip] = field(default_factory=list)
    flip_back: list[Rollback] = field(default_factory=list)
    redeploy: list[Rollback] = field(default_factory=list)


def flip(bench: BenchPlatform, client: httpx.Client, color: str, version: str) -> Flip:
    started = time.monotonic()
    bench.lb.set_shares(APP, {color: 100})
    commanded = time.monotonic()
    reported = wait_full(bench, color)
    served = wait_served(client, bench, version)
    return Flip(commanded - started, reported - started, served - started)


def flip_back(bench: BenchPlatform) -> Rollback:
    """What the pipeline's flip_back does after a gate failure: traffic to the kept color, then the new one goes."""
    region = bench.region.name
    before = mark(bench)
    started = time.monotonic()
    if not bench.production.members(APP, region, OLD_COLOR):
        raise RuntimeError(f"the kept {OLD_COLOR} fleet is gone; nothing to flip back to")
    bench.production.set_shares(APP, region, {OLD_COLOR: 100})
    full = wait_full(bench, OLD_COLOR)
    bench.production.note_flip_back(APP, region, live=bench.entry(OLD_COLOR, OLD))
    bench.fleets.destroy(APP, region, NEW_COLOR)
    total = time.monotonic()
    return Rollback(0.0, full - started, total - started, Window(before, mark(bench)))


def redeploy(bench: BenchPlatform) -> Rollback:
    """The rollback without a kept color: the previous version launched again by digest, then flipped to."""
    region = bench.region.name
    before = mark(bench)
    started = time.monotonic()
    bench.launch(OLD_COLOR, OLD)
    launched = time.monotonic()
    bench.production.set_shares(APP, region, {OLD_COLOR: 100})
    full = wait_full(bench, OLD_COLOR)
    bench.note_flip(bench.entry(OLD_COLOR, OLD), bench.entry(NEW_COLOR, NEW), REDEPLOY_ROLLBACK_WINDOW_S)
    bench.fleets.destroy(APP, region, NEW_COLOR)
    total = time.monotonic()
    return Rollback(launched - started, full - started, total - started, Window(before, mark(bench)))


def release_new(bench: BenchPlatform, *, keep_old: bool) -> None:
    """Untimed set-up: NEW launched and flipped to, OLD kept without traffic (or removed: window over)."""
    bench.launch(NEW_COLOR, NEW)
    bench.production.set_shares(APP, bench.region.name, {NEW_COLOR: 100})
    window_s = bench.spec.bluegreen.rollback_window_s if keep_old else REDEPLOY_ROLLBACK_WINDOW_S
    bench.note_flip(bench.entry(NEW_COLOR, NEW), bench.entry(OLD_COLOR, OLD), window_s)
    if not keep_old:
        bench.fleets.destroy(APP, bench.region.name, OLD_COLOR)
    time.sleep(DWELL_S)  # some traffic on the new color, as a gate would see


def measure(bench: BenchPlatform) -> Figures:
    figures = Figures()
    services = production_services()  # Prometheus among them is not needed here, so not started
    bench.start(registry_services())
    bench.start([s for s in services if s.name.startswith("haproxy-")])
    figures.build_s = build_images(bench)

    # OLD live on blue, then users' traffic starts.
    bench.launch(OLD_COLOR, OLD)
    bench.production.set_shares(APP, bench.region.name, {OLD_COLOR: 100})
    bench.note_flip(bench.entry(OLD_COLOR, OLD), None, bench.spec.bluegreen.rollback_window_s)
    bench.start([s for s in services if s.name == "traffic"])
    bench.launch(NEW_COLOR, NEW)

    windows: list[Window] = []
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
        # 1 and 2: flips back and forth between two healthy fleets; a quiet window of the same length first.
        start = mark(bench)
        time.sleep(FLIPS * DWELL_S)
        figures.quiet = Window(start, mark(bench))
        start = mark(bench)
        for number in range(FLIPS):
            color, version = (NEW_COLOR, NEW) if number % 2 == 0 else (OLD_COLOR, OLD)
            figures.flips.append(flip(bench, client, color, version))
            time.sleep(DWELL_S)
        figures.flipping = Window(start, mark(bench))
        if bench.lb.shares(APP).get(OLD_COLOR, 0.0) < 100.0:
            flip(bench, client, OLD_COLOR, OLD)
        bench.fleets.destroy(APP, bench.region.name, NEW_COLOR)
    windows += [figures.quiet, figures.flipping]

    # 3: a gate fails after NEW went live; the kept OLD color takes the traffic back.
    for _ in range(ROLLBACKS):
        release_new(bench, keep_old=True)
        figures.flip_back.append(flip_back(bench))
    # 4: the same, past the rollback window: OLD is redeployed by digest.
    for _ in range(ROLLBACKS):
        release_new(bench, keep_old=False)
        figures.redeploy.append(redeploy(bench))

    windows += [r.window for r in figures.flip_back + figures.redeploy]
    time.sleep(LATE_FAILURE_S)
    for window in windows:
        window.count(bench.region.name)
    return figures


# --- report ---------------------------------------------------------------------------------


def ms(values: Sequence[float]) -> str:
    """min / median / max in milliseconds."""
    return f"{1000 * min(values):8.1f} {1000 * statistics.median(values):8.1f} {1000 * max(values):8.1f}"


def seconds(values: Sequence[float]) -> str:
    return f"{min(values):8.3f} {statistics.median(values):8.3f} {max(values):8.3f}"


def failures(windows: Sequence[Window]) -> str:
    sent, failed = sum(w.sent for w in windows), sum(w.failed for w in windows)
    return f"{failed:>5} of {sent:>6} sent = {1000 * failed / max(sent, 1):6.2f} per 1000"


def report(bench: BenchPlatform, f: Figures) -> None:
    assert f.quiet is not None and f.flipping is not None
    rps = bench.platform.local.traffic_rps
    size = bench.spec.bluegreen.size
    print(
        f"\nproduction on the local platform (instance bench, region {bench.region.name}, HAProxy "
        f"runtime API, {size} members per color, traffic {rps:g} rps; {os.cpu_count()} CPUs)"
    )
    say_if_quick()
    print(f"  {'images: base build + bake ' + OLD + ' and ' + NEW + ' + copy (s)':<52} {f.build_s:8.1f}")

    print(f"\nflip time, {len(f.flips)} flips {OLD_COLOR}<->{NEW_COLOR} ({OLD}/{NEW}, both healthy)")
    print(f"  {'':<52} {'min':>8} {'median':>8} {'max':>8}")
    print(f"  {'set_shares returned (ms)':<52} {ms([x.commanded_s for x in f.flips])}")
    print(f"  {'LB reports 100% on the new color (ms)':<52} {ms([x.reported_s for x in f.flips])}")
    print(f"  {f'{SERVED_STREAK} answers in a row from the new version (ms)':<52} {ms([x.served_s for x in f.flips])}")

    print("\nfailed requests (>= 500 or no answer), counted by the traffic generator")
    print(f"  {f'no flip, {f.quiet.seconds:.0f} s':<40} {failures([f.quiet])}")
    flipping = f"{len(f.flips)} flips, one per {DWELL_S:g} s, {f.flipping.seconds:.0f} s"
    print(f"  {flipping:<40} {failures([f.flipping])}")
    print(f"  {f'{len(f.flip_back)} rollbacks by flip back':<40} {failures([r.window for r in f.flip_back])}")
    print(f"  {f'{len(f.redeploy)} rollbacks by redeploy':<40} {failures([r.window for r in f.redeploy])}")

    fb, rd = f.flip_back, f.redeploy
    print(f"\nrollback after a gate failure on {NEW} ({NEW_COLOR}) to {OLD} ({OLD_COLOR}), {ROLLBACKS} runs each (s)")
    print(f"  {'':<52} {'min':>8} {'median':>8} {'max':>8}")
    print(f"  {'flip back to the kept color: 100% on old':<52} {seconds([r.shares_s for r in fb])}")
    print(f"  {'flip back: + new color removed (total)':<52} {seconds([r.total_s for r in fb])}")
    print(f"  {'redeploy by digest: launched, healthy, in the LB':<52} {seconds([r.launch_s for r in rd])}")
    print(f"  {'redeploy by digest: 100% on old':<52} {seconds([r.shares_s for r in rd])}")
    print(f"  {'redeploy by digest: + new color removed (total)':<52} {seconds([r.total_s for r in rd])}")
    to_old = statistics.median(r.shares_s for r in rd) / max(statistics.median(r.shares_s for r in fb), 1e-6)
    total = statistics.median(r.total_s for r in rd) / max(statistics.median(r.total_s for r in fb), 1e-6)
    print(f"  {'ratio redeploy / flip back, to 100% on old (median)':<52} {to_old:8.1f}x")
    print(f"  {'ratio redeploy / flip back, total (median)':<52} {total:8.1f}x")
    print("  (redeploy: the old image is still in the engine's cache, as on a host that ran it;")
    print("   the pipeline's redeploy also verifies the image's signature first, which is not timed here)")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    bench = BenchPlatform()
    try:
        figures = measure(bench)
    finally:
        bench.close()
    report(bench, figures)


if __name__ == "__main__":
    main()
