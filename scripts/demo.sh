#!/usr/bin/env bash
# Brings up a local fleet from a fresh clone and shows it working: builds the
# Kubernetes binaries (first time only) and Flotilla, runs `flotilla up`
# (a hub and 2 member clusters with 2 hollow nodes each), propagates a
# 6-replica Deployment from the hub (divided 1:2 over the members), shows the
# fleet-wide count on the hub and the fleet's status. Stop it with
# `target/debug/flotilla down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_BIN="$(scripts/k8s-binaries.sh)"
echo "==> building flotilla" >&2
cargo build --locked -p flotilla
FLOTILLA=target/debug/flotilla

"$FLOTILLA" up "$@"
STATE_DIR="${FLOTILLA_STATE_DIR:-$HOME/.flotilla}"
HUB="$STATE_DIR/hub.kubeconfig"
KUBECTL="$K8S_BIN/kubectl"
echo "==> on the hub: a 6-replica Deployment and a policy dividing it 1:2 over member-1 and member-2" >&2
"$KUBECTL" --kubeconfig "$HUB" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: policy.flotilla.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: default}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: web}]
  placement:
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference:
        staticWeightList:
          - {targetCluster: {clusterNames: [member-1]}, weight: 1}
          - {targetCluster: {clusterNames: [member-2]}, weight: 2}
YAML
echo "==> the hub's Deployment shows the whole fleet" >&2
"$KUBECTL" --kubeconfig "$HUB" rollout status deployment/web --timeout=120s
"$KUBECTL" --kubeconfig "$HUB" get deployment web
for member in member-1 member-2; do
    echo "==> in $member" >&2
    "$KUBECTL" --kubeconfig "$STATE_DIR/clusters/$member.kubeconfig" get deployment web
done
echo
"$FLOTILLA" get bindings --kubeconfig "$HUB"
echo
"$FLOTILLA" status
echo
echo "==> the members as the hub sees them" >&2
"$FLOTILLA" get clusters --kubeconfig "$STATE_DIR/hub.kubeconfig"
echo
echo "Stop the fleet with: $FLOTILLA down"
