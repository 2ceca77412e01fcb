#!/usr/bin/env bash
# Tools the tests run beside Kubernetes: Prometheus (Debian's package; the
# rollout metric gates' test scrapes a real endpoint with it, the hub's
# metrics_prometheus test scrapes a running fleet, and its promtool checks
# the alert rules in deploy/prometheus) and tzdata (the
# time zones of CronFederatedHPA rules, read from /usr/share/zoneinfo). Installs
# what is missing, waits for the package lock, starts no daemon.
set -euo pipefail

PACKAGES=(prometheus tzdata)
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
