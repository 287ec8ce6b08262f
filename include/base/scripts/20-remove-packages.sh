#!/bin/sh
# Remove packages production servers never need (REMOVE_PACKAGES, space separated).
set -eu
export DEBIAN_FRONTEND=noninteractive
installed=""
for pkg in ${REMOVE_PACKAGES:-}; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        installed="$installed $pkg"
    fi
done
if [ -n "$installed" ]; then
    echo "removing:$installed"
    # Some of these are marked Essential; removing them is the point of a minimal image.
    apt-get -y -q --allow-remove-essential purge $installed
    apt-get -y -q autoremove --purge
fi
