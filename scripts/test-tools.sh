#!/usr/bin/env bash
# Tools the tests run beside Kubernetes: Prometheus (Debian's package; the
# rollout metric gates' test scrapes a real endpoint with it, the hub's
# metrics_prometheus test scrapes a running fleet, and its promtool checks
# the alert rules in deploy/prometheus), tzdata (the time zones of
# CronFederatedHPA rules, read from /usr/share/zoneinfo) and Debian's
# Chromium with playwright-core (the dashboard's browser test; npm installs
# playwright-core from crates/dashboard/e2e/package-lock.json into a cached
# directory, never a browser). Installs what is missing, waits for the
# package lock, starts no daemon.
set -euo pipefail

PACKAGES=(prometheus tzdata chromium)
# Node.js and npm from Debian unless a node is already there.
command -v npm >/dev/null || PACKAGES+=(nodejs npm)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "test-tools: installing ${missing[*]}" >&2
    for attempt in 1 2 3; do
        if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 &&
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                --no-install-recommends "${missing[@]}" >&2; then
            break
        fi
        [ "$attempt" -lt 3 ] || { echo "test-tools: could not install ${missing[*]}" >&2; exit 1; }
        sleep 5
    done
fi
command -v prometheus >/dev/null || { echo "test-tools: prometheus is missing after installing it" >&2; exit 1; }
command -v chromium >/dev/null || { echo "test-tools: chromium is missing after installing it" >&2; exit 1; }

# playwright-core for the dashboard's browser test, installed once per
# package-lock (stamped with its hash) into the cache the test reads
# (FLOTILLA_E2E_NODE_MODULES overrides it there too).
E2E_SRC="$(cd "$(dirname "$0")/.." && pwd)/crates/dashboard/e2e"
E2E_DIR="${FLOTILLA_E2E_DIR:-$HOME/.cache/flotilla/dashboard-e2e}"
lock_hash="$(sha256sum "$E2E_SRC/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$E2E_DIR/.stamp" 2>/dev/null)" != "$lock_hash" ]; then
    echo "test-tools: installing playwright-core into $E2E_DIR" >&2
    mkdir -p "$E2E_DIR"
    cp "$E2E_SRC/package.json" "$E2E_SRC/package-lock.json" "$E2E_DIR/"
    for attempt in 1 2 3; do
        if (cd "$E2E_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2); then
            break
        fi
        [ "$attempt" -lt 3 ] || { echo "test-tools: npm ci of playwright-core failed" >&2; exit 1; }
        sleep 5
    done
    echo "$lock_hash" > "$E2E_DIR/.stamp"
fi
