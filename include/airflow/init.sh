#!/bin/sh
# The compose stack's one-shot init: migrate the metadata database, then create the admin
# user (SimpleAuthManager: its password file, from the generated env file's ADMIN_PASSWORD).
set -eu
: "${ADMIN_USER:?the compose env file sets ADMIN_USER; generate it with python -m immutable.compose env}"
: "${ADMIN_PASSWORD:?the compose env file sets ADMIN_PASSWORD; generate it with python -m immutable.compose env}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?where the api-server reads the passwords}"
airflow db migrate
umask 077
tmp="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE.tmp"
python3 -c 'import json, os, sys; json.dump({os.environ["ADMIN_USER"]: os.environ["ADMIN_PASSWORD"]}, sys.stdout)' > "$tmp"
mv "$tmp" "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
echo "admin user ${ADMIN_USER}: ready"
