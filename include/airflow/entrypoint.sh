#!/bin/sh
# Runs `airflow "$@"`. The compose services share the host's network namespace (the local
# platform listens on 127.0.0.1 only), so every container would report the host's name; the
# task instances' hostname and the Celery worker's name must tell containers apart, so each one
# is `<host>-<short container id>` (immutable.compose.worker_hostname reads IMMUTABLE_HOSTNAME).
# Health checks run through this script too, so they see the same name.
set -eu
if [ -z "${IMMUTABLE_HOSTNAME:-}" ]; then
    if [ -s /tmp/immutable-hostname ]; then
        IMMUTABLE_HOSTNAME=$(cat /tmp/immutable-hostname)
    else
        id=$(grep -o 'containers/[0-9a-f]\{64\}/' /proc/self/mountinfo 2>/dev/null | head -n 1 | cut -c12-23 || true)
        [ -n "$id" ] || id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
        IMMUTABLE_HOSTNAME="$(hostname)-$id"
        printf '%s\n' "$IMMUTABLE_HOSTNAME" > /tmp/immutable-hostname
    fi
fi
export IMMUTABLE_HOSTNAME
if [ "${1:-}" = celery ] && [ "${2:-}" = worker ]; then
    shift 2
    exec airflow celery worker --celery-hostname "$IMMUTABLE_HOSTNAME" "$@"
fi
exec airflow "$@"
