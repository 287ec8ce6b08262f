#!/bin/sh
# Loopback only (the stack shares the host's network) and a password: other local users must
# not drive the workers. The broker keeps nothing on disk: the scheduler re-queues what is lost.
set -eu
: "${REDIS_PASSWORD:?the compose env file sets REDIS_PASSWORD}"
conf=$(mktemp)
cat > "$conf" <<CONF
bind 127.0.0.1
port ${REDIS_PORT:-6379}
protected-mode yes
requirepass ${REDIS_PASSWORD}
save ""
appendonly no
dir /tmp
CONF
exec redis-server "$conf"
