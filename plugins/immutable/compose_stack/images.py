"""The stack's images: Airflow, Postgres and Redis built FROM the pipeline's base image, by digest."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutable.compose_stack.settings import ComposeError, say
from immutable.paths import PROJECT_ROOT

AIRFLOW_CONTEXT = PROJECT_ROOT / "include" / "airflow"
SERVICE_CONTEXTS = {
    "postgres": PROJECT_ROOT / "include" / "compose" / "postgres",
    "redis": PROJECT_ROOT / "include" / "compose" / "redis",
}
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_TIMEOUT_S = 1800  # seconds: the Airflow image's pip install runs through a proxy here


@dataclass(frozen=True)
class Images:
    base: str  # <build registry>/immutable/base@sha256:...
    airflow: str
    postgres: str
    redis: str


def current_base(tag: str = "candidate") -> str:
    """The base image the pipeline published on `tag`, by digest, pulled into the engine."""
    from immutable.config import load_base_spec, load_platform
    from immutable.images.base import pull_candidate
    from immutable.registry import RegistryClient

    spec, platform = load_base_spec(), load_platform()
    digest = RegistryClient(platform.build_registry).manifest_digest(spec.repository, tag)
    if digest is None:
        raise ComposeError(
            f"there is no {spec.repository}:{tag} in the build registry {platform.build_registry}; the Airflow "
            "image is built on the base image the pipeline produces. Build one first: `make demo` (its first "
            "step), or trigger the base_image DAG, then run this again."
        )
    return pull_candidate(spec, platform, digest)


def host_pip_indexes() -> dict[str, str]:
    """The host's pip index settings (environment first, then pip's config), http(s) only: a
    file:// index of the host does not exist inside a build container."""
    found: dict[str, str] = {}
    for key, env in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = os.environ.get(env)
        if value is None:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", f"global.{key}"], capture_output=True, text=True
            )
            value = done.stdout.strip() if done.returncode == 0 else ""
        urls = [url for url in value.split() if url.startswith(("http://", "https://"))]
        if urls:
            found[env] = " ".join(urls)
    return found


def host_ca_bundle() -> bytes:
    """The host's CA bundle, so the build trusts what the host trusts (a TLS-inspecting proxy);
    IMMUTABLE_BUILD_CA_BUNDLE names another file, empty disables it."""
    configured = os.environ.get("IMMUTABLE_BUILD_CA_BUNDLE", HOST_CA_BUNDLE)
    return Path(configured).read_bytes() if configured and Path(configured).is_file() else b""


# Test and lint tools of requirements.txt that no DAG or plugin imports: left out of the image.
DEV_ONLY = frozenset({"moto", "pytest", "selenium", "ruff", "mypy"})


def _pin_name(line: str) -> str:
    return line.split("#", 1)[0].split("==", 1)[0].split("[", 1)[0].strip().lower().replace("_", "-")


def image_requirements(requirements: str) -> str:
    """requirements.txt without the DEV_ONLY tools."""
    return "".join(f"{line}\n" for line in requirements.splitlines() if _pin_name(line) not in DEV_ONLY)


def image_constraints(constraints: str, overrides: str) -> str:
    """constraints.txt with the pins of include/airflow/constraints-overrides.txt swapped in."""
    pins = {_pin_name(line): line.split("#", 1)[0].strip() for line in overrides.splitlines() if "==" in line}
    out = []
    for line in constraints.splitlines():
        name = _pin_name(line)
        out.append(pins.pop(name) if "==" in line and name in pins else line)
    if pins:
        raise ComposeError(f"constraints-overrides.txt pins {sorted(pins)}, which constraints.txt does not: drop them")
    return "\n".join(out) + "\n"


def airflow_context() -> bytes:
    files: dict[str, bytes] = {
        path.name: path.read_bytes() for path in sorted(AIRFLOW_CONTEXT.iterdir()) if path.is_file()
    }
    files["requirements.txt"] = image_requirements((PROJECT_ROOT / "requirements.txt").read_text()).encode()
    constraints = (PROJECT_ROOT / "constraints.txt").read_text()
    overrides = (AIRFLOW_CONTEXT / "constraints-overrides.txt").read_text()
    files["constraints.txt"] = image_constraints(constraints, overrides).encode()
    files["build-ca.crt"] = host_ca_bundle()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _build(
    name: str,
    tag: str,
    base: str,
    *,
    context: bytes | None = None,
    path: Path | None = None,
    args: dict[str, str] | None = None,
) -> None:
    from immutable.images.engine import docker_client

    client = docker_client(timeout_s=BUILD_TIMEOUT_S)
    labels = {
        "org.opencontainers.image.base.name": base.split("@", 1)[0],
        "org.opencontainers.image.base.digest": base.split("@", 1)[1],
    }
    options: dict[str, Any] = {
        "tag": tag,
        "buildargs": {"BASE_IMAGE": base, **(args or {})},
        "labels": labels,
        "rm": True,
        "forcerm": True,
        "decode": True,
    }
    if context is not None:
        options |= {"fileobj": io.BytesIO(context), "custom_context": True}
    else:
        options["path"] = str(path)
    started, recent = time.monotonic(), list[str]()
    for chunk in client.api.build(**options):
        line = str(chunk.get("stream", "")).rstrip()
        if line:
            recent = [*recent, line][-40:]
            if line.startswith("Step "):
                say(f"{name}: {line[:160]}")
        if "error" in chunk:
            shown = "\n".join(recent)
            raise ComposeError(f"building the {name} image on {base} failed: {chunk['error'].strip()}\n{shown}")
    say(f"{name}: built {tag} in {time.monotonic() - started:.0f}s")


def build_images(base: str | None = None, *, official_images: bool = False) -> Images:
    """The stack's three images, FROM `base` (default: the current candidate) by digest. The
    engine's cache makes a rebuild on the same base and requirements take seconds. With
    `official_images`, Postgres and Redis are the official images (pulled by compose) instead."""
    base = base or current_base()
    if "@sha256:" not in base:
        raise ComposeError(f"the base image must be pinned by digest (repo@sha256:...), not {base}")
    short = base.split("@sha256:", 1)[1][:12]
    images = Images(
        base=base,
        airflow=f"immutable/airflow:base-{short}",
        postgres=f"immutable/compose-postgres:base-{short}",
        redis=f"immutable/compose-redis:base-{short}",
    )
    say(f"base image: {base}")
    if not official_images:
        _build("postgres", images.postgres, base, path=SERVICE_CONTEXTS["postgres"])
        _build("redis", images.redis, base, path=SERVICE_CONTEXTS["redis"])
    _build("airflow", images.airflow, base, context=airflow_context(), args=host_pip_indexes())
    return images
