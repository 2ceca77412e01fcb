#!/usr/bin/env bash
# Brings up a local fleet from a fresh clone and shows it working: builds the
# Kubernetes binaries (first time only) and Flotilla, runs `flotilla up`
# (a hub and 2 member clusters with 2 hollow nodes each), runs a 3-replica
# Deployment on member-1 and shows the fleet's status. Stop it with
# `target/debug/flotilla down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_BIN="$(scripts/k8s-binaries.sh)"
echo "==> building flotilla" >&2
cargo build --locked -p flotilla
FLOTILLA=target/debug/flotilla

"$FLOTILLA" up "$@"
STATE_DIR="${FLOTILLA_STATE_DIR:-$HOME/.flotilla}"
MEMBER="$STATE_DIR/clusters/member-1.kubeconfig"
if [ -f "$MEMBER" ]; then
    echo "==> a Deployment with 3 replicas on member-1" >&2
    "$K8S_BIN/kubectl" --kubeconfig "$MEMBER" create deployment web --image=nginx --replicas=3 \
        --dry-run=client -o yaml | "$K8S_BIN/kubectl" --kubeconfig "$MEMBER" apply -f -
    "$K8S_BIN/kubectl" --kubeconfig "$MEMBER" rollout status deployment/web --timeout=120s
    "$K8S_BIN/kubectl" --kubeconfig "$MEMBER" get deployment,pods -o wide
fi
echo
"$FLOTILLA" status
echo
echo "==> the members as the hub sees them" >&2
"$FLOTILLA" get clusters --kubeconfig "$STATE_DIR/hub.kubeconfig"
echo
echo "Stop the fleet with: $FLOTILLA down"
