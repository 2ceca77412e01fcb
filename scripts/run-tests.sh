#!/usr/bin/env bash
# Runs the workspace's test binaries several at a time: `cargo test` runs one
# binary after another, and most of our binaries spend their time waiting on
# real apiservers, etcd and kubelets, not on the CPU. Every test allocates
# free ports and a directory of its own, so binaries may share the machine.
#
#   scripts/run-tests.sh              build every test binary, run them all
#   scripts/run-tests.sh -p CRATE     only these packages' (cargo's selection)
#   FLOTILLA_TEST_JOBS=1 scripts/...  one binary at a time (as cargo would)
#   FLOTILLA_TEST_ALONE="a.x b.y"     binaries (package dir.test name) run
#                                     alone at the end (default cli.node_pool)
#
# Each binary runs from its package's directory, as `cargo test` runs it,
# with its output kept in a log that is printed whole if it fails. The
# binaries taking longest last time start first (kept in the target dir);
# a few sensitive to a loaded machine run alone at the end (ALONE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS="${FLOTILLA_TEST_JOBS:-3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
LOGS="$TARGET_DIR/test-logs"
DURATIONS="$TARGET_DIR/test-durations"
rm -rf "$LOGS" && mkdir -p "$LOGS"

# One line per test binary: "<package dir> <executable>".
LIST="$LOGS/binaries"
SELECTION=("$@"); [ $# -gt 0 ] || SELECTION=(--workspace)
cargo test "${SELECTION[@]}" --locked --no-run --message-format=json-render-diagnostics \
    | grep '"reason":"compiler-artifact"' | grep '"profile":{[^}]*"test":true' \
    | sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"executable":"\([^"]*\)".*/\1 \2/p' \
    > "$LIST"
[ -s "$LIST" ] || { echo "run-tests: cargo built no test binary" >&2; exit 1; }

# Longest first by last run's durations; unknown ones (new tests) first of all.
ORDERED="$LOGS/ordered"
while read -r dir exe; do
    name="$(basename "$exe")"; name="$(basename "$dir").${name%-*}"
    seconds="$(grep -m1 "^$name " "$DURATIONS" 2>/dev/null | cut -d' ' -f2 || true)"
    printf '%s %s %s\n' "${seconds:-999999}" "$dir" "$exe"
done < "$LIST" | sort -rn | cut -d' ' -f2- > "$ORDERED"

run_one() {
    local dir=$1 exe=$2 name start rc
    name="$(basename "$exe")"; name="$(basename "$dir").${name%-*}"
    start=$(date +%s)
    rc=0
    (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe") > "$LOGS/$name.log" 2>&1 || rc=$?
    echo "$name $(( $(date +%s) - start )) $rc" >> "$LOGS/results"
    if [ "$rc" -eq 0 ]; then
        printf 'ok      %-40s %4ss  %s\n' "$name" "$(( $(date +%s) - start ))" \
            "$(grep -m1 '^test result' "$LOGS/$name.log" | sed 's/; finished.*//' || true)"
    else
        printf 'FAILED  %-40s %4ss  (exit %s)\n' "$name" "$(( $(date +%s) - start ))" "$rc"
    fi
}
export -f run_one
export LOGS

# Binaries whose real nodes drain and replace pods under deadlines: they
# run alone, after the others, so a loaded machine does not fail them.
read -r -a ALONE <<< "${FLOTILLA_TEST_ALONE:-cli.node_pool}"
SHARED="$LOGS/shared"; SOLO="$LOGS/solo"
: > "$SHARED"; : > "$SOLO"
while read -r dir exe; do
    name="$(basename "$exe")"; name="$(basename "$dir").${name%-*}"
    if printf '%s\n' "${ALONE[@]}" | grep -qx "$name"; then
        echo "$dir $exe" >> "$SOLO"
    else
        echo "$dir $exe" >> "$SHARED"
    fi
done < "$ORDERED"

echo "==> $(wc -l < "$ORDERED") test binaries, $JOBS at a time ($(wc -l < "$SOLO") alone at the end)" >&2
: > "$LOGS/results"
xargs -r -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"' < "$SHARED" || true
xargs -r -P 1 -L 1 bash -c 'run_one "$0" "$1"' < "$SOLO" || true

# What a failure said, whole.
failed=0
while read -r name seconds rc; do
    if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        echo "==================== $name failed (exit $rc): its output ====================" >&2
        cat "$LOGS/$name.log" >&2
    fi
done < "$LOGS/results"
# Where each failure happened, last, so the tail of a long log shows it.
while read -r name seconds rc; do
    if [ "$rc" -ne 0 ]; then
        echo "==================== $name: where it failed ====================" >&2
        grep -A12 -e 'panicked at' -e '^---- .* stdout ----$' "$LOGS/$name.log" | head -80 >&2 \
            || echo "(no panic message: exit $rc)" >&2
    fi
done < "$LOGS/results"
sort -k2 -rn "$LOGS/results" | cut -d' ' -f1,2 > "$DURATIONS"
ran="$(wc -l < "$LOGS/results")"
total="$(wc -l < "$ORDERED")"
if [ "$failed" -ne 0 ] || [ "$ran" -ne "$total" ]; then
    echo "run-tests: $failed of $total test binaries failed ($ran ran)" >&2
    exit 1
fi
echo "run-tests: all $total test binaries passed" >&2
