#!/usr/bin/env bash
# Runs every check and test of the repository: builds (or reuses) the real
# Kubernetes binaries, then format, lint, and the whole test suite against
# real etcd / kube-apiserver / controller-manager / scheduler / hollow nodes.
# Plain cargo, the same on every machine (no cargo-nextest needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> Kubernetes binaries (1.37, and 1.36 for upgrades and older members)" >&2
scripts/k8s-binaries.sh >/dev/null
scripts/k8s-binaries.sh 1.36.3 >/dev/null
echo "==> Real nodes' runtime (containerd, runc, CNI), local images and control-plane images" >&2
scripts/node-runtime.sh >/dev/null
scripts/control-plane-images.sh >/dev/null
echo "==> Test tools (Prometheus)" >&2
scripts/test-tools.sh
echo "==> metrics-server (the FederatedHPA tests run it against real nodes)" >&2
scripts/metrics-server.sh >/dev/null

# Incremental compilation state is tens of GB across the test binaries and
# buys nothing on a clean checkout.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests" >&2
# With arguments, exactly `cargo test` (a filter, one package); without, every
# test binary of the workspace, several at a time (scripts/run-tests.sh).
if [ $# -gt 0 ]; then
    cargo test --workspace --locked --no-fail-fast "$@"
else
    scripts/run-tests.sh
fi
