"""The sample service's server: a client hanging up (a load balancer's health check resets its
connection once a second) prints nothing; any other error in a request still prints its traceback."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include" / "apps" / "sample" / "src"))

from sample_app.server import Server


def error_output(server: Server, error: Exception, capsys: pytest.CaptureFixture[str]) -> str:
    try:
        raise error
    except Exception:
        server.handle_error(None, ("127.0.0.1", 40000))
    return capsys.readouterr().err


def test_a_client_that_hangs_up_prints_nothing_and_other_errors_print_their_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        assert error_output(server, ConnectionResetError(104, "Connection reset by peer"), capsys) == ""
        assert error_output(server, BrokenPipeError(32, "Broken pipe"), capsys) == ""
        said = error_output(server, ValueError("a bug in a handler"), capsys)
        assert "Traceback" in said and "ValueError: a bug in a handler" in said
    finally:
        server.server_close()


def test_the_late_faults_clock_starts_at_the_first_request_to_the_root_not_at_the_servers_start() -> None:
    from sample_app.server import TrafficClock

    clock = TrafficClock()
    assert clock.seconds(start=False) == 0.0  # health checks and scrapes do not start it
    assert clock.seconds(start=True) == 0.0  # the first request to /
    first = clock.first
    assert first is not None
    assert clock.seconds(start=True) >= 0.0 and clock.first == first  # later requests do not restart it
    clock.first = first - 20.0  # as if the first request came 20 s ago
    assert clock.seconds(start=False) >= 20.0
