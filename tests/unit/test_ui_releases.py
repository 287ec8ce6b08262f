"""The Releases page: what it shows per app and region, served by the app the plugin mounts."""

from __future__ import annotations

import html

from fastapi.testclient import TestClient

from immutable.ui.releases import UNREADABLE, Placement, create_app, render_page

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
PLACEMENTS = [
    Placement(
        "sample",
        "eu-west",
        {"color": "green", "version": "1.1.0", "digest": DIGEST_B, "size": 2},
        {"color": "blue", "version": "1.0.0", "digest": DIGEST_A},
    ),
    Placement("sample", "us-east", {"color": "blue", "version": "1.0.0", "digest": DIGEST_A, "size": 2}, None),
    Placement("<b>app</b>", "ap-south", None, None),
]


def test_the_page_shows_live_and_kept_per_app_and_region() -> None:
    page = render_page(PLACEMENTS)
    rows = page.split("<tbody>", 1)[1].split("</tr>")
    assert "eu-west" in rows[0] and "1.1.0" in rows[0] and "green" in rows[0] and DIGEST_B[:19] in rows[0]
    assert "1.0.0 (blue)" in rows[0]
    assert f'title="{DIGEST_B}"' in rows[0]  # the whole digest on hover
    assert "us-east" in rows[1] and rows[1].endswith('<td title="">-</td>')  # nothing kept
    assert "(nothing live)" in rows[2]
    assert "<b>app</b>" not in page and "&lt;b&gt;app&lt;/b&gt;" in page


def test_an_empty_platform_says_so() -> None:
    assert "No app has been released yet." in render_page([])


def test_the_app_serves_the_page_and_json() -> None:
    """Without Airflow's sign-in check, which needs Airflow's API server (the e2e test checks it)."""
    client = TestClient(create_app(read=lambda: PLACEMENTS, signed_in=False))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "1.0.0 (blue)" in page.text
    body = client.get("/api").json()
    assert body["note"] == ""
    assert body["placements"][0] == {
        "app": "sample",
        "region": "eu-west",
        "live": PLACEMENTS[0].live,
        "kept": PLACEMENTS[0].kept,
    }


def test_a_platform_that_cannot_be_read_is_said_on_the_page() -> None:
    def read() -> list[Placement]:
        raise ConnectionError("the Docker engine is not running")

    client = TestClient(create_app(read=read, signed_in=False))
    note = UNREADABLE.format(error="the Docker engine is not running")
    assert client.get("/").status_code == 200
    assert note in html.unescape(client.get("/").text)
    assert client.get("/api").json() == {"placements": [], "note": note}
