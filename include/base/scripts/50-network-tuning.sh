#!/bin/sh
# The sysctl drop-in is copied to /etc/sysctl.d by the build; check it is there and readable.
set -eu
test -r /etc/sysctl.d/60-immutable-net.conf
echo "sysctl drop-in: $(grep -c '=' /etc/sysctl.d/60-immutable-net.conf) settings"
