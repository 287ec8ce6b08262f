#!/usr/bin/env bash
# Install what is missing, and only that: system packages (Debian, as root), the virtualenv and
# the pinned requirements. A second run checks and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[immutable] $*"; }

# Program -> Debian package that provides it.
declare -A NEEDED=(
    [dockerd]=docker.io
    [docker-registry]=docker-registry
    [debootstrap]=debootstrap
    [git]=git
    [iptables]=iptables
    [haproxy]=haproxy
    [prometheus]=prometheus
    [chromium]=chromium
    [chromedriver]=chromium-driver
    [docker-compose]=docker-compose
)

missing_programs=()
for program in "${!NEEDED[@]}"; do
    command -v "$program" >/dev/null 2>&1 || missing_programs+=("$program")
done

engine_answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if ((${#missing_programs[@]})); then
    # An engine that already answers (Docker Desktop, a remote DOCKER_HOST) needs no dockerd here.
    if engine_answers; then
        kept=(); for p in "${missing_programs[@]}"; do [[ $p == dockerd || $p == iptables ]] || kept+=("$p"); done
        missing_programs=("${kept[@]}")
    fi
fi

if ((${#missing_programs[@]})); then
    packages=(); for p in "${missing_programs[@]}"; do packages+=("${NEEDED[$p]}"); done
    if [[ -r /etc/debian_version && $(id -u) == 0 ]]; then
        say "installing Debian packages: ${packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    else
        say "missing programs: ${missing_programs[*]}"
        say "install them (on Debian/Ubuntu: apt-get install ${packages[*]}) and run this again."
        exit 1
    fi
else
    say "system packages: all present"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    say "Python 3.11 is required (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11"
    exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv"
    "$python" -m venv .venv
fi

stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
    say "installing pinned requirements into .venv (about a minute the first time)"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
    echo "$wanted" > "$stamp"
else
    say "python requirements: up to date"
fi
