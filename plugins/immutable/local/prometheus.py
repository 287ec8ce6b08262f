"""One Prometheus for all regions: scrapes every region's HAProxy and the app containers.

HAProxy exporters are static targets (one per region, labelled `region`). App containers come and
go with releases, so they are file-based service discovery targets: one JSON file per
app/region/color under state_dir/prometheus/targets/, written atomically, re-read every second.

The clients answer the questions release gates ask (error ratio, latency) as plain floats: a
query must aggregate to at most one series, which keeps a gate from comparing the wrong thing.
`AsyncPrometheusClient` is the same for Airflow triggers, which must never block their event loop.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from immutable.config import PlatformConfig
from immutable.local.loadbalancer import write_atomically
from immutable.local.services import Service

log = logging.getLogger(__name__)

SCRAPE_INTERVAL = "1s"
FILE_SD_REFRESH = "1s"
RETENTION = "1d"
HTTP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
MAX_RANGE_POINTS = 11000  # Prometheus refuses longer ranges per series
HAPROXY_JOB = "haproxy"
APPS_JOB = "apps"

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # apps, regions, colors
LABEL_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PrometheusError(RuntimeError):
    """A query failed or returned something a gate cannot use; the message names the query."""


def targets_dir(state_dir: Path) -> Path:
    return state_dir / "prometheus" / "targets"


def render_config(platform: PlatformConfig, state_dir: Path | None = None) -> str:
    """prometheus.yml: HAProxy exporters of every region plus file-discovered app containers."""
    if state_dir is None:
        from immutable.config import state_dir as default_state_dir

        state_dir = default_state_dir()
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,  # may not exceed the interval (the 10s default would)
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": HAPROXY_JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{r.lb_admin_port}"], "labels": {"region": r.name}}
                    for r in platform.regions
                ],
            },
            {
                "job_name": APPS_JOB,
                "metrics_path": "/metrics",
                "file_sd_configs": [
                    {"files": [str(targets_dir(state_dir) / "*.json")], "refresh_interval": FILE_SD_REFRESH}
                ],
            },
        ],
    }
    header = "# Written by immutable.local.prometheus at every start; edits are lost.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("Prometheus is not installed. Debian: `apt-get install prometheus` (2.42 or newer)")
    return found


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def prometheus_service(platform: PlatformConfig, state_dir: Path) -> Service:
    """Prometheus on 127.0.0.1:<prometheus_port>, data under state_dir/prometheus/data, kept 1 day."""
    home = state_dir / "prometheus"
    targets_dir(state_dir).mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    write_atomically(config, render_config(platform, state_dir))
    port = platform.local.prometheus_port
    return Service(
        name="prometheus",
        argv=[
            prometheus_binary(),
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            "--log.level=warn",
        ],
        run_dir=state_dir / "run",
        ready=functools.partial(_ready, port),
        ready_timeout_s=READY_TIMEOUT_S,
        port=port,
    )


# --- app targets ------------------------------------------------------------------------------


def _targets_file(state_dir: Path, app: str, region: str, color: str) -> Path:
    for what, value in (("app", app), ("region", region), ("color", color)):
        if not NAME_PATTERN.match(value):
            raise PrometheusError(f"{what} '{value}' must match {NAME_PATTERN.pattern} to name a targets file")
    return targets_dir(state_dir) / f"{app}__{region}__{color}.json"


def write_targets(
    state_dir: Path,
    app: str,
    region: str,
    color: str,
    targets: Sequence[tuple[str, int]],
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Scrape these host:port targets as app/region/color (+ labels such as version, digest).

    Written to a temp file then renamed, so Prometheus never reads half a file. No targets
    removes the file.
    """
    path = _targets_file(state_dir, app, region, color)
    if not targets:
        remove_targets(state_dir, app, region, color)
        return path
    extra = dict(labels or {})
    bad = sorted(k for k in extra if not LABEL_PATTERN.match(k) or k.startswith("__"))
    if bad:
        raise PrometheusError(f"label names {bad} are not valid Prometheus label names ({LABEL_PATTERN.pattern})")
    group = {
        "targets": [f"{host}:{port}" for host, port in targets],
        "labels": {**{k: str(v) for k, v in extra.items()}, "app": app, "region": region, "color": color},
    }
    write_atomically(path, json.dumps([group], indent=2) + "\n")
    log.info("prometheus targets %s: %s", path.name, group["targets"])
    return path


def remove_targets(state_dir: Path, app: str, region: str, color: str) -> None:
    """Stop scraping app/region/color; idempotent."""
    _targets_file(state_dir, app, region, color).unlink(missing_ok=True)


# --- querying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]


def _instant_params(promql: str, at: float | None) -> dict[str, str]:
    params = {"query": promql}
    if at is not None:
        params["time"] = repr(float(at))
    return params


def _range_params(promql: str, start: float, end: float, step_s: float) -> dict[str, str]:
    if not step_s > 0 or not math.isfinite(step_s):
        raise PrometheusError(f"query_range `{promql}`: step must be > 0 seconds, got {step_s}")
    if end < start:
        raise PrometheusError(f"query_range `{promql}`: end {end} is before start {start}")
    if (end - start) / step_s > MAX_RANGE_POINTS:
        raise PrometheusError(
            f"query_range `{promql}`: {(end - start) / step_s:.0f} points per series exceed Prometheus' "
            f"{MAX_RANGE_POINTS}; use a larger step or a shorter range"
        )
    return {"query": promql, "start": repr(float(start)), "end": repr(float(end)), "step": repr(float(step_s))}


def _data(promql: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success":
        detail = f"{body.get('errorType')}: {body.get('error')}" if isinstance(body, dict) else response.text[:300]
        raise PrometheusError(f"query `{promql}` failed (HTTP {response.status_code}): {detail}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"query `{promql}`: answer without data: {str(body)[:300]}")
    return data


def _series(promql: str, data: Mapping[str, Any]) -> list[Series]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [Series({}, [(float(result[0]), float(result[1]))])]
    if kind == "vector" and isinstance(result, list):
        return [Series(r.get("metric", {}), [(float(r["value"][0]), float(r["value"][1]))]) for r in result]
    if kind == "matrix" and isinstance(result, list):
        return [Series(r.get("metric", {}), [(float(t), float(v)) for t, v in r["values"]]) for r in result]
    raise PrometheusError(f"query `{promql}`: unexpected result type {kind!r}")


def _single(promql: str, series: list[Series]) -> Series | None:
    if len(series) > 1:
        shown = [s.labels for s in series[:5]]
        raise PrometheusError(
            f"query `{promql}` returned {len(series)} series ({shown}...); a gate needs one: aggregate it, "
            "e.g. sum(...) or sum by () (...)"
        )
    return series[0] if series else None


def _connect_error(promql: str, base_url: str, exc: httpx.HTTPError) -> PrometheusError:
    return PrometheusError(
        f"query `{promql}`: Prometheus at {base_url} did not answer: {exc!r}. Is it running (service 'prometheus')?"
    )


class PrometheusClient:
    """Blocking client for tasks and tests."""

    def __init__(self, base_url: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, promql: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.base_url}{path}", params=params, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise _connect_error(promql, self.base_url, exc) from exc
        return _data(promql, response)

    def query_series(self, promql: str, at: float | None = None) -> list[Series]:
        """Every series of an instant query (one point each)."""
        return _series(promql, self._get(promql, "/api/v1/query", _instant_params(promql, at)))

    def query(self, promql: str, at: float | None = None) -> float | None:
        """The value of a query that yields one series, at `at` (default now); None when no data."""
        found = _single(promql, self.query_series(promql, at))
        return found.points[0][1] if found else None

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[tuple[float, float]]:
        """(timestamp, value) of the single resulting series; [] when there is no data."""
        data = self._get(promql, "/api/v1/query_range", _range_params(promql, start, end, step_s))
        found = _single(promql, _series(promql, data))
        return found.points if found else []


class AsyncPrometheusClient:
    """The same as PrometheusClient without blocking: for Airflow triggers (a shared event loop).

    With `client` (an open httpx.AsyncClient, owned by the caller) every query reuses its
    connections: a gate asks several queries per interval for many minutes. Without one, each
    query opens and closes its own.
    """

    def __init__(
        self, base_url: str, timeout_s: float = HTTP_TIMEOUT_S, client: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client = client

    async def _get(self, promql: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            if self.client is not None:
                response = await self.client.get(url, params=params, timeout=self.timeout_s)
            else:
                async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                    response = await client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise _connect_error(promql, self.base_url, exc) from exc
        return _data(promql, response)

    async def query_series(self, promql: str, at: float | None = None) -> list[Series]:
        return _series(promql, await self._get(promql, "/api/v1/query", _instant_params(promql, at)))

    async def query(self, promql: str, at: float | None = None) -> float | None:
        found = _single(promql, await self.query_series(promql, at))
        return found.points[0][1] if found else None

    async def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[tuple[float, float]]:
        data = await self._get(promql, "/api/v1/query_range", _range_params(promql, start, end, step_s))
        found = _single(promql, _series(promql, data))
        return found.points if found else []
