"""The smoke probe every platform runs against a dev or staging environment: the script (Python's
standard library only, so it runs in the app image or on an instance) and its configuration. Pure:
the local and aws environments both use it, and neither imports the other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from immutable.app_spec import AppSpec, SmokeCheck

# Runs inside a probe container or on the instance (Python's standard library only): waits for health, then checks.
PROBE_SCRIPT = r"""
import json, sys, time, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
def get(path):
    try:
        with urllib.request.urlopen(cfg["url"] + path, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)
deadline = time.monotonic() + cfg["timeout_s"]
status, body = None, ""
while time.monotonic() < deadline:
    status, body = get(cfg["health_path"])
    if status == 200:
        break
    time.sleep(0.5)
results = [{"check": "health " + cfg["health_path"], "passed": status == 200,
            "detail": "answered %s: %s" % (status, body.strip()[:200])}]
if status == 200:
    for c in cfg["checks"]:
        s, b = get(c["path"])
        ok = s == c["status"] and (c["body_contains"] is None or c["body_contains"] in b)
        want = "%s%s" % (c["status"], " containing %r" % c["body_contains"] if c["body_contains"] else "")
        results.append({"check": "GET " + c["path"], "passed": ok,
                        "detail": "wanted %s, got %s: %s" % (want, s, b.strip()[:200])})
print(json.dumps(results))
"""


def probe_config(url: str, *, spec: AppSpec, checks: list[SmokeCheck], version: str) -> dict[str, Any]:
    """What PROBE_SCRIPT checks against the app at `url`; `{version}` in expected bodies is the release's."""
    return {
        "url": url,
        "health_path": spec.runtime.health_path,
        "timeout_s": spec.health.timeout_s,
        "checks": [
            {
                "path": c.path,
                "status": c.status,
                "body_contains": c.body_contains.replace("{version}", version) if c.body_contains else None,
            }
            for c in checks
        ],
    }
