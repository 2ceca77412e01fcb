#!/usr/bin/env bash
# Builds Kubernetes and etcd from Go modules into a versioned cache, for
# Flotilla's local clusters, hosted clusters and tests. Idempotent (a warm
# run only checks a stamp), safe to run concurrently (flock) and atomic
# (bin/ appears only once every binary has been built and has run). Prints
# the time of each step on stderr and the bin directory on stdout.
#
#   scripts/k8s-binaries.sh           the default release (1.37.2)
#   scripts/k8s-binaries.sh 1.36.3    another 1.3x release (1.34-1.37 are served)
#   FLOTILLA_K8S_BIN=/dir scripts/... build into another directory
#
# How: a wrapper module (`flotilla.local/k8s`) requires k8s.io/kubernetes at
# VERSION and replaces every staging module (k8s.io/api, ...) with its
# release v0.X.Y, as kubernetes' own go.mod lists them; `go mod vendor`
# copies what the commands need, and `go build -mod=vendor` builds them.
# kubemark is Flotilla's hollow node (scripts/hollow-node/: node
# capacity flags, loopback-only kubelet, per-node sockets and directories),
# built inside the wrapper module over upstream's pkg/kubemark.
# etcd: the release line Kubernetes pins (3.7) and the one before (3.6),
# each a small main over go.etcd.io/etcd/server's etcdmain, so an etcd
# upgrade is a real one.
#
# Needs: Go 1.26 (on the machine) and the Go module proxy; iproute2 (for
# the tests' network namespaces) is installed from Debian if missing.
set -euo pipefail

DEFAULT_VERSION=1.37.2
VERSION="${1:-$DEFAULT_VERSION}"
VERSION="${VERSION#v}"
case "$VERSION" in
    1.3[0-9].*) ;;
    *) echo "k8s-binaries: $VERSION is not a 1.3x release (the module proxy serves 1.34-1.37)" >&2; exit 2 ;;
esac
MINOR="${VERSION#1.}"; MINOR="${MINOR%%.*}"
STAGING_VERSION="v0.${VERSION#1.}"
# etcd releases built beside each Kubernetes: the pinned line and the one
# before it (see k8s.io/kubernetes' go.mod for the pin).
ETCD_NEW=3.7.4
ETCD_OLD=3.6.17
RECIPE_REVISION=1
HOLLOW_NODE="$(dirname "${BASH_SOURCE[0]}")/hollow-node"
RECIPE="$( { echo "$RECIPE_REVISION $VERSION $ETCD_NEW $ETCD_OLD"; cat "${BASH_SOURCE[0]}" "$HOLLOW_NODE"/*.go; } | sha256sum | cut -c1-16)"
CACHE_ROOT="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
BIN_DIR="${FLOTILLA_K8S_BIN:-$CACHE_ROOT/kubernetes/v$VERSION/bin}"
STAMP="$BIN_DIR/.complete"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
BINARIES=("${K8S_COMMANDS[@]}" kubemark etcd etcdctl etcdutl "etcd-$ETCD_OLD" "etcdctl-$ETCD_OLD" "etcdutl-$ETCD_OLD")

started=$(date +%s)
step() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$(( $(date +%s) - started ))" "$*" >&2; }
CURRENT_STEP="check cache"
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "k8s-binaries: step \"%s\" failed (exit %s); the cache at %s was left untouched\n" "$CURRENT_STEP" "$rc" "$BIN_DIR" >&2; fi' EXIT

cache_ok() {
    [ -f "$STAMP" ] || return 1
    grep -qx "recipe=$RECIPE" "$STAMP" || return 1
    for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}
# The tests' network namespaces need `ip`; a fresh Debian may lack it.
if ! command -v ip >/dev/null; then
    CURRENT_STEP="install iproute2"
    step "$CURRENT_STEP"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends iproute2 >&2
fi
if cache_ok; then echo "$BIN_DIR"; exit 0; fi

command -v go >/dev/null || { echo "k8s-binaries: needs Go (1.26 or newer) on PATH" >&2; exit 1; }
mkdir -p "$(dirname "$BIN_DIR")"
exec 9>"$(dirname "$BIN_DIR")/.build.lock"
if ! flock -n 9; then
    step "another build holds the lock; waiting for it"
    flock 9
fi
if cache_ok; then echo "$BIN_DIR"; exit 0; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-k8s-$VERSION.XXXXXX")"
STAGE="$(dirname "$BIN_DIR")/.bin.staging.$$"
trap 'rc=$?; rm -rf "$WORK" "$STAGE"; if [ $rc -ne 0 ]; then printf "k8s-binaries: step \"%s\" failed (exit %s); the cache at %s was left untouched\n" "$CURRENT_STEP" "$rc" "$BIN_DIR" >&2; fi' EXIT
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

CURRENT_STEP="resolve k8s.io/kubernetes@v$VERSION"
step "$CURRENT_STEP"
MODFILE="$(go mod download -json "k8s.io/kubernetes@v$VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
[ -f "$MODFILE" ] || { echo "k8s-binaries: the module proxy does not serve k8s.io/kubernetes@v$VERSION" >&2; exit 1; }
GO_LINE="$(grep -m1 '^go ' "$MODFILE")"

CURRENT_STEP="write the wrapper module"
step "$CURRENT_STEP (staging modules at $STAGING_VERSION)"
mkdir -p "$WORK/k8s"
{
    printf 'module flotilla.local/k8s\n\n%s\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$GO_LINE" "$VERSION"
    grep -oE '^\s+k8s.io/[a-z0-9-]+ => ./staging' "$MODFILE" | awk -v v="$STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
    printf ')\n'
} > "$WORK/k8s/go.mod"
{
    printf '//go:build tools\n\n// The commands built, so `go mod vendor` copies them.\npackage tools\n\nimport (\n'
    for c in "${K8S_COMMANDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
} > "$WORK/k8s/tools.go"
mkdir -p "$WORK/k8s/cmd/hollow-node"
cp "$HOLLOW_NODE/main.go" "$WORK/k8s/cmd/hollow-node/"
# cadvisor.Interface changed in 1.37: take the fake's wrapper for this minor.
if [ "$MINOR" -ge 37 ]; then CADVISOR=cadvisor_1.37.go; else CADVISOR=cadvisor_1.36.go; fi
cp "$HOLLOW_NODE/$CADVISOR" "$WORK/k8s/cmd/hollow-node/"

CURRENT_STEP="go mod tidy and vendor"
step "$CURRENT_STEP"
(cd "$WORK/k8s" && go mod tidy >/dev/null && go mod vendor)

LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/client-go/pkg/version.gitVersion=v$VERSION"
mkdir -p "$STAGE"
for c in "${K8S_COMMANDS[@]}"; do
    CURRENT_STEP="build $c"
    step "$CURRENT_STEP"
    (cd "$WORK/k8s" && go build -mod=vendor -trimpath -ldflags "$LDFLAGS" -o "$STAGE/$c" "k8s.io/kubernetes/cmd/$c")
done
CURRENT_STEP="build kubemark (Flotilla's hollow node)"
step "$CURRENT_STEP"
(cd "$WORK/k8s" && go build -mod=vendor -trimpath -ldflags "$LDFLAGS" -o "$STAGE/kubemark" ./cmd/hollow-node)

build_etcd() { # version suffix
    local dir="$WORK/etcd-$1"
    mkdir -p "$dir/cmd/etcd"
    printf 'module flotilla.local/etcd\n\n%s\n' "$GO_LINE" > "$dir/go.mod"
    printf '// etcd, built from the go.etcd.io/etcd/server module.\npackage main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > "$dir/cmd/etcd/main.go"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/etcdutl/v3"\n)\n' > "$dir/tools.go"
    # etcdutl: snapshot status and restore left etcdctl in 3.6.
    (cd "$dir" && go get "go.etcd.io/etcd/server/v3@v$1" "go.etcd.io/etcd/etcdctl/v3@v$1" "go.etcd.io/etcd/etcdutl/v3@v$1" >/dev/null 2>&1 && go mod tidy >/dev/null \
        && go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd$2" ./cmd/etcd \
        && go build -trimpath -ldflags "-s -w" -o "$STAGE/etcdctl$2" go.etcd.io/etcd/etcdctl/v3 \
        && go build -trimpath -ldflags "-s -w" -o "$STAGE/etcdutl$2" go.etcd.io/etcd/etcdutl/v3)
}
CURRENT_STEP="build etcd $ETCD_NEW"
step "$CURRENT_STEP"
build_etcd "$ETCD_NEW" ""
CURRENT_STEP="build etcd $ETCD_OLD"
step "$CURRENT_STEP"
build_etcd "$ETCD_OLD" "-$ETCD_OLD"

CURRENT_STEP="run every binary"
step "$CURRENT_STEP"
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubemark; do
    "$STAGE/$c" --version | grep -x "Kubernetes v$VERSION" >/dev/null || { echo "k8s-binaries: $c does not say v$VERSION" >&2; exit 1; }
done
"$STAGE/kubectl" version --client | grep "v$VERSION" >/dev/null
"$STAGE/etcd" --version | grep "etcd Version: $ETCD_NEW" >/dev/null
"$STAGE/etcd-$ETCD_OLD" --version | grep "etcd Version: $ETCD_OLD" >/dev/null
"$STAGE/etcdctl" version | grep "$ETCD_NEW" >/dev/null
"$STAGE/etcdctl-$ETCD_OLD" version | grep "$ETCD_OLD" >/dev/null
"$STAGE/etcdutl" version | grep "$ETCD_NEW" >/dev/null
"$STAGE/etcdutl-$ETCD_OLD" version | grep "$ETCD_OLD" >/dev/null

CURRENT_STEP="publish"
printf 'recipe=%s\nversion=%s\netcd=%s %s\n' "$RECIPE" "$VERSION" "$ETCD_NEW" "$ETCD_OLD" > "$STAGE/.complete"
rm -rf "$BIN_DIR.old"
if [ -d "$BIN_DIR" ]; then mv "$BIN_DIR" "$BIN_DIR.old"; fi
mv "$STAGE" "$BIN_DIR"
rm -rf "$BIN_DIR.old"
step "Kubernetes v$VERSION and etcd $ETCD_NEW / $ETCD_OLD ready in $BIN_DIR"
echo "$BIN_DIR"
