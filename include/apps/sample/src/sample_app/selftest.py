"""The staging test: exercise a running sample-app over HTTP and exit non-zero on any failure.

Usage: sample-app-selftest URL [REQUESTS]
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main() -> None:
    base = sys.argv[1].rstrip("/")
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    failures = []
    status, body = get(f"{base}/healthz")
    if status != 200:
        failures.append(f"/healthz answered {status}")
    status, body = get(f"{base}/version")
    if status != 200 or "version" not in json.loads(body or "{}"):
        failures.append(f"/version answered {status}: {body!r}")
    errors = sum(1 for _ in range(requests) if get(f"{base}/")[0] != 200)
    if errors:
        failures.append(f"{errors} of {requests} requests to / failed")
    status, body = get(f"{base}/metrics")
    if status != 200 or "sample_requests_total" not in body:
        failures.append("/metrics does not expose sample_requests_total")
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"selftest: {requests} requests, {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
