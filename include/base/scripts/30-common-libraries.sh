#!/bin/sh
# Install the libraries and runtimes used across the fleet (COMMON_PACKAGES, space separated).
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ -n "${COMMON_PACKAGES:-}" ]; then
    apt-get install -y -q --no-install-recommends ${COMMON_PACKAGES}
fi
