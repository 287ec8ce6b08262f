"""`python3 -m immutable.compose_stack.probe <job type>`: the compose stack's health check of its
dag-processor or triggerer, without starting Airflow.

`airflow jobs check` imports all of Airflow for each probe: seconds of CPU every minute per
service, and on a busy 2-core machine more than 45 s of wall time, so the probe timed out and the
service never turned healthy. This asks Postgres alone whether this container's newest running job
of that type has beaten its heart lately (the same question, Airflow's `job` table). The container's
name as Airflow records it is in /tmp/immutable-hostname (include/airflow/entrypoint.sh writes it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

JOB_TYPES = ("DagProcessorJob", "TriggererJob")
STALE_AFTER_S = 120.0  # Airflow's own thresholds are 30 to 50 s; a busy machine beats late
HOSTNAME_FILE = Path("/tmp/immutable-hostname")
HEARTBEAT_AGE = """
    SELECT extract(epoch FROM now() - max(latest_heartbeat))
    FROM job WHERE job_type = %s AND state = 'running' AND hostname = %s
"""


def heartbeat_age(job_type: str, hostname: str, database_url: str) -> float | None:
    """Seconds since the newest running job of `job_type` on `hostname` beat; None if there is none."""
    import psycopg2

    dsn = database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(dsn, connect_timeout=10) as connection, connection.cursor() as cursor:
        cursor.execute(HEARTBEAT_AGE, (job_type, hostname))
        row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


def verdict(job_type: str, age: float | None) -> tuple[int, str]:
    """(exit code, what to say): healthy when the newest heartbeat is at most STALE_AFTER_S old."""
    if age is None:
        return 1, f"no running {job_type} in this container yet"
    if age > STALE_AFTER_S:
        return 1, f"{job_type}: last heartbeat {age:.0f}s ago (more than {STALE_AFTER_S:.0f}s)"
    return 0, f"{job_type}: heartbeat {age:.0f}s ago"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in JOB_TYPES:
        print(f"usage: python3 -m immutable.compose_stack.probe {{{','.join(JOB_TYPES)}}}", file=sys.stderr)
        return 2
    hostname = HOSTNAME_FILE.read_text().strip() if HOSTNAME_FILE.exists() else ""
    code, said = verdict(args[0], heartbeat_age(args[0], hostname, os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    print(said)
    return code


if __name__ == "__main__":
    sys.exit(main())
