"""Connection settings for the standalone Airflow's SQLite metadata database (see localctl.airflow_env).

The scheduler, the dag-processor, the triggerer, the API server and every task write to one file;
under load a writer can wait more than pysqlite's default 5 seconds for the lock, and then fails
with "database is locked" (an HTTP 500 from the API, a failed heartbeat). A longer busy timeout
makes it wait instead.
"""

SQLITE_BUSY_TIMEOUT_S = 60.0

CONNECT_ARGS: dict[str, object] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
