#!/usr/bin/env bash
# A walk through the image commands on mounts/images/sample-oci.tar, in a temporary store:
# import, ls, history, mount read-only, mount --rw, change, diff, commit, save, import the saved
# archive elsewhere and mount it. Every mount is unmounted and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
if [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python; else PY=${PYTHON:-python3}; fi
T=$(mktemp -d)
cleanup() {
    for m in "$T"/mnt*; do
        if mountpoint -q "$m" 2>/dev/null; then fusermount3 -u "$m" || fusermount3 -u -z "$m"; fi
    done
    rm -rf "$T"
}
trap cleanup EXIT
u() { PYTHONPATH=$REPO "$PY" -m unionfs "$@" --store "$T/store"; }
step() { printf '\n\033[1m$ unionfs %s\033[0m\n' "$*"; }

step image import mounts/images/sample-oci.tar; u image import mounts/images/sample-oci.tar
step image ls;                        u image ls
step image history sample:1.0;        u image history sample:1.0
mkdir "$T/mnt" "$T/mnt2"
step image mount sample:1.0 MNT;      u image mount sample:1.0 "$T/mnt"
ls -l "$T/mnt" "$T/mnt/etc" "$T/mnt/opt/old"
u image umount "$T/mnt"
step image mount sample:1.0 MNT --rw; NAME=$(u image mount sample:1.0 "$T/mnt" --rw); echo "$NAME"
echo "changed" >> "$T/mnt/etc/passwd"; rm "$T/mnt/etc/precise"; mv "$T/mnt/usr/lib" "$T/mnt/usr/lib64"
step diff MNT;                        u diff "$T/mnt"
step commit MNT sample:2 -m demo;     u commit "$T/mnt" sample:2 -m demo
u image umount "$T/mnt"
step image save sample:2 -o sample2.tar; u image save sample:2 -o "$T/sample2.tar"
PYTHONPATH=$REPO "$PY" -m unionfs image import "$T/sample2.tar" --store "$T/store2" >/dev/null
PYTHONPATH=$REPO "$PY" -m unionfs image mount sample:2 "$T/mnt2" --store "$T/store2"
echo "re-imported elsewhere and mounted:"; ls "$T/mnt2/usr"; tail -1 "$T/mnt2/etc/passwd"
fusermount3 -u "$T/mnt2"
echo; echo "demo-image: OK"
