"""The Releases page: what it shows per app and region, served by the app the plugin mounts."""

from __future__ import annotations

import html

from fastapi.testclient import TestClient

from immutable.ui.releases import UNREADABLE, Placement, base_under, behind_stable, create_app, render_page

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
BASE_OLD = {"version": "2026.11.23.1", "digest": "sha256:" + "1" * 64}
BASE_STABLE = {"version": "2026.11.30.1", "digest": "sha256:" + "2" * 64}
BASE_CANDIDATE = {"version": "2026.12.01.1", "digest": "sha256:" + "3" * 64}
SBOM_URL = "http://127.0.0.1:5601/v2/apps/sample/blobs/sha256:" + "5" * 64
PLACEMENTS = [
    Placement(
        "sample",
        "eu-west",
        {"color": "green", "version": "1.1.0", "digest": DIGEST_B, "size": 2},
        {"color": "blue", "version": "1.0.0", "digest": DIGEST_A},
        BASE_STABLE,
        SBOM_URL,
    ),
    Placement(
        "sample", "us-east", {"color": "blue", "version": "1.0.0", "digest": DIGEST_A, "size": 2}, None, BASE_OLD
    ),
    Placement("<b>app</b>", "ap-south", None, None),
]


def test_the_page_shows_live_and_kept_per_app_and_region() -> None:
    page = render_page(PLACEMENTS)
    rows = page.split("<tbody>", 1)[1].split("</tr>")
    assert "eu-west" in rows[0] and "1.1.0" in rows[0] and "green" in rows[0] and DIGEST_B[:19] in rows[0]
    assert "1.0.0 (blue)" in rows[0]
    assert f'title="{DIGEST_B}"' in rows[0]  # the whole digest on hover
    assert f'title="{BASE_STABLE["digest"]}">2026.11.30.1 {BASE_STABLE["digest"][:19]}</td>' in rows[0]  # its base
    assert rows[0].endswith(f'<td><a href="{SBOM_URL}">CycloneDX</a></td>')  # the SBOM, linked
    assert "us-east" in rows[1] and rows[1].endswith('<td title="">-</td><td>-</td>')  # nothing kept, no SBOM
    assert "(nothing live)" in rows[2]
    assert "<b>app</b>" not in page and "&lt;b&gt;app&lt;/b&gt;" in page


def test_an_empty_platform_says_so() -> None:
    assert "No app has been released yet." in render_page([])


def test_the_app_serves_the_page_and_json() -> None:
    """Without Airflow's sign-in check, which needs Airflow's API server (the e2e test checks it)."""
    client = TestClient(create_app(read=lambda: PLACEMENTS, read_stable=lambda: BASE_STABLE, signed_in=False))
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
        "base": BASE_STABLE,
        "sbom": SBOM_URL,
        "revoked": None,
    }
    assert body["stable_base"] == BASE_STABLE
    assert body["behind_stable"] == [{"app": "sample", "region": "us-east", "base_version": "2026.11.23.1"}]
    assert "On an older base than stable: sample in us-east (2026.11.23.1)." in page.text


def test_a_platform_that_cannot_be_read_is_said_on_the_page() -> None:
    def read() -> list[Placement]:
        raise ConnectionError("the Docker engine is not running")

    client = TestClient(create_app(read=read, signed_in=False))
    note = UNREADABLE.format(error="the Docker engine is not running")
    assert client.get("/").status_code == 200
    assert note in html.unescape(client.get("/").text)
    assert client.get("/api").json() == {
        "placements": [],
        "stable_base": None,
        "behind_stable": [],
        "revoked_running": [],
        "note": note,
    }


def test_the_base_under_an_image_is_read_from_its_provenance() -> None:
    digest = BASE_OLD["digest"]
    labels = {"org.opencontainers.image.base.digest": digest, "io.immutable.base.version": "2026.11.23.1"}
    assert base_under(labels) == BASE_OLD
    # An image baked before the version label: the version is the tag of the base's name.
    older = {"org.opencontainers.image.base.digest": digest, "org.opencontainers.image.base.name": "r/b:2026.11.23.1"}
    assert base_under(older) == BASE_OLD


def test_only_apps_on_an_older_base_than_stable_are_listed() -> None:
    live = {"color": "blue", "version": "1.0.0", "digest": DIGEST_A, "size": 2}
    placements = [
        Placement("on-stable", "eu-west", live, None, BASE_STABLE),
        Placement("on-candidate", "eu-west", live, None, BASE_CANDIDATE),  # newer than stable: ahead, not behind
        Placement("on-old", "eu-west", live, None, BASE_OLD),
        Placement("unreadable", "eu-west", live, None, {"error": "provenance unreadable: unsigned"}),
        Placement("nothing-live", "eu-west", None, None),
    ]
    assert [b["app"] for b in behind_stable(placements, BASE_STABLE)] == ["on-old", "unreadable"]
    assert behind_stable(placements, None) == []  # no stable base yet: nothing to be behind


def test_a_revoked_image_that_still_runs_is_the_first_thing_on_the_page_with_its_regions() -> None:
    revoked = {
        "kind": "app",
        "repository": "apps/sample",
        "digest": DIGEST_A,
        "version": "1.0.0",
        "reason": "leaks <tokens> in logs",
        "revoked_by": "alice",
        "revoked_at": "2026-12-01T10:00:00+00:00",
    }
    live = {"color": "blue", "version": "1.0.0", "digest": DIGEST_A, "size": 2}
    placements = [
        Placement("sample", "eu-west", live, None, BASE_STABLE, None, [revoked]),
        Placement("sample", "us-east", live, None, BASE_STABLE, None, [revoked]),
        Placement("other", "eu-west", live | {"digest": DIGEST_B}, None, BASE_STABLE, None, []),
    ]
    page = render_page(placements, stable=BASE_STABLE)
    body = page.split("<body>", 1)[1]
    section = body.split("<table>", 1)[0]
    assert body.index("Revoked images still running") < body.index("<table>")
    assert "apps/sample 1.0.0" in section and "sample in eu-west, sample in us-east" in section
    assert "alice" in section and "leaks &lt;tokens&gt; in logs" in section and "other" not in section
    assert "Revoked images" not in render_page(placements[2:], stable=BASE_STABLE)
    client = TestClient(create_app(read=lambda: placements, read_stable=lambda: BASE_STABLE, signed_in=False))
    running = client.get("/api").json()["revoked_running"]
    assert [(r["digest"], r["where"]) for r in running] == [(DIGEST_A, ["sample in eu-west", "sample in us-east"])]
