#!/usr/bin/env bash
# Installs the system packages the test suite drives for real (Debian, as root).
# Each later feature that tests against a real program adds its package here.
set -euo pipefail
packages=(
    nginx-light         # Nchan, the reference server of `pushup bench`
    libnginx-mod-nchan
    redis-server        # the Redis engine's tests start their own servers
    redis-sentinel      # and their own Sentinels (tests/redissentinel.py)
    haproxy             # the cluster tests run deploy/haproxy.cfg (nginx-light: deploy/nginx.conf)
    chromium            # tests/browser drive it headless through the playwright package
    curl                # the README's examples are run as written (tests/integration/test_readme.py)
)
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    # Install only: the tests start these programs themselves, on their own ports, so
    # keep the packages from starting system services (nginx on port 80, say).
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    if [[ -n "$added_policy" ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
fi
