"""What runs where, per app and region, read from the platform itself (load balancer weights and
the image labels of what runs: containers locally, Auto Scaling groups' tags on aws), never from
Airflow: the version, digest and color live now, the previous one kept for a fast rollback, and
the base under the live image (its version and digest, from the image's verified provenance),
with the apps still on an older base than stable: what a security rebuild has not reached yet.
The demo's summary and the UI's "Releases" page both show this.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from immutable.config import PlatformConfig
    from immutable.platforms.interface import Platform

UNREADABLE = "The platform could not be read: {error}"


@dataclass(frozen=True)
class Placement:
    """One app in one region: what takes traffic, and what a rollback would flip back to."""

    app: str
    region: str
    live: dict[str, Any] | None  # {"color", "version", "digest", "size"}; None when nothing serves
    kept: dict[str, Any] | None  # {"color", "version", "digest"} of the previous color, if it still runs
    base: dict[str, Any] | None = None  # {"version", "digest"} under the live image, or {"error"}
    sbom: str | None = None  # where the live image's SBOM is read (its signature covers it)
    revoked: list[dict[str, Any]] | None = None  # revocation records of the live image and of its base


def base_under(labels: dict[str, str]) -> dict[str, Any]:
    """The base an app image was baked on, from its provenance labels (older images carry the base's
    version only inside its name, `<repository>:<version>`)."""
    from immutable.provenance import LABEL_BASE_DIGEST, LABEL_BASE_NAME, LABEL_BASE_VERSION

    version = labels.get(LABEL_BASE_VERSION) or labels.get(LABEL_BASE_NAME, "").rpartition(":")[2]
    return {"version": version or None, "digest": labels.get(LABEL_BASE_DIGEST)}


def behind_stable(placements: list[Placement], stable: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Where the live image's base is older than the stable base (or cannot be told): the places a
    security rebuild promoted to stable has not reached. Pure."""
    from immutable.versioning import parse_version

    if not stable:
        return []
    stable_key = parse_version(str(stable.get("version")))
    behind = []
    for p in placements:
        base = p.base or {}
        if p.live is None or base.get("digest") == stable.get("digest"):
            continue
        key = parse_version(str(base.get("version")))
        if key is None or stable_key is None or key < stable_key:
            behind.append({"app": p.app, "region": p.region, "base_version": base.get("version") or "unknown"})
    return behind


def what_runs_where(apps: list[str] | None = None, platform: PlatformConfig | None = None) -> list[Placement]:
    """Per app (every spec in include/apps/ unless named) and region of its rollout, read live."""
    from immutable.app_spec import app_spec, load_app_specs
    from immutable.platforms import platform_for

    seam = platform_for(platform)
    platform = seam.config
    names = apps if apps is not None else sorted(load_app_specs()[0])
    production = seam.production
    placements = []
    for app in names:
        repository = app_spec(app).repository
        for region in app_spec(app).rollout_regions(platform):
            live = production.live(app, region)
            base, sbom, revoked = None, None, None
            if live is not None:
                try:  # the signature is checked too: a lineage read from unsigned labels proves nothing
                    base = base_under(seam.images.verify_in(region, repository, str(live["digest"])))
                    sbom = seam.images.sbom_url(region, repository, str(live["digest"]))
                    revoked = revocations_under(seam, repository, str(live["digest"]), base)
                except Exception as exc:
                    base = {"error": f"provenance unreadable: {exc}"}
            placements.append(Placement(app, region, live, production.kept(app, region), base, sbom, revoked))
    return placements


def revocations_under(seam: Platform, repository: str, digest: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The revocation records of a live image and of the base it was baked on (an image on a revoked
    base runs what was revoked too)."""
    from immutable.config import load_base_spec
    from immutable.revocation import revocation_of

    found = [revocation_of(seam, repository, digest)]
    if base.get("digest"):
        found.append(revocation_of(seam, load_base_spec().repository, str(base["digest"])))
    return [record.model_dump() for record in found if record is not None]


def stable_base(platform: PlatformConfig | None = None) -> dict[str, Any] | None:
    """The base image the stable channel names now: {"version", "digest"}, or None before the first promotion."""
    from immutable.base_policy import STABLE_TAG
    from immutable.config import load_base_spec
    from immutable.platforms import platform_for
    from immutable.provenance import LABEL_VERSION

    found = platform_for(platform).images.channel(load_base_spec().repository, STABLE_TAG)
    if found is None:
        return None
    digest, labels = found
    return {"version": labels.get(LABEL_VERSION), "digest": digest}


def short(digest: object) -> str:
    return str(digest)[:19] if digest else "-"


def base_text(base: dict[str, Any] | None) -> str:
    if not base:
        return "-"
    if "error" in base:
        return "(unreadable)"
    return f"{base.get('version') or '?'} {short(base.get('digest'))}"


def lineage_text(stable: dict[str, Any] | None, behind: list[dict[str, Any]]) -> list[str]:
    """What the page and the demo say about bases, one line each."""
    if not stable:
        return ["No stable base yet: promote_base promotes the candidate once every canary-tier app runs it."]
    lines = [f"Stable base: {stable.get('version')} ({stable.get('digest')})."]
    if not behind:
        return [*lines, "Every app runs on the stable base or a newer one."]
    return [
        *lines,
        "On an older base than stable: "
        + ", ".join(f"{b['app']} in {b['region']} ({b['base_version']})" for b in behind)
        + ".",
    ]


def revoked_section(placements: list[Placement]) -> str:
    """Revoked images that still take traffic: the first thing on the page, since each one is
    something to replace now (release a fixed version, or roll back)."""
    from immutable.revocation import revoked_running

    running = revoked_running(placements)
    if not running:
        return ""
    items = "".join(
        f"<li><strong>{html.escape(r['repository'])} {html.escape(r.get('version') or '')}</strong> "
        f"({html.escape(short(r['digest']))}) runs in {html.escape(', '.join(r['where']))}. Revoked by "
        f"{html.escape(r['revoked_by'])} at {html.escape(r['revoked_at'])}: {html.escape(r['reason'])}</li>"
        for r in running
    )
    return (
        "<div id='revoked' style='border:2px solid #b00;padding:.5em 1em;margin-bottom:1em'>"
        f"<h3 style='color:#b00'>Revoked images still running</h3><ul>{items}</ul>"
        "<p>Release a fixed version or roll back to replace each.</p></div>"
    )


def render_page(placements: list[Placement], note: str = "", stable: dict[str, Any] | None = None) -> str:
    """The page as plain HTML: it shows inside the Airflow UI's frame, without scripts."""
    rows = []
    for p in placements:
        live, kept, base = p.live or {}, p.kept or {}, p.base or {}
        cells = [
            p.app,
            p.region,
            str(live.get("version", "(nothing live)")),
            str(live.get("color", "-")),
            short(live.get("digest")),
            base_text(p.base),
            f"{kept['version']} ({kept['color']}) {short(kept.get('digest'))}" if kept else "-",
        ]
        base_title = str(base.get("error") or base.get("digest") or "")
        titles = ["", "", "", "", str(live.get("digest", "")), base_title, str(kept.get("digest", ""))]
        tds = "".join(f'<td title="{html.escape(t)}">{html.escape(c)}</td>' for c, t in zip(cells, titles, strict=True))
        sbom = f'<a href="{html.escape(p.sbom)}">CycloneDX</a>' if p.sbom else "-"
        rows.append(f"<tr>{tds}<td>{sbom}</td></tr>")
    if not placements and not note:
        note = "No app has been released yet."
    columns = ("app", "region", "version", "color", "digest", "base", "kept for rollback", "SBOM")
    head = "".join(f"<th>{h}</th>" for h in columns)
    lineage = "".join(f"<p>{html.escape(line)}</p>" for line in lineage_text(stable, behind_stable(placements, stable)))
    revoked = revoked_section(placements)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Releases</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{padding:.35em .9em;border-bottom:1px solid #ddd;text-align:left}td{font-family:monospace}"
        "</style></head><body><h2>Releases: what runs where</h2>"
        "<p>Read from the platform itself (load balancer weights, the image labels of what runs) each time "
        "this page loads.</p>"
        + revoked
        + (f"<p><strong>{html.escape(note)}</strong></p>" if note else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{lineage}</body></html>"
    )


def create_app(
    read: Callable[[], list[Placement]] = what_runs_where,
    *,
    read_stable: Callable[[], dict[str, Any] | None] = stable_base,
    signed_in: bool = True,
) -> FastAPI:
    """The page (/) and the same as JSON (/api), for the Airflow plugin to mount. `read` is how
    the placements are found, `read_stable` the stable base: the platform itself, unless a test
    hands in its own.

    `signed_in`: only users signed in to Airflow see it (the UI's session cookie or a bearer
    token, checked by Airflow's auth manager, which exists only inside Airflow's API server).
    """
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse

    dependencies = []
    if signed_in:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        dependencies.append(Depends(requires_authenticated()))
    app = FastAPI(title="Releases", description="What runs where, read from the platform", dependencies=dependencies)

    def placements() -> tuple[list[Placement], dict[str, Any] | None, str]:
        # A platform that cannot be read (engine stopped, AWS unreachable) is said on the page, not a 500.
        try:
            return read(), read_stable(), ""
        except Exception as exc:
            return [], None, UNREADABLE.format(error=exc)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        found, stable, note = placements()
        return render_page(found, note, stable)

    @app.get("/api")
    def api() -> dict[str, Any]:
        from immutable.revocation import revoked_running

        found, stable, note = placements()
        return {
            "placements": [asdict(p) for p in found],
            "stable_base": stable,
            "behind_stable": behind_stable(found, stable),
            "revoked_running": revoked_running(found),
            "note": note,
        }

    return app
