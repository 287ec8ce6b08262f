"""Short-lived test environments (dev, staging) on the Docker engine: an isolated network, the app
container, and probe containers that talk to it over that network.

Everything is named from the app, the environment and the run, and labelled, so teardown finds
it all even after a worker restart, and a retry reuses rather than duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from immutable.app_spec import AppSpec, SmokeCheck
from immutable.images.engine import MANAGED_LABEL, docker_client

log = logging.getLogger(__name__)

ENV_LABEL = "io.immutable.env"
APP_ALIAS = "app"  # the app's host name inside the environment's network

# Runs inside a probe container (Python's standard library only): waits for health, then checks.
PROBE_SCRIPT = r"""
import json, sys, time, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
def get(path):
    try:
        with urllib.request.urlopen(cfg["url"] + path, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)
deadline = time.monotonic() + cfg["timeout_s"]
status, body = None, ""
while time.monotonic() < deadline:
    status, body = get(cfg["health_path"])
    if status == 200:
        break
    time.sleep(0.5)
results = [{"check": "health " + cfg["health_path"], "passed": status == 200,
            "detail": "answered %s: %s" % (status, body.strip()[:200])}]
if status == 200:
    for c in cfg["checks"]:
        s, b = get(c["path"])
        ok = s == c["status"] and (c["body_contains"] is None or c["body_contains"] in b)
        want = "%s%s" % (c["status"], " containing %r" % c["body_contains"] if c["body_contains"] else "")
        results.append({"check": "GET " + c["path"], "passed": ok,
                        "detail": "wanted %s, got %s: %s" % (want, s, b.strip()[:200])})
print(json.dumps(results))
"""


class EnvironmentError_(RuntimeError):
    pass


def environment_name(kind: str, app: str, run_id: str) -> str:
    """Deterministic per run: a retry or a teardown after a restart finds the same environment."""
    return f"immutable-{kind}-{app}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Environment:
    name: str
    image: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "image": self.image, "url": self.url}


def create(*, name: str, spec: AppSpec, image: str, env: dict[str, str]) -> Environment:
    """Network and app container; on any failure what was made is removed before raising."""
    import docker

    client = docker_client()
    labels = {MANAGED_LABEL: "true", ENV_LABEL: name, "io.immutable.app.name": spec.name}
    try:
        networks = client.networks.list(names=[name])
        network = (
            networks[0] if networks else client.networks.create(name, driver="bridge", internal=True, labels=labels)
        )
        try:
            client.containers.get(f"{name}-app")
        except docker.errors.NotFound:
            client.containers.run(
                image,
                name=f"{name}-app",
                detach=True,
                environment={**spec.runtime.env, **env, "PORT": str(spec.runtime.port)},
                labels=labels | {"io.immutable.role": "app"},
                network=network.name,
                networking_config={network.name: client.api.create_endpoint_config(aliases=[APP_ALIAS])},
            )
    except Exception:
        destroy(name)
        raise
    return Environment(name=name, image=image, url=f"http://{APP_ALIAS}:{spec.runtime.port}")


def _probe(environment: Environment, command: list[str], *, env: dict[str, str] | None = None) -> tuple[int, str]:
    client = docker_client()
    container = client.containers.create(
        environment.image,
        command,
        network=environment.name,
        environment=env or {},
        labels={MANAGED_LABEL: "true", ENV_LABEL: environment.name, "io.immutable.role": "probe"},
    )
    try:
        container.start()
        result = container.wait(timeout=1800)
        return int(result.get("StatusCode", 1)), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def probe_config(url: str, *, spec: AppSpec, checks: list[SmokeCheck], version: str) -> dict[str, Any]:
    """What PROBE_SCRIPT checks against the app at `url`; `{version}` in expected bodies is the release's."""
    return {
        "url": url,
        "health_path": spec.runtime.health_path,
        "timeout_s": spec.health.timeout_s,
        "checks": [
            {
                "path": c.path,
                "status": c.status,
                "body_contains": c.body_contains.replace("{version}", version) if c.body_contains else None,
            }
            for c in checks
        ],
    }


def smoke_checks(
    environment: Environment, *, spec: AppSpec, checks: list[SmokeCheck], version: str
) -> list[dict[str, Any]]:
    config = probe_config(environment.url, spec=spec, checks=checks, version=version)
    code, output = _probe(environment, ["python3", "-c", PROBE_SCRIPT, json.dumps(config)])
    if code != 0:
        raise EnvironmentError_(f"the probe container failed (exit {code}): {output[-1000:]}")
    return list(json.loads(output.strip().splitlines()[-1]))


def run_test_command(environment: Environment, command: list[str]) -> tuple[int, str]:
    return _probe(environment, [part.replace("{url}", environment.url) for part in command])


def app_logs(environment: Environment, tail: int = 40) -> str:
    import docker

    try:
        container = docker_client().containers.get(f"{environment.name}-app")
    except docker.errors.NotFound:
        return "(the app container is gone)"
    return str(container.logs(tail=tail).decode(errors="replace"))


def destroy(name: str) -> list[str]:
    """Remove every container and the network of environment `name`; returns what was removed."""
    client = docker_client()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{ENV_LABEL}={name}"}):
        container.remove(force=True)
        removed.append(f"container {container.name}")
    for network in client.networks.list(names=[name]):
        if network.name == name:
            network.remove()
            removed.append(f"network {network.name}")
    return removed


def leftovers(name: str) -> list[str]:
    client = docker_client()
    found = [c.name for c in client.containers.list(all=True, filters={"label": f"{ENV_LABEL}={name}"})]
    found += [n.name for n in client.networks.list(names=[name]) if n.name == name]
    return found
