#!/usr/bin/env bash
# A container started on unionfs (run it with `make demo-container`; needs root and podman).
#
# podman gets a private store in a temp dir whose storage.conf names unionfs as the overlay
# driver's mount_program. The script imports a busybox root filesystem (scripts/build_rootfs.py),
# starts a container, shows the mount table line proving unionfs serves its root, writes,
# deletes and renames inside it, shows what landed in the container's upper dir (whiteouts as
# 0/0 character devices), commits the container and runs the new image. Every effect is
# checked; the store, its mounts and the temp dir are removed on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
UNIONFS=$REPO/.venv/bin/unionfs   # the mount program: one executable, installed by `make venv`
if [ ! -x "$UNIONFS" ]; then
    echo "demo-container: no $UNIONFS; run 'make demo-container' (it creates the venv)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ] || ! command -v podman >/dev/null; then
    echo "demo-container: needs root and podman (apt-get install podman runc)" >&2
    exit 1
fi

# --- a private podman store, always cleaned up -----------------------------------------------
# podman wants short run paths (conmon's sockets live there): keep the temp dir in /tmp
T=$(mktemp -d /tmp/ufdemo.XXXXXX)
mkdir "$T/run"
cat > "$T/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$T/root"
runroot = "$T/run/storage"
[storage.options.overlay]
mount_program = "$UNIONFS"
EOF
# runc (crun refuses this kind of host's cgroup layout), lowered ulimits, no network setup
{ cat mounts/podman/containers.conf; echo "tmp_dir = \"$T/run/libpod\""; } > "$T/containers.conf"
export CONTAINERS_STORAGE_CONF=$T/storage.conf CONTAINERS_CONF=$T/containers.conf

cleanup() {
    local rc=$?
    podman rm -af -t 0 >/dev/null 2>&1 || true
    podman rmi -af >/dev/null 2>&1 || true
    # what podman left mounted in the store (its private bind mount of the overlay dir), deepest first
    awk -v t="$T/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    if awk -v t="$T/" 'index($5, t) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        echo "demo-container: could not unmount everything under $T; leaving it in place" >&2
    else
        rm -rf --one-file-system "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- output helpers (step, run, check, not) ----------------------------------------------------
. scripts/demo_lib.sh
# in_upper CMD...: print CMD, then run it in the container's upper dir.
in_upper() { printf '%s$ %s%s\n' "$B" "$*" "$N"; (cd "$UPPER" && "$@"); }
fstype_of() { awk -v m="$1" '$5 == m { for (i = 7; $i != "-"; i++); t = $(i + 1) } END { print t }' \
                  /proc/self/mountinfo; }

printf '%sunionfs as podman'"'"'s mount program%s (private store in $T = %s)\n' "$B" "$N" "$T"
step "the store's storage.conf names unionfs as the overlay mount program"
run cat "$T/storage.conf"

step "import a busybox root filesystem as an image"
"$REPO/.venv/bin/python" scripts/build_rootfs.py "$T/rootfs" >/dev/null
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
run podman import -q "$T/rootfs.tar" localhost/base:1

step "start a container: containers-storage runs unionfs -o lowerdir=...,upperdir=...,workdir=... MERGED"
run podman run -d --name demo localhost/base:1 sleep 600
MERGED=$(podman inspect --format '{{.GraphDriver.Data.MergedDir}}' demo)
UPPER=$(podman inspect --format '{{.GraphDriver.Data.UpperDir}}' demo)
run findmnt -n -o SOURCE,FSTYPE,OPTIONS,TARGET "$MERGED"
check "the container's root filesystem is a fuse.unionfs mount" \
    test "$(fstype_of "$MERGED")" = fuse.unionfs
run podman exec demo sh -c "grep ' / ' /proc/self/mounts"
check "inside the container, / is unionfs" \
    bash -c "podman exec demo grep ' / ' /proc/self/mounts | grep -q '^unionfs / fuse.unionfs '"

step "write, delete and rename inside the container"
run podman exec demo sh -c 'echo hello > /etc/motd && rm -rf /usr/lib/oldpkg && rm /etc/app.conf &&
    mv /usr/share/doc /usr/share/doc2 && ls /usr/lib /usr/share'
check "the renamed directory keeps its files" \
    podman exec demo test -f /usr/share/doc2/base/README

step "the container's upper dir: new files, and whiteouts (character devices 0/0) for deletions"
printf 'upper dir: %s\n' "${UPPER//$T/\$T}"
in_upper sh -c 'find . -mindepth 1 | sort'
in_upper ls -l usr/lib/oldpkg etc/app.conf usr/share/doc
check "usr/lib/oldpkg is a whiteout" \
    bash -c "[ -c '$UPPER/usr/lib/oldpkg' ] && [ \"\$(stat -c %t:%T '$UPPER/usr/lib/oldpkg')\" = 0:0 ]"
in_upper getfattr -R -h -d -m '^trusted\.overlay\.' usr/share
if getfattr -h -n trusted.overlay.redirect "$UPPER/usr/share/doc2" >/dev/null 2>&1; then
    echo "the rename is recorded as a redirect (trusted.overlay.redirect on usr/share/doc2)"
else
    echo "the renamed tree was copied up whole: the upper describes the rename without redirects"
fi
run podman diff demo

step "commit the container and run the new image (on unionfs again)"
run podman commit -q demo localhost/demo:2
run podman run --rm localhost/demo:2 sh -c 'cat /etc/motd; ls /usr/lib /usr/share; test ! -e /etc/app.conf'
check "the committed image has the changes" \
    bash -c "podman run --rm localhost/demo:2 sh -c 'test -f /usr/share/doc2/base/README && test ! -e /usr/share/doc && test ! -e /usr/lib/oldpkg'"

step "remove the container: containers-storage unmounts with fusermount3 -u"
run podman rm -f -t 0 demo
check "the unionfs mount is gone" test -z "$(fstype_of "$MERGED")"

printf '\n%sdemo-container: OK%s\n' "$G" "$N"
