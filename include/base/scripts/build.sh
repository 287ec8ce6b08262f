#!/bin/sh
# Runs every base step in order. Inputs are environment variables (see ../Dockerfile).
set -eu
here=$(dirname "$0")
for step in 10-security-updates 20-remove-packages 30-common-libraries 40-harden 50-network-tuning 90-cleanup; do
    echo "=== base step: $step"
    sh "$here/$step.sh"
done
