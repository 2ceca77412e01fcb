#!/usr/bin/env bash
# Control-plane images for hosted clusters under the Kubernetes runtime on
# real nodes (no registry): docker-archive tarballs of the cached static
# binaries of one Kubernetes release (scripts/k8s-binaries.sh VERSION must
# have built it). Idempotent (a stamp with the recipe and the binaries'
# stamp), safe to run concurrently (flock), atomic (the directory appears
# only once every image is built). Prints the image directory on stdout.
#
#   scripts/control-plane-images.sh           the default release (1.37.2)
#   scripts/control-plane-images.sh 1.36.3    another cached release
#
# Images, each one layer holding /usr/local/bin/<binary> (PATH set):
#   flotilla.local/kube-apiserver:vVERSION, kube-controller-manager,
#   kube-scheduler, and flotilla.local/etcd:vE for each etcd release the
#   bin directory holds (etcd and etcd-<E>).
# images.list names each tarball and its tag, as in scripts/node-runtime.sh.
set -euo pipefail

DEFAULT_VERSION=1.37.2
VERSION="${1:-$DEFAULT_VERSION}"
VERSION="${VERSION#v}"
RECIPE_REVISION=1
CACHE_ROOT="${FLOTILLA_CACHE:-$HOME/.cache/flotilla}"
BIN_DIR="$CACHE_ROOT/kubernetes/v$VERSION/bin"
IMAGE_DIR="$CACHE_ROOT/control-plane-images/v$VERSION"
STAMP="$IMAGE_DIR/.complete"
started=$(date +%s)
step() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$(( $(date +%s) - started ))" "$*" >&2; }

[ -f "$BIN_DIR/.complete" ] || {
    echo "control-plane-images: no complete Kubernetes $VERSION in $BIN_DIR: run scripts/k8s-binaries.sh $VERSION first" >&2
    exit 1
}
RECIPE="$( { echo "$RECIPE_REVISION $VERSION"; cat "${BASH_SOURCE[0]}" "$BIN_DIR/.complete"; } | sha256sum | cut -c1-16)"
cache_ok() { [ -f "$STAMP" ] && grep -qx "recipe=$RECIPE" "$STAMP"; }
if cache_ok; then echo "$IMAGE_DIR"; exit 0; fi

mkdir -p "$(dirname "$IMAGE_DIR")"
exec 9>"$(dirname "$IMAGE_DIR")/.v$VERSION.lock"
if ! flock -n 9; then
    step "another build holds the lock; waiting for it"
    flock 9
fi
if cache_ok; then echo "$IMAGE_DIR"; exit 0; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-cp-images.XXXXXX")"
STAGE="$IMAGE_DIR.staging.$$"
trap 'rc=$?; rm -rf "$WORK" "$STAGE"; if [ $rc -ne 0 ]; then echo "control-plane-images: failed (exit $rc); $IMAGE_DIR was left untouched" >&2; fi' EXIT
mkdir -p "$STAGE"
ARCH="$(go env GOARCH 2>/dev/null || echo amd64)"

# image NAME TAG BINARY: a docker-archive tarball with BINARY as
# /usr/local/bin/<NAME's binary>, reproducible.
image() {
    local name=$1 tag=$2 binary=$3 command=$4 dir="$WORK/$1"
    local rootfs="$dir/rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/lib/etcd"
    cp "$binary" "$rootfs/usr/local/bin/$command"
    printf 'root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
    chmod 1777 "$rootfs/tmp"
    (cd "$rootfs" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$dir/layer.tar" -- *)
    local diff_id
    diff_id="sha256:$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)"
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/bin"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
        "$ARCH" "$diff_id" > "$dir/config.json"
    printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$tag" > "$dir/manifest.json"
    (cd "$dir" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$STAGE/$name.tar" manifest.json config.json layer.tar)
    printf '%s.tar %s\n' "$name" "$tag" >> "$STAGE/images.list"
    rm -rf "$dir"
}

for component in kube-apiserver kube-controller-manager kube-scheduler; do
    step "image flotilla.local/$component:v$VERSION"
    image "$component" "flotilla.local/$component:v$VERSION" "$BIN_DIR/$component" "$component"
done
for etcd in "$BIN_DIR"/etcd "$BIN_DIR"/etcd-[0-9]*; do
    [ -x "$etcd" ] || continue
    etcd_version="$("$etcd" --version | sed -n 's/^etcd Version: //p')"
    [ -n "$etcd_version" ] || { echo "control-plane-images: $etcd --version names no version" >&2; exit 1; }
    step "image flotilla.local/etcd:v$etcd_version"
    image "etcd-$etcd_version" "flotilla.local/etcd:v$etcd_version" "$etcd" etcd
done

printf 'recipe=%s\n' "$RECIPE" > "$STAGE/.complete"
rm -rf "$IMAGE_DIR.old"
if [ -d "$IMAGE_DIR" ]; then mv "$IMAGE_DIR" "$IMAGE_DIR.old"; fi
mv "$STAGE" "$IMAGE_DIR"
rm -rf "$IMAGE_DIR.old"
step "images ready in $IMAGE_DIR: $(cut -d' ' -f2 "$IMAGE_DIR/images.list" | tr '\n' ' ')"
echo "$IMAGE_DIR"
