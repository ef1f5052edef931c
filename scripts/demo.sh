#!/usr/bin/env bash
# A guided tour of unionfs on the sample layer stack in mounts/ (run it with `make demo`).
#
# It mounts three read-only layers (mounts/demo.toml) plus a fresh, empty upper layer in a temp
# dir, then shows: a read served by a lower layer, a write copied up to the upper layer, a delete
# recorded as a whiteout, and a directory made opaque by the top layer. Every effect is checked,
# so the script exits non-zero if any step does not behave as described.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
SPEC=mounts/demo.toml
LAYERS=$REPO/mounts/demo/layers

# The unionfs command: the venv's entry point, else the module.
if [ -x .venv/bin/unionfs ] && .venv/bin/unionfs --help >/dev/null 2>&1; then
    UNIONFS=("$REPO/.venv/bin/unionfs")
elif [ -x .venv/bin/python ]; then
    UNIONFS=("$REPO/.venv/bin/python" -m unionfs)
else
    echo "demo: no .venv here; run 'make demo' (it creates it)" >&2
    exit 1
fi
FUSERMOUNT=$(command -v fusermount3 || command -v fusermount || true)
if [ -z "$FUSERMOUNT" ] || [ ! -e /dev/fuse ]; then
    echo "demo: needs /dev/fuse and fusermount3 (make deps installs fuse3)" >&2
    exit 1
fi

# --- scratch space, always cleaned up --------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-demo.XXXXXX")
MNT=$T/mnt UPPER=$T/upper WORK=$T/work
mkdir "$MNT" "$UPPER" "$WORK"

# Is $1 a mount point? Read from the mount table, so a dead FUSE daemon cannot hang us.
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

cleanup() {
    local rc=$?
    if is_mounted "$MNT"; then
        "$FUSERMOUNT" -u "$MNT" 2>/dev/null || "$FUSERMOUNT" -u -z "$MNT" 2>/dev/null || true
    fi
    if is_mounted "$MNT"; then
        echo "demo: could not unmount $MNT; leaving $T in place" >&2
    else
        rm -rf --one-file-system "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- output helpers (step, say, run, check, not) ----------------------------------------------
. "$(dirname "${BASH_SOURCE[0]}")/demo_lib.sh"
# run_sh 'SHELL LINE': print it (paths shortened), then run it with bash.
run_sh() { printf '%s$ %s%s\n' "$B" "${1//$T/\$T}" "$N"; bash -c "$1"; }
# tree DIR: every path under DIR, relative, sorted. show_tree DIR: the same, with its command.
tree() { (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort); }
show_tree() { printf '%s$ (cd %s && find . -mindepth 1 | sort)%s\n' "$B" "${1//$T/\$T}" "$N"; tree "$1"; }

say "${B}unionfs demo${N}: three read-only layers, top wins (see mounts/demo/README.md)"
say "  lower layers (top first): $(sed -n 's/^lower *= *//p' "$SPEC")"
say "  temp dir \$T = $T  (upper/, work/, mnt/ inside; removed at the end)"

# --- 1 ---------------------------------------------------------------------------------------
step "mount the layer stack and look at the merged tree"
say "The mount point shows one tree: each path comes from the topmost layer that has it."
run timeout 60 "${UNIONFS[@]}" mount --spec "$SPEC" --upper "$UPPER" --work "$WORK" "$MNT"
check "$MNT is mounted" is_mounted "$MNT"
run ls -la "$MNT"
show_tree "$MNT"
MERGED=$(tree "$MNT")
# The merged tree described in mounts/demo/README.md.
EXPECTED='etc
etc/hostname
etc/motd
etc/os-release
opt
opt/app
opt/app/config.ini
opt/app/data
opt/app/data/current.dat
usr
usr/share
usr/share/doc
usr/share/doc/readme.txt
var
var/log
var/log/boot.log'
check "the merged tree is the one in mounts/demo/README.md (diff: expected vs merged)" \
    diff <(echo "$EXPECTED") <(echo "$MERGED")
check "all top-level directories are there" \
    test -d "$MNT/etc" -a -d "$MNT/usr" -a -d "$MNT/var" -a -d "$MNT/opt"
check "etc/hostname is the top layer's (demo-top), not base's" grep -qx demo-top "$MNT/etc/hostname"
check "no .wh.* marker file shows in the merged view" not grep -q '\.wh\.' <<<"$MERGED"

# --- 2 ---------------------------------------------------------------------------------------
step "a read served by a lower layer"
say "etc/motd is in base and in middle (top has none), so the merged file is middle's:"
say "  mounts/demo/layers/middle/etc/motd. Reading it copies nothing: the upper stays empty."
run cat "$MNT/etc/motd"
check "etc/motd comes from the middle layer" cmp -s "$MNT/etc/motd" "$LAYERS/middle/etc/motd"
run ls -la "$UPPER"
check "the upper layer is still empty" test -z "$(find "$UPPER" -mindepth 1 -print -quit)"

# --- 3 ---------------------------------------------------------------------------------------
step "a write is copied up to the upper layer"
say "Lower layers are never modified. Writing to etc/motd first copies the file up to the upper"
say "layer, then changes the copy."
LOWER_SUM=$(sha256sum "$LAYERS/middle/etc/motd")
LINE="Line appended through the mount by the demo ($(date +%H:%M:%S))"
run_sh "echo '$LINE' >> $MNT/etc/motd"
run cat "$MNT/etc/motd"
check "the merged etc/motd has the new line" grep -qxF "$LINE" "$MNT/etc/motd"
run ls -la "$UPPER/etc"
check "the upper layer now holds etc/motd" test -f "$UPPER/etc/motd"
check "the upper copy = middle's content + the new line" \
    cmp -s "$UPPER/etc/motd" <(cat "$LAYERS/middle/etc/motd"; echo "$LINE")
run diff -u "$LAYERS/middle/etc/motd" "$UPPER/etc/motd" || true
run sha256sum "$LAYERS/middle/etc/motd"
check "the lower file mounts/demo/layers/middle/etc/motd is unchanged" \
    test "$(sha256sum "$LAYERS/middle/etc/motd")" = "$LOWER_SUM"

# --- 4 ---------------------------------------------------------------------------------------
step "a delete is recorded as a whiteout"
say "usr/share/doc/readme.txt exists only in the base layer, which cannot be changed. Deleting it"
say "puts a whiteout in the upper layer: a character device 0,0 with the same name, as the"
say "kernel's overlayfs does."
run rm "$MNT/usr/share/doc/readme.txt"
run ls -la "$UPPER/usr/share/doc"
check "upper/usr/share/doc/readme.txt is a character device" test -c "$UPPER/usr/share/doc/readme.txt"
check "... with device number 0, 0" \
    test "$(stat -c '%t,%T' "$UPPER/usr/share/doc/readme.txt")" = "0,0"
run ls -la "$MNT/usr/share/doc"
check "readme.txt is gone from the merged view" not test -e "$MNT/usr/share/doc/readme.txt"
check "... and from its directory listing" not grep -qx readme.txt <<<"$(ls -A "$MNT/usr/share/doc")"
check "the base layer still has its readme.txt" test -f "$LAYERS/base/usr/share/doc/readme.txt"
say
say "Lower layers can carry whiteouts too: middle has var/log/.wh.old.log, which hides base's"
say "var/log/old.log:"
run ls -la "$LAYERS/base/var/log"
run ls -la "$LAYERS/middle/var/log"
run ls -la "$MNT/var/log"
check "var/log/old.log is hidden by middle's whiteout" not test -e "$MNT/var/log/old.log"
check "var/log/boot.log (base) is still visible" test -f "$MNT/var/log/boot.log"

# --- 5 ---------------------------------------------------------------------------------------
step "a directory made opaque by the top layer"
say "top has opt/app/data/.wh..wh..opq: its opt/app/data replaces the lower ones entirely, so"
say "base's records-1/2.dat and middle's records-3.dat do not show; only top's current.dat does."
run ls -la "$LAYERS/base/opt/app/data"
run ls -la "$LAYERS/middle/opt/app/data"
run ls -la "$LAYERS/top/opt/app/data"
run ls -la "$MNT/opt/app/data"
check "opt/app/data holds only top's current.dat" test "$(ls -A "$MNT/opt/app/data")" = current.dat
check "the opaque directory's siblings still merge (opt/app/config.ini from base)" \
    test -f "$MNT/opt/app/config.ini"

# --- 6 ---------------------------------------------------------------------------------------
step "unmount"
run timeout 60 "${UNIONFS[@]}" umount "$MNT"
check "$MNT is no longer mounted" not is_mounted "$MNT"
say "What stays in the upper layer (it would be reused by the next mount of the same upper):"
show_tree "$UPPER"

printf '\n%sdemo finished: every step behaved as described.%s\n' "$G" "$N"
