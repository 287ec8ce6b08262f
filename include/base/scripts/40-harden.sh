#!/bin/sh
# Hardening that holds for a container and a VM image alike.
set -eu
# 1. Strip setuid/setgid bits except the allowlist (SETUID_ALLOWLIST, space separated paths).
find / -xdev -type f \( -perm -4000 -o -perm -2000 \) 2>/dev/null | while read -r f; do
    keep=no
    for allowed in ${SETUID_ALLOWLIST:-}; do
        [ "$f" = "$allowed" ] && keep=yes
    done
    if [ "$keep" = no ]; then
        echo "stripping setuid/setgid: $f"
        chmod ug-s "$f"
    fi
done
# 2. Lock root: no password login, no login shell.
passwd -l root >/dev/null 2>&1 || usermod -L root
usermod -s /usr/sbin/nologin root
# 3. The non-root runtime user that apps run as.
user="${RUNTIME_USER:-app}"
uid="${RUNTIME_UID:-10001}"
if ! id "$user" >/dev/null 2>&1; then
    groupadd --gid "$uid" "$user"
    useradd --no-log-init --uid "$uid" --gid "$uid" --create-home --home-dir "/home/$user" \
        --shell /usr/sbin/nologin "$user"
fi
# 4. Restrictive defaults: files created are not world-readable, no core dumps.
[ -f /etc/login.defs ] && sed -i "s/^UMASK.*/UMASK 027/" /etc/login.defs
mkdir -p /etc/security/limits.d /etc/profile.d
echo '* hard core 0' > /etc/security/limits.d/60-no-core.conf
echo 'umask 027' > /etc/profile.d/60-umask.sh
chmod 0600 /etc/shadow
chmod 0644 /etc/passwd /etc/group
