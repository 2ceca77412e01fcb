#!/usr/bin/env bash
# Builds metrics-server (the Go module sigs.k8s.io/metrics-server) into a
# versioned cache for the FederatedHPA tests and benchmark, which run it as
# a host process against real nodes. Idempotent (a warm run checks a stamp
# with the recipe hash), safe to run concurrently (flock) and atomic (the
# version directory appears only once the binary is built and answers
# --version). Prints the binary's path on stdout.
#
#   scripts/metrics-server.sh              ~/.cache/flotilla/metrics-server/v0.9.1/metrics-server
#   METRICS_SERVER_VERSION=v0.x.y ...      another release
#   FLOTILLA_CACHE=/dir ...                another cache root
set -euo pipefail

RECIPE_REVISION=1
VERSION="${METRICS_SERVER_VERSION:-v0.9.1}"
CACHE_ROOT="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
ROOT="$CACHE_ROOT/metrics-server"
DIR="$ROOT/$VERSION"
BIN="$DIR/metrics-server"
STAMP="$DIR/.complete"
RECIPE="$( { echo "$RECIPE_REVISION $VERSION"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)"

cache_ok() { [ -f "$STAMP" ] && grep -qx "recipe=$RECIPE" "$STAMP" && [ -x "$BIN" ]; }
if cache_ok; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "metrics-server: needs Go and the Go module proxy to build sigs.k8s.io/metrics-server $VERSION" >&2; exit 1; }
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
    echo "metrics-server: another build holds the lock; waiting for it" >&2
    flock 9
fi
if cache_ok; then echo "$BIN"; exit 0; fi

STAGE="$ROOT/.staging.$$"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"
echo "metrics-server: building sigs.k8s.io/metrics-server $VERSION" >&2
# `go install pkg@version` builds the release exactly as its go.mod pins it
# (a module with replace directives would be refused, which metrics-server
# has none of). Its go.mod may ask for a newer Go than the local one
# (v0.9.1 asks for 1.26.10): GOTOOLCHAIN=auto fetches that toolchain as a
# module from the Go proxy, once, into the module cache.
GOBIN="$STAGE" CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=auto \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/metrics-server/cmd/metrics-server@$VERSION"
"$STAGE/metrics-server" --version >/dev/null 2>&1 || "$STAGE/metrics-server" --help >/dev/null 2>&1 \
    || { echo "metrics-server: the binary built does not run" >&2; exit 1; }
printf 'recipe=%s\nversion=%s\n' "$RECIPE" "$VERSION" > "$STAGE/.complete"
rm -rf "$DIR.old"
if [ -d "$DIR" ]; then mv "$DIR" "$DIR.old"; fi
mv "$STAGE" "$DIR"
rm -rf "$DIR.old"
echo "$BIN"
