#!/bin/sh
# First start: a cluster in the data volume with password (scram) auth and the Airflow database.
# Every start: listen on 127.0.0.1:$POSTGRES_PORT only (the stack shares the host's network).
set -eu
: "${POSTGRES_PASSWORD:?the compose env file sets POSTGRES_PASSWORD}"
user="${POSTGRES_USER:-airflow}"
db="${POSTGRES_DB:-airflow}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --auth=scram-sha-256 --encoding=UTF8 --locale=C
    rm -f "$pwfile"
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    echo "created database $db in $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port="${POSTGRES_PORT:-5432}" \
    -c unix_socket_directories=/tmp -c max_connections=200
