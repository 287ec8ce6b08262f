"""Where the tracker data comes from: fetched over HTTP (a real server on loopback) and cached for
one suite, the cache while fresh, a stale cache or the recorded excerpt when the tracker cannot be
reached, and a clear error when nothing answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from immutable.config import SecurityTracker
from immutable.security_tracker import TrackerUnavailable, for_suite, load

ROOT = Path(__file__).resolve().parents[2]
TRACKER = {
    "glibc": {
        "CVE-2023-4911": {
            "description": "ld.so GLIBC_TUNABLES overflow",
            "releases": {
                "bookworm": {"status": "resolved", "fixed_version": "2.36-9+deb12u3"},
                "bullseye": {"status": "resolved", "fixed_version": "0"},
            },
        }
    },
    "tar": {"CVE-2005-2541": {"releases": {"bullseye": {"status": "open"}}}},
}


@pytest.fixture()
def tracker_url() -> Iterator[str]:
    class Serve(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(TRACKER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tracker/data/json"
    server.shutdown()
    server.server_close()


def test_only_the_suites_entries_are_kept() -> None:
    kept = for_suite(TRACKER | {"_about": "notes"}, "bookworm")
    assert kept == {
        "glibc": {
            "CVE-2023-4911": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "2.36-9+deb12u3"}}}
        },
        "tar": {"CVE-2005-2541": {"releases": {}}},
    }


def test_fetched_once_then_read_from_the_cache_while_fresh(tracker_url: str, tmp_path: Path) -> None:
    settings = SecurityTracker(url=tracker_url, excerpt=None)
    fetched = load(settings, "bookworm", tmp_path, ROOT)
    assert fetched.source == tracker_url and fetched.age_s == 0.0
    assert "CVE-2023-4911" in fetched.entries["glibc"]
    again = load(SecurityTracker(url="http://127.0.0.1:9/nobody", excerpt=None), "bookworm", tmp_path, ROOT)
    assert again.entries == fetched.entries and again.source.endswith("(cached)")


def test_a_stale_cache_answers_when_the_tracker_does_not(
    tracker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load(SecurityTracker(url=tracker_url), "bookworm", tmp_path, ROOT)
    cache = tmp_path / "security-tracker" / "bookworm.json"
    two_days_ago = time.time() - 48 * 3600
    data = json.loads(cache.read_text()) | {"fetched_at": two_days_ago}
    cache.write_text(json.dumps(data))
    stale = load(SecurityTracker(url="http://127.0.0.1:9/nobody", excerpt=None), "bookworm", tmp_path, ROOT)
    assert stale.age_s is not None and stale.age_s > 47 * 3600
    assert "could not be fetched" in caplog.text and "using the copy fetched 48.0 h ago" in caplog.text


def test_the_recorded_excerpt_answers_when_nothing_else_does(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    found = load(SecurityTracker(url="http://127.0.0.1:9/nobody"), "bookworm", tmp_path, ROOT)
    assert found.age_s is None and found.source.endswith("(recorded excerpt)")
    assert found.entries["glibc"]["CVE-2023-4911"]["releases"]["bookworm"]["fixed_version"] == "2.36-9+deb12u3"
    assert "using the recorded excerpt include/base/security-tracker-excerpt.json" in caplog.text


def test_no_tracker_no_cache_no_excerpt_is_an_error_that_says_what_to_configure(tmp_path: Path) -> None:
    with pytest.raises(
        TrackerUnavailable, match=r"no excerpt is configured \(security_tracker in include/base/base.yaml\)"
    ):
        load(SecurityTracker(url="http://127.0.0.1:9/nobody", excerpt=None), "bookworm", tmp_path, ROOT)
