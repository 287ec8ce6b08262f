"""The "Releases" page in the Airflow UI's navigation: what runs where, per app and region, with
what is kept for rollback. Airflow imports this file in every component, so the page's code is
imported only here and builds its app lazily on the first request. Also the listener that undoes
a release run marked failed by hand (immutable.stop_listener)."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from immutable import stop_listener

URL_PREFIX = "/releases"


class _LazyApp:
    """An ASGI app that builds the FastAPI app (and imports FastAPI) on the first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from immutable.ui.releases import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


FASTAPI_APPS = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "Releases"}]
EXTERNAL_VIEWS = [
    {
        "name": "Releases",
        "href": f"{URL_PREFIX}/",  # the app above, framed inside the UI at /plugin/releases
        "url_route": "releases",
        "destination": "nav",
        "nav_top_level": True,
    }
]


LISTENERS: list[object] = [stop_listener]


class ReleasesPlugin(AirflowPlugin):
    name = "immutable_releases"
    fastapi_apps = FASTAPI_APPS
    external_views = EXTERNAL_VIEWS
    listeners = LISTENERS
