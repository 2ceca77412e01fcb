#!/usr/bin/env bash
# Runs every check and test of the repository: builds (or reuses) the real
# Kubernetes binaries, then format, lint, and the whole test suite against
# real etcd / kube-apiserver / controller-manager / scheduler / hollow nodes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> Kubernetes binaries" >&2
scripts/k8s-binaries.sh >/dev/null

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
