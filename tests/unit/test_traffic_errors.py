"""How the traffic generator names a failed request's error: with what caused it."""

from __future__ import annotations

import httpx

from immutable.local.traffic import describe_error


def test_a_read_error_names_the_reset_beneath_it() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as reset:
            raise httpx.ReadError("") from reset
    except httpx.ReadError as exc:
        described = describe_error(exc)
    assert described == "ReadError <- ConnectionResetError: [Errno 104] Connection reset by peer"


def test_an_error_with_a_message_and_no_cause_is_named_with_its_message() -> None:
    assert describe_error(httpx.ConnectTimeout("timed out")) == "ConnectTimeout: timed out"
