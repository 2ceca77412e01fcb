#!/usr/bin/env bash
# The runtime under Flotilla's real worker nodes: installs containerd, runc,
# the CNI plugins, iptables and busybox-static from Debian if missing, and
# builds the local images real nodes run (no registry) as docker-archive
# tarballs. Idempotent (a warm run checks the packages and a stamp), safe to
# run concurrently (flock) and atomic (the image directory appears only once
# every image is built). Prints the time of each step on stderr and the
# image directory on stdout.
#
#   scripts/node-runtime.sh                  ~/.cache/flotilla/images
#   FLOTILLA_IMAGES=/dir scripts/...         build into another directory
#
# Images (imported into each node's containerd with `ctr images import`,
# pods use `imagePullPolicy: Never`):
#   flotilla.local/pause:1    the pod sandbox: scripts/images/pause/main.go,
#                             static, as /pause
#   flotilla.local/busybox:1  Debian's busybox-static as /bin/busybox with a
#                             symlink per applet (sh, sleep, httpd, wget ...),
#                             PATH=/bin
#   flotilla.local/coredns:V  the cluster DNS add-on: scripts/images/coredns
#                             (V is the CoreDNS release its go.mod pins),
#                             static, as /coredns
# images.list names each tarball and its tag; flotilla-localkube reads it.
set -euo pipefail

RECIPE_REVISION=1
PAUSE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/images/pause" && pwd)"
COREDNS_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/images/coredns" && pwd)"
PACKAGES=(containerd runc containernetworking-plugins iptables busybox-static)
BUSYBOX=/bin/busybox
CACHE_ROOT="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
IMAGE_DIR="${FLOTILLA_IMAGES:-$CACHE_ROOT/images}"
STAMP="$IMAGE_DIR/.complete"

started=$(date +%s)
step() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$(( $(date +%s) - started ))" "$*" >&2; }
CURRENT_STEP="check packages"
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "node-runtime: step \"%s\" failed (exit %s); %s was left untouched\n" "$CURRENT_STEP" "$rc" "$IMAGE_DIR" >&2; fi' EXIT

# apt-get that waits for the package lock (another apt run, e.g. a
# fresh machine's apt-daily or a second set-up started at the same time,
# holds it for a while) instead of failing at once.
apt_get() {
    local tries=0 out
    while true; do
        if out="$($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@" 2>&1)"; then
            return 0
        fi
        tries=$((tries + 1))
        if [ $tries -ge 40 ] || ! grep -q "Could not get lock" <<<"$out"; then
            echo "$out" >&2
            return 1
        fi
        sleep 3
    done
}
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    CURRENT_STEP="install ${missing[*]}"
    step "$CURRENT_STEP"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    # The daemon the package would start is not used: every real node runs
    # a containerd of its own.
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends "${missing[@]}"
fi
for tool in containerd containerd-shim-runc-v2 ctr runc iptables nsenter unshare ip; do
    command -v "$tool" >/dev/null || { echo "node-runtime: $tool is missing after installing ${PACKAGES[*]}" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "node-runtime: /usr/lib/cni/bridge is missing (containernetworking-plugins)" >&2; exit 1; }
[ -x "$BUSYBOX" ] || { echo "node-runtime: $BUSYBOX is missing (busybox-static)" >&2; exit 1; }

BUSYBOX_VERSION="$(dpkg-query -W -f='${Version}' busybox-static)"
COREDNS_VERSION="$(sed -n 's/^require github.com\/coredns\/coredns v\([0-9.]*\)$/\1/p' "$COREDNS_SRC/go.mod")"
[ -n "$COREDNS_VERSION" ] || { echo "node-runtime: $COREDNS_SRC/go.mod pins no github.com/coredns/coredns release" >&2; exit 1; }
RECIPE="$( { echo "$RECIPE_REVISION $BUSYBOX_VERSION"; cat "${BASH_SOURCE[0]}" "$PAUSE_SRC"/main.go "$PAUSE_SRC"/go.mod "$COREDNS_SRC"/main.go "$COREDNS_SRC"/go.mod "$COREDNS_SRC"/go.sum; } | sha256sum | cut -c1-16)"
cache_ok() {
    [ -f "$STAMP" ] && grep -qx "recipe=$RECIPE" "$STAMP" && [ -f "$IMAGE_DIR/images.list" ] || return 1
    while read -r file _tag; do [ -s "$IMAGE_DIR/$file" ] || return 1; done < "$IMAGE_DIR/images.list"
}
if cache_ok; then echo "$IMAGE_DIR"; exit 0; fi

command -v go >/dev/null || { echo "node-runtime: needs Go (1.26 or newer) and the Go module proxy to build the pause and CoreDNS images" >&2; exit 1; }
mkdir -p "$(dirname "$IMAGE_DIR")"
exec 9>"$(dirname "$IMAGE_DIR")/.images.lock"
if ! flock -n 9; then
    step "another build holds the lock; waiting for it"
    flock 9
fi
if cache_ok; then echo "$IMAGE_DIR"; exit 0; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-images.XXXXXX")"
STAGE="$(dirname "$IMAGE_DIR")/.images.staging.$$"
trap 'rc=$?; rm -rf "$WORK" "$STAGE"; if [ $rc -ne 0 ]; then printf "node-runtime: step \"%s\" failed (exit %s); %s was left untouched\n" "$CURRENT_STEP" "$rc" "$IMAGE_DIR" >&2; fi' EXIT
mkdir -p "$STAGE"
ARCH="$(go env GOARCH)"

# image NAME TAG ROOTFS CONFIG_JSON_FRAGMENT: a docker-archive tarball
# (manifest.json, config.json, one layer) of ROOTFS, reproducible.
image() {
    local name=$1 tag=$2 rootfs=$3 config=$4 dir="$WORK/$1-image"
    mkdir -p "$dir"
    (cd "$rootfs" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$dir/layer.tar" -- *)
    local diff_id
    diff_id="sha256:$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)"
    printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
        "$ARCH" "$config" "$diff_id" > "$dir/config.json"
    printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$tag" > "$dir/manifest.json"
    (cd "$dir" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$STAGE/$name.tar" manifest.json config.json layer.tar)
    printf '%s.tar %s\n' "$name" "$tag" >> "$STAGE/images.list"
}

CURRENT_STEP="build the pause image"
step "$CURRENT_STEP"
mkdir -p "$WORK/pause-src" "$WORK/pause-rootfs"
cp "$PAUSE_SRC/main.go" "$PAUSE_SRC/go.mod" "$WORK/pause-src/"
(cd "$WORK/pause-src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$WORK/pause-rootfs/pause" .)
image pause flotilla.local/pause:1 "$WORK/pause-rootfs" '{"Entrypoint":["/pause"]}'

CURRENT_STEP="build the busybox image"
step "$CURRENT_STEP"
ROOTFS="$WORK/busybox-rootfs"
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/root"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
chmod 1777 "$ROOTFS/tmp"
image busybox flotilla.local/busybox:1 "$ROOTFS" '{"Env":["PATH=/bin"],"Cmd":["sh"]}'

CURRENT_STEP="build the CoreDNS $COREDNS_VERSION image"
step "$CURRENT_STEP"
mkdir -p "$WORK/coredns-src" "$WORK/coredns-rootfs/etc"
cp "$COREDNS_SRC/main.go" "$COREDNS_SRC/go.mod" "$COREDNS_SRC/go.sum" "$WORK/coredns-src/"
(cd "$WORK/coredns-src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$WORK/coredns-rootfs/coredns" .)
"$WORK/coredns-rootfs/coredns" -version | grep -q "CoreDNS-$COREDNS_VERSION" || { echo "node-runtime: the CoreDNS built does not say $COREDNS_VERSION" >&2; exit 1; }
printf 'nobody:x:65534:65534:nobody:/:/bin/false\n' > "$WORK/coredns-rootfs/etc/passwd"
image coredns "flotilla.local/coredns:$COREDNS_VERSION" "$WORK/coredns-rootfs" '{"Entrypoint":["/coredns"]}'

CURRENT_STEP="publish"
printf 'recipe=%s\nbusybox=%s\ncoredns=%s\n' "$RECIPE" "$BUSYBOX_VERSION" "$COREDNS_VERSION" > "$STAGE/.complete"
rm -rf "$IMAGE_DIR.old"
if [ -d "$IMAGE_DIR" ]; then mv "$IMAGE_DIR" "$IMAGE_DIR.old"; fi
mv "$STAGE" "$IMAGE_DIR"
rm -rf "$IMAGE_DIR.old"
step "images ready in $IMAGE_DIR: $(cut -d' ' -f2 "$IMAGE_DIR/images.list" | tr '\n' ' ')"
echo "$IMAGE_DIR"
