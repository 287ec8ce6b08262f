"""A real SMTP server on loopback (aiosmtpd) that keeps the mails it is sent: a mailbox's far end."""

from __future__ import annotations

import json
import socket
from collections.abc import Generator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def smtp_connection(port: int) -> str:
    """An Airflow SMTP connection (the JSON form of AIRFLOW_CONN_<ID>) to the receiver: no TLS, no login."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "immutable@localhost", "retry_limit": 1},
        }
    )


@contextmanager
def smtp_receiver(port: int = 0) -> Generator[tuple[int, list[EmailMessage]]]:
    """Yields the server's port and the list its mails are appended to, as they come."""
    from aiosmtpd.controller import Controller

    received: list[EmailMessage] = []

    class Keep:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            found = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(found, EmailMessage)
            received.append(found)
            return "250 Message accepted"

    controller = Controller(Keep(), hostname="127.0.0.1", port=port or free_port())
    controller.start()
    try:
        yield controller.port, received
    finally:
        controller.stop()


def html_text(mail: EmailMessage) -> str:
    """The mail's HTML part, as text."""
    part = mail.get_body(preferencelist=("html",))
    assert part is not None, mail
    return str(part.get_content())
