#!/usr/bin/env bash
# Installs the system packages the test suite drives for real (Debian, as root).
# Each later feature that tests against a real program adds its package here.
set -euo pipefail
packages=()
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
