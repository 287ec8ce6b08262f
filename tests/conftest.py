"""Test-wide environment: an isolated state dir, platform file and Airflow home.

Set before anything imports Airflow, so every test (and every subprocess it starts) sees them.
Services that a test needs must exist in CI; outside CI a missing one skips with the reason.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE = ROOT / "var" / "test"
TEST_APPS = TEST_STATE / "apps"  # the test platform's app specs: include/apps, copied at its start
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

os.environ.update(
    {
        "IMMUTABLE_STATE_DIR": str(TEST_STATE),
        "IMMUTABLE_PLATFORM_FILE": str(ROOT / "tests" / "platform.yaml"),
        # The parse caches of the specs that tests write into temporary folders stay with the tests'
        # state, out of the checkout's own var/cache.
        "IMMUTABLE_CACHE_DIR": str(TEST_STATE / "cache"),
        # One Airflow metadata DB per xdist worker: each group of layers wipes and migrates its own
        # (`airflow_db`), and the groups run at once.
        "AIRFLOW_HOME": str(TEST_STATE / f"airflow-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # The SMTP server the test platform's notifications go to (tests/integration/conftest.py).
        "AIRFLOW_CONN_IMMUTABLE_TEST_SMTP": (
            '{"conn_type": "smtp", "host": "127.0.0.1", "port": 8697, "extra": {"disable_tls": true, '
            '"disable_ssl": true, "from_email": "immutable@localhost", "retry_limit": 1, "timeout": 5}}'
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
)
sys.path.insert(0, str(ROOT / "plugins"))


def make(target: str, env: dict[str, str], timeout_s: int = 2400) -> str:
    """`make <target>` as the README gives it, in `env`; its output, or a failure showing its end."""
    done = subprocess.run(
        ["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"make {target} failed:\n{output[-6000:]}"
    return output


SESSION_STARTED = time.time()
TEST_PLATFORMS = ("test", "e2e", "compose")  # the platform files' local.instance of tests/, tests/e2e, tests/compose
TEST_STATE_DIRS = [TEST_STATE, ROOT / "var" / "e2e", ROOT / "var" / "compose-test"]


# `make test` runs four pytest-xdist workers, one group of layers each. The groups share nothing but
# the Docker engine: "demo" (tests/e2e: the demo's running Airflow, var/e2e), "quick" (`make bench`
# on its own platform in var/bench, then the unit and DAG tests, which need no platform: the bench
# ends long before the others, so they wait there instead of in the longest group), "aws" (tests/aws:
# its own moto server on a free port, no engine) and "local" (integration on var/test's platform;
# compose has var/compose-test but starts from the base the test platform built). Each worker has its
# own Airflow DB. Most of the suite waits on gate windows, health checks and the emulator's modelled
# delays, so four workers use two cores' idle time.
STANDALONE_LAYERS = {"e2e": "demo", "bench": "quick", "unit": "quick", "dags": "quick", "aws": "aws"}
ENGINE_LOCKS = ROOT / "var" / "engine-locks"


def layer_group(nodeid: str) -> str:
    """tests/<layer>/... -> the group its layer runs in."""
    parts = nodeid.split("/")
    return STANDALONE_LAYERS.get(parts[1], "local") if len(parts) > 2 else "local"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole groups to workers, by the test's path (xdist's own `loadgroup` cannot tag node ids
    under pytest 9, whose node ids are read-only)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByLayerGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return layer_group(nodeid)

    return ByLayerGroup(config, log)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "restarts_docker_engine: restarts the Docker engine; every other test waits for it to end"
    )


@contextmanager
def engine_turn(exclusive: bool) -> Generator[None]:
    """Many tests may use the engine at once, or one alone (a test that restarts it). A test that
    wants it alone first takes the intent lock, so no new test starts while it waits for the running
    ones to end (flock alone would let the other worker's back-to-back tests starve it)."""
    if not exclusive and HELD_FOR_A_MODULE:
        yield  # this process already holds the engine shared for longer (see `engine_held_for_module`)
        return
    ENGINE_LOCKS.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(ENGINE_LOCKS / "intent", "a") as intent, open(ENGINE_LOCKS / "engine", "a") as engine:
        fcntl.flock(intent, mode)
        fcntl.flock(engine, mode)
        if not exclusive:
            fcntl.flock(intent, fcntl.LOCK_UN)
        yield


HELD_FOR_A_MODULE: list[str] = []


@contextmanager
def engine_held_for_module(name: str) -> Generator[None]:
    """The engine shared from now until the block ends, across tests: for what lives between them
    and would not survive an engine restart (the compose stack's workers mount the engine's socket,
    which a restarted engine makes anew)."""
    ENGINE_LOCKS.mkdir(parents=True, exist_ok=True)
    with open(ENGINE_LOCKS / "engine", "a") as engine:
        fcntl.flock(engine, fcntl.LOCK_SH)  # granted: the test now running holds it shared already
        HELD_FOR_A_MODULE.append(name)
        try:
            yield
        finally:
            HELD_FOR_A_MODULE.remove(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Setup, call and teardown (so session fixtures too) inside the test's turn on the engine."""
    with engine_turn(exclusive=item.get_closest_marker("restarts_docker_engine") is not None):
        return (yield)


def require(service: str, available: bool, how: str) -> None:
    """Skip outside CI when a service is missing; in CI that is a failure, never a skip."""
    if available:
        return
    message = f"{service} is not available: {how}"
    if IN_CI:
        pytest.fail(f"{message} (CI must provide it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    from immutable.localctl import engine_answers

    require("Docker engine", engine_answers(), "start it with `make up` (Debian, root) or set DOCKER_HOST")


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh SQLite metadata DB for dag.test()."""
    home = Path(os.environ["AIRFLOW_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture(scope="session")
def local_platform(docker_engine: None) -> Iterator[None]:
    """The test platform's registries on fresh storage, and the upstream image; stopped afterwards."""
    from immutable.config import load_base_spec, load_platform
    from immutable.images.upstream import ensure_upstream
    from immutable.localctl import registry_services
    from immutable.signing import ensure_key, key_path

    ensure_upstream(load_base_spec())
    ensure_key(key_path(load_platform()))
    shutil.rmtree(TEST_STATE / "registry", ignore_errors=True)
    services = registry_services()
    for service in services:
        service.stop()
        service.start()
    yield
    for service in services:
        service.stop()


@pytest.fixture(scope="session")
def production_platform(local_platform: None) -> Iterator[None]:
    """Load balancers, Prometheus and the traffic generator of the test platform, from a clean slate."""
    from immutable.images.engine import docker_client
    from immutable.localctl import production_services

    client = docker_client()
    for container in client.containers.list(
        ignore_removed=True, all=True, filters={"label": "io.immutable.platform=test"}
    ):
        container.remove(force=True)
    for folder in ("production", "haproxy", "prometheus", "traffic"):
        shutil.rmtree(TEST_STATE / folder, ignore_errors=True)
    # The apps of this platform: a copy of include/apps, so a test can add an app to the running
    # platform (the traffic generator and the DAGs read it) without touching the repository.
    shutil.rmtree(TEST_APPS, ignore_errors=True)
    TEST_APPS.mkdir(parents=True)
    for spec in (ROOT / "include" / "apps").glob("*.yaml"):
        shutil.copy2(spec, TEST_APPS / spec.name)
    earlier = os.environ.get("IMMUTABLE_APPS_DIR")
    os.environ["IMMUTABLE_APPS_DIR"] = str(TEST_APPS)
    services = production_services()
    try:
        for service in services:
            service.stop()
            service.start()
        yield
    finally:
        for service in reversed(services):
            service.stop()
        if earlier is None:
            os.environ.pop("IMMUTABLE_APPS_DIR", None)
        else:
            os.environ["IMMUTABLE_APPS_DIR"] = earlier
        # The fleets the releases launched: nothing of the test platform outlives the session.
        for container in client.containers.list(
            ignore_removed=True, all=True, filters={"label": "io.immutable.platform=test"}
        ):
            container.remove(force=True)


@pytest.fixture(scope="session")
def base_candidate(local_platform: None, airflow_db: None) -> str:
    """The test registry's base candidate when first asked, built by the base_image DAG if no test did
    already. Tests of the base image move the candidate later: a release records its own base."""
    from immutable.config import load_base_spec, load_platform
    from immutable.registry import RegistryClient
    from tests.integration.helpers import run_dag

    spec = load_base_spec()
    build = RegistryClient(load_platform().build_registry)
    if build.manifest_digest(spec.repository, "candidate") is None:
        run, states = run_dag("base_image.py", "base_image", {"reason": "manual", "force": True})
        assert str(run.state) == "success", states
    digest = build.manifest_digest(spec.repository, "candidate")
    assert digest is not None
    return digest


def leftovers() -> list[str]:
    """What the test platforms left running: fleets and containers, environment networks made during
    this session, and processes of the test state folders' pid files. The demo's own are not looked at."""
    from immutable.local.services import pid_alive

    found = []
    for state in TEST_STATE_DIRS:
        for pid_file in (state / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                found.append(f"process {pid} ({pid_file.relative_to(ROOT)})")
    try:
        from immutable.images.engine import docker_client
        from immutable.localctl import engine_answers

        if not engine_answers():
            return found
        client = docker_client()
    except Exception:  # no engine: nothing of it can be left
        return found
    for platform in TEST_PLATFORMS:
        for container in client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"io.immutable.platform={platform}"}
        ):
            found.append(f"container {container.name} (platform {platform})")
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(SESSION_STARTED))
    for container in client.containers.list(
        ignore_removed=True, all=True, filters={"label": "io.immutable.managed=true"}
    ):
        created = str(container.attrs.get("Created", ""))[:19]
        if created >= since and "io.immutable.platform" not in container.labels:
            found.append(f"container {container.name} ({container.labels.get('io.immutable.role', 'managed')})")
    for network in client.networks.list():
        created = str(network.attrs.get("Created", ""))[:19]
        if network.name.startswith(("immutable-dev-", "immutable-staging-")) and created >= since:
            found.append(f"network {network.name}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture's teardown: the suite must leave nothing of its platforms behind."""
    if session.config.option.collectonly or exitstatus not in (0, 1):
        return
    if hasattr(session.config, "workerinput"):  # an xdist worker: the other may still be running its tests
        return
    left = leftovers()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "left behind by the tests (each fixture must remove what it started)", red=True)
            for line in left:
                reporter.write_line(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
