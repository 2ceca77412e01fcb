#!/usr/bin/env bash
# Installs the real Kubernetes binaries Flotilla runs and tests against into a
# versioned cache. Idempotent (a warm run only checks a stamp), safe to run
# concurrently (flock), and atomic: the cache's bin/ directory appears only
# once every binary has been built and has run.
#
#   scripts/k8s-binaries.sh            build or reuse, print the bin directory
#   scripts/k8s-binaries.sh 1.37.2     current Kubernetes from Go modules (k8s-modules.sh)
#   FLOTILLA_K8S_BIN=/dir scripts/...   use/fill another directory
#
# What it does on a fresh machine (see ../shared/DESIGN.md for why):
#   1. apt-get install etcd-server etcd-client golang-go jq rsync dpkg-dev patch iproute2
#      golang-github-modern-go-reflect2-dev
#   2. apt-get source kubernetes (1.20.2) through a private deb-src list, so
#      the system's apt sources are left untouched
#   3. replace the vendored modern-go/reflect2 with Debian's v1.0.2 (the
#      vendored v1.0.1 crashes kube-apiserver under Go 1.19)
#   4. apply scripts/patches/*.patch (kubemark: choosable node capacity,
#      loopback-only kubelet, no fixed healthz port)
#   5. build kube-apiserver, kube-controller-manager, kube-scheduler,
#      kubemark and kubectl in GOPATH mode; copy etcd beside them
#   6. run each binary's --version before declaring success
set -euo pipefail

# Current Kubernetes (1.3x) and its etcd come from Go modules instead.
case "${1:-}" in
    "" | 1.20.2 | v1.20.2) ;;
    *) exec "$(dirname "${BASH_SOURCE[0]}")/k8s-modules.sh" "$1" ;;
esac

K8S_VERSION=1.20.2
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The recipe id changes when the patches (or RECIPE_REVISION) change, so a
# cache built by an older recipe is rebuilt rather than silently reused.
RECIPE_REVISION=1
RECIPE="$( { echo "$RECIPE_REVISION"; cat "$SCRIPT_DIR"/patches/*.patch; } | sha256sum | cut -c1-16)"
CACHE_ROOT="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
BIN_DIR="${FLOTILLA_K8S_BIN:-$CACHE_ROOT/kubernetes/v$K8S_VERSION/bin}"
STAMP="$BIN_DIR/.complete"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubemark kubectl etcd etcdctl)
APT_PACKAGES=(etcd-server etcd-client golang-go jq rsync dpkg-dev patch golang-github-modern-go-reflect2-dev iproute2)

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'k8s-binaries: FAILED at step "%s": %s\n' "$CURRENT_STEP" "$*" >&2; exit 1; }
CURRENT_STEP="check cache"
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "k8s-binaries: step \"%s\" failed (exit %s); the cache at %s was left untouched\n" "$CURRENT_STEP" "$rc" "$BIN_DIR" >&2; fi' EXIT

cache_ok() {
    [ -f "$STAMP" ] || return 1
    grep -qx "recipe=$RECIPE" "$STAMP" || return 1
    for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if cache_ok; then echo "$BIN_DIR"; exit 0; fi

mkdir -p "$(dirname "$BIN_DIR")"
LOCK="$(dirname "$BIN_DIR")/.build.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
    step "another build holds $LOCK; waiting for it"
    flock 9
fi
# The run that held the lock may have finished the job.
if cache_ok; then echo "$BIN_DIR"; exit 0; fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

CURRENT_STEP="install Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq >&2 || fail "apt-get update failed: is the Debian package registry reachable?"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || fail "apt-get install ${missing[*]} failed: is the Debian package registry reachable?"
fi
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$REFLECT2" ] || fail "$REFLECT2 missing after installing golang-github-modern-go-reflect2-dev"
GO_VERSION="$(go version)" || fail "go is not runnable"

# A fixed path (we hold the lock): Go's build cache, kept across recipe
# changes in $GO_CACHE_KEEP, only hits when the source path is the same.
WORK="$(dirname "$BIN_DIR")/build"
GO_CACHE_KEEP="$(dirname "$BIN_DIR")/go-build-cache"
rm -rf "$WORK"; mkdir -p "$WORK"
STAGE="$BIN_DIR.tmp.$$"
trap 'rc=$?; rm -rf "$WORK" "$STAGE"; if [ $rc -ne 0 ]; then printf "k8s-binaries: step \"%s\" failed (exit %s); the cache at %s was left untouched\n" "$CURRENT_STEP" "$rc" "$BIN_DIR" >&2; fi' EXIT

CURRENT_STEP="fetch kubernetes source package"
step "fetching the kubernetes $K8S_VERSION source package"
mkdir -p "$WORK/apt/lists/partial" "$WORK/src"
MIRROR="$(grep -rhoE 'https?://deb\.debian\.org/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n1 || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
echo "deb-src [trusted=yes] ${MIRROR%/} bookworm main" > "$WORK/apt/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$WORK/apt/lists" -o "APT::Sandbox::User=root")
apt-get "${APT_OPTS[@]}" update -qq >&2 || fail "apt-get update for deb-src failed: is ${MIRROR} reachable?"
( cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source -qq --download-only kubernetes >&2 ) \
    || fail "apt-get source kubernetes failed"
# Debian versions it "1.20.5+really1.20.2-..."; make sure it is the upstream we expect.
DSC="$(ls "$WORK"/src/kubernetes_*.dsc)"
case "$DSC" in
    *"really$K8S_VERSION"*|*"_$K8S_VERSION-"*) ;;
    *) fail "Debian ships $(basename "$DSC"), not Kubernetes $K8S_VERSION" ;;
esac
( cd "$WORK/src" && dpkg-source --no-check -x kubernetes_*.dsc kubernetes >/dev/null ) \
    || fail "unpacking the kubernetes source package failed"
SRC="$WORK/src/kubernetes"
[ -d "$SRC/vendor" ] || fail "the source package has no vendor/ tree"

CURRENT_STEP="patch vendored reflect2"
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
cp -r "$REFLECT2" "$SRC/vendor/github.com/modern-go/reflect2"
rm -f "$SRC/vendor/github.com/modern-go/reflect2/go.mod"

CURRENT_STEP="apply Flotilla patches"
for p in "$SCRIPT_DIR"/patches/*.patch; do
    patch -d "$SRC" -p1 --quiet --forward < "$p" >&2 || fail "patch $(basename "$p") does not apply"
done

CURRENT_STEP="build kubernetes binaries"
TARGETS="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubemark cmd/kubectl"
step "building $TARGETS with $GO_VERSION (4-6 minutes on 2 cores the first time)"
mkdir -p "$SRC/.go/src/k8s.io"
ln -s ../../.. "$SRC/.go/src/k8s.io/kubernetes"
BUILD_LOG="$WORK/build.log"
# Kubernetes' make keeps its Go cache in _output/local/go/cache; reuse the last one.
if [ -d "$GO_CACHE_KEEP" ]; then
    mkdir -p "$SRC/_output/local/go"
    mv "$GO_CACHE_KEEP" "$SRC/_output/local/go/cache"
fi
(
    cd "$SRC/.go/src/k8s.io/kubernetes"
    env GOPATH="$SRC/.go" GO111MODULE=off GOFLAGS= CGO_ENABLED=0 \
        KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean \
        make WHAT="$TARGETS" >"$BUILD_LOG" 2>&1
) &
BUILD_PID=$!
start=$(date +%s)
while kill -0 "$BUILD_PID" 2>/dev/null; do
    sleep 5
    last="$(tail -n1 "$BUILD_LOG" 2>/dev/null | cut -c1-100)"
    printf '    %4ss  %s\n' "$(( $(date +%s) - start ))" "$last" >&2
done
if ! wait "$BUILD_PID"; then
    tail -n 40 "$BUILD_LOG" >&2
    fail "make failed (the last lines of its log are above)"
fi

rm -rf "$GO_CACHE_KEEP"
mv "$SRC/_output/local/go/cache" "$GO_CACHE_KEEP" 2>/dev/null || true

CURRENT_STEP="verify binaries"
rm -rf "$STAGE"; mkdir -p "$STAGE"
OUT="$SRC/_output/local/bin/linux/amd64"
for b in kube-apiserver kube-controller-manager kube-scheduler kubemark kubectl; do
    [ -x "$OUT/$b" ] || fail "$b was not built"
    cp "$OUT/$b" "$STAGE/$b"
done
cp /usr/bin/etcd "$STAGE/etcd" || fail "/usr/bin/etcd missing (etcd-server package)"
cp /usr/bin/etcdctl "$STAGE/etcdctl" || fail "/usr/bin/etcdctl missing (etcd-client package)"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    "$STAGE/$b" --version >/dev/null 2>&1 || "$STAGE/$b" version --client >/dev/null 2>&1 || fail "$b does not run"
done
"$STAGE/kubemark" --help >/dev/null 2>&1 || fail "kubemark does not run"
"$STAGE/etcd" --version >/dev/null 2>&1 || fail "etcd does not run"
{
    echo "recipe=$RECIPE"
    echo "kubernetes=v$K8S_VERSION"
    echo "go=$GO_VERSION"
    echo "etcd=$("$STAGE/etcd" --version | head -n1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/.complete"

CURRENT_STEP="install into cache"
rm -rf "$BIN_DIR"
mv "$STAGE" "$BIN_DIR"
step "Kubernetes binaries ready in $BIN_DIR"
echo "$BIN_DIR"
