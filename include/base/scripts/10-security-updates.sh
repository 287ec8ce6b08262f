#!/bin/sh
# Apply every pending update, security suite included.
# APT_SOURCES: deb822 text of the archives to use (taken from the build host's own sources).
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ -n "${APT_SOURCES:-}" ]; then
    rm -f /etc/apt/sources.list
    printf '%s\n' "$APT_SOURCES" > /etc/apt/sources.list.d/debian.sources
fi
apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade
