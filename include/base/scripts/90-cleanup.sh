#!/bin/sh
# Leave no caches in the image, and record what is installed for the package manifest.
set -eu
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
mkdir -p /usr/share/immutable
# Each binary package with its source package and version: security data (Debian's tracker) is per source.
dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n' \
    | sort > /usr/share/immutable/packages.tsv
echo "build version: ${BUILD_VERSION:-unknown}; run: ${BUILD_RUN:-unknown}" > /usr/share/immutable/build.txt
