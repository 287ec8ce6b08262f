"""What runs where, per app and region, read from the platform itself (load balancer weights and
the image labels of what runs: containers locally, Auto Scaling groups' tags on aws), never from
Airflow: the version, digest and color live now, and the previous one kept for a fast rollback.
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

UNREADABLE = "The platform could not be read: {error}"


@dataclass(frozen=True)
class Placement:
    """One app in one region: what takes traffic, and what a rollback would flip back to."""

    app: str
    region: str
    live: dict[str, Any] | None  # {"color", "version", "digest", "size"}; None when nothing serves
    kept: dict[str, Any] | None  # {"color", "version", "digest"} of the previous color, if it still runs


def what_runs_where(apps: list[str] | None = None, platform: PlatformConfig | None = None) -> list[Placement]:
    """Per app (every spec in include/apps/ unless named) and region of its rollout, read live."""
    from immutable.app_spec import app_spec, load_app_specs
    from immutable.platforms import platform_for

    seam = platform_for(platform)
    platform = seam.config
    names = apps if apps is not None else sorted(load_app_specs()[0])
    production = seam.production
    return [
        Placement(app, region, production.live(app, region), production.kept(app, region))
        for app in names
        for region in app_spec(app).rollout_regions(platform)
    ]


def short(digest: object) -> str:
    return str(digest)[:19] if digest else "-"


def render_page(placements: list[Placement], note: str = "") -> str:
    """The page as plain HTML: it shows inside the Airflow UI's frame, without scripts."""
    rows = []
    for p in placements:
        live, kept = p.live or {}, p.kept or {}
        cells = [
            p.app,
            p.region,
            str(live.get("version", "(nothing live)")),
            str(live.get("color", "-")),
            short(live.get("digest")),
            f"{kept['version']} ({kept['color']}) {short(kept.get('digest'))}" if kept else "-",
        ]
        titles = ["", "", "", "", str(live.get("digest", "")), str(kept.get("digest", ""))]
        tds = "".join(f'<td title="{html.escape(t)}">{html.escape(c)}</td>' for c, t in zip(cells, titles, strict=True))
        rows.append(f"<tr>{tds}</tr>")
    if not placements and not note:
        note = "No app has been released yet."
    head = "".join(f"<th>{h}</th>" for h in ("app", "region", "version", "color", "digest", "kept for rollback"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Releases</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{padding:.35em .9em;border-bottom:1px solid #ddd;text-align:left}td{font-family:monospace}"
        "</style></head><body><h2>Releases: what runs where</h2>"
        "<p>Read from the platform itself (load balancer weights, the image labels of what runs) each time "
        "this page loads.</p>"
        + (f"<p><strong>{html.escape(note)}</strong></p>" if note else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )


def create_app(read: Callable[[], list[Placement]] = what_runs_where, *, signed_in: bool = True) -> FastAPI:
    """The page (/) and the same as JSON (/api), for the Airflow plugin to mount. `read` is how
    the placements are found: the platform itself, unless a test hands in its own.

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

    def placements() -> tuple[list[Placement], str]:
        # A platform that cannot be read (engine stopped, AWS unreachable) is said on the page, not a 500.
        try:
            return read(), ""
        except Exception as exc:
            return [], UNREADABLE.format(error=exc)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        found, note = placements()
        return render_page(found, note)

    @app.get("/api")
    def api() -> dict[str, Any]:
        found, note = placements()
        return {"placements": [asdict(p) for p in found], "note": note}

    return app
