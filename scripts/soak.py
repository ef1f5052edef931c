#!/usr/bin/env python3
"""Long runs of the reliability tests, for as long as asked (the test suite runs short ones).

    scripts/soak.py --minutes 10                 # all parts (what `make soak` runs)
    scripts/soak.py --only diff --minutes 60     # Hypothesis vs the kernel's overlayfs only
    scripts/soak.py --only diff --seed 1234 --examples 15 --steps 25   # replay one seed
    scripts/soak.py --only crash --crash-rounds 200
    scripts/soak.py --only rss --rss-paths 1000000
    scripts/soak.py --only fsx --fsx-ops 50000
    scripts/soak.py --only notify --notify-minutes 5

Parts:
  diff   Hypothesis stateful testing, unionfs and the kernel's overlayfs side by side
         (tests/differential/test_soak.py): runs seed after seed until --minutes are up and
         prints operations per second; on a mismatch it prints the shrunk failing sequence and
         the seed, and exits 1. --seed S without --minutes replays that one seed.
  crash  SIGKILL crash rounds (tests/integration/test_crash.py).
  rss    a walk of --rss-paths paths through a mount; prints the daemon's RSS (and fails over
         --rss-ceiling-mib).
  fsx    scripts/fsx.py on lower files with --fsx-ops operations per file.
  notify processes as uid 65534 reading hard links with page drops, writing, linking, renaming
         and unlinking on an allow_other mount (tests/integration/test_notify_stress.py) for
         --notify-minutes (default: --minutes / 4); a hang fails it (the watchdog aborts the
         connection and kills the daemon).

Needs root, /dev/fuse and the kernel's overlayfs. Everything is made in a temporary directory
that is unmounted and removed at the end (also on Ctrl-C).
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))
os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")

MiB = 1 << 20


def say(*a):
    print(*a, flush=True)


def part_diff(base, args):
    from tests.differential.test_soak import SoakEnv, run_soak
    env = SoakEnv(os.path.join(base, "diff"), batch=args.batch)
    replay = args.seed is not None and args.minutes is None
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    deadline = time.monotonic() + 60 * (args.minutes or 0)
    t0 = time.monotonic()
    env.start()
    try:
        while True:
            ops0, t = env.ops, time.monotonic()
            say("diff: seed %d: %d examples of up to %d steps ..." % (seed, args.examples,
                                                                      args.steps))
            try:
                run_soak(env, args.examples, args.steps, seed, check_every=args.check_every,
                         shrink=not args.no_shrink)
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                traceback.print_exc()
                say("FAILED: diff seed %d -- replay: scripts/soak.py --only diff --seed %d "
                    "--examples %d --steps %d --check-every %d" % (
                        seed, seed, args.examples, args.steps, args.check_every))
                return False
            dt = time.monotonic() - t
            say("diff: seed %d ok: %d operations on each mount in %.1f s (%.0f ops/s); total "
                "%d examples, %d operations, %.0f ops/s" % (
                    seed, env.ops - ops0, dt, (env.ops - ops0) / dt, env.examples, env.ops,
                    env.ops / (time.monotonic() - t0)))
            if replay or time.monotonic() >= deadline:
                break
            seed = random.randrange(1 << 31)
        env.stop(cross=True)
    finally:
        env.stop(cross=False)
    if env.problems:
        say("FAILED: diff cross check:\n" + "\n".join(env.problems))
        return False
    say("diff: %d examples, %d operations on each mount, %d cross checks, %.0f ops/s" % (
        env.examples, env.ops, env.cross_checks, env.ops / (time.monotonic() - t0)))
    return True


def part_crash(base, args):
    from tests.integration.test_crash import run_rounds
    seed = args.seed if args.seed is not None else random.randrange(1 << 20)
    say("crash: %d rounds, seed %d (round r uses seed %d*100003+r; replay one with "
        "UNIONFS_CRASH_SEED)" % (args.crash_rounds, seed, seed))
    t = time.monotonic()

    def report(r, stats):
        if (r + 1) % 10 == 0 or r + 1 == args.crash_rounds:
            say("crash: %d rounds, %.1f s/round: %r" % (
                r + 1, (time.monotonic() - t) / (r + 1), stats))
    try:
        run_rounds(os.path.join(base, "crash"), args.crash_rounds, seed, report)
    except AssertionError as e:
        say("FAILED: crash: %s" % e)
        return False
    return True


def part_rss(base, args):
    from tests.integration.conftest import daemon_pid
    from tests.integration.test_resources import build_tree, walk_rss
    from tests.mountutil import unionfs_mount
    d = {n: os.path.join(base, "rss", n) for n in ("lower", "upper", "work", "mnt")}
    for p in d.values():
        os.makedirs(p)
    t = time.monotonic()
    n = build_tree(d["lower"], args.rss_paths)
    say("rss: built %d paths in %.0f s" % (n, time.monotonic() - t))
    with unionfs_mount([d["lower"]], d["upper"], d["work"], d["mnt"]):
        pid = daemon_pid(d["mnt"])
        t = time.monotonic()
        n, before, peak, after = walk_rss(
            d["mnt"], pid, sample_every=50000,
            log=lambda k, rss: say("rss: %8d paths, peak RSS %.0f MiB" % (k, rss / MiB)))
        dt = time.monotonic() - t
        n2, _, peak2, after2 = walk_rss(d["mnt"], pid, sample_every=10 ** 9)
    say("rss: walk of %d paths in %.0f s (%.0f lookups/s): daemon RSS %.0f MiB before, %.0f MiB "
        "peak, %.0f MiB after; second walk: peak %.0f MiB, after %.0f MiB" % (
            n, dt, n / dt, before / MiB, peak / MiB, after / MiB, peak2 / MiB, after2 / MiB))
    worst = max(peak, peak2)
    if worst > args.rss_ceiling_mib * MiB:
        say("FAILED: rss: %.0f MiB over the ceiling of %d MiB" % (worst / MiB,
                                                                 args.rss_ceiling_mib))
        return False
    return True


def part_fsx(base, args):
    import fsx
    seed = args.seed if args.seed is not None else random.randrange(1 << 20)
    try:
        fsx.check_on_mounts(os.path.join(base, "fsx"), seed, args.fsx_ops,
                            log=lambda s: say(s))
    except fsx.FsxError as e:
        say("FAILED: %s\nreplay: scripts/fsx.py --seed %d --ops %d" % (e, seed, args.fsx_ops))
        return False
    return True


def part_notify(base, args):
    from tests.integration.test_notify_stress import run_stress
    minutes = args.notify_minutes if args.notify_minutes is not None else (args.minutes or 4) / 4
    d = os.path.join(base, "notify")
    os.makedirs(d)
    os.chmod(base, 0o755)  # the workers run as another user
    os.chmod(d, 0o755)
    try:
        reports = run_stress(d, 60 * minutes, log=say)
    except AssertionError as e:
        say("FAILED: notify: %s" % e)
        return False
    bad = [r for r in reports if r["errors"] or not r["ops"]]
    if bad:
        say("FAILED: notify: workers with errors or no progress: %r" % bad)
        return False
    return True


PARTS = {"diff": part_diff, "crash": part_crash, "rss": part_rss, "fsx": part_fsx,
         "notify": part_notify}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--minutes", type=float, default=None,
                    help="how long the diff part runs (default: one seed with --seed, else 10)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", choices=sorted(PARTS), action="append")
    ap.add_argument("--examples", type=int, default=100, help="Hypothesis examples per seed")
    ap.add_argument("--steps", type=int, default=50, help="steps per example")
    ap.add_argument("--check-every", type=int, default=3,
                    help="compare the merged trees every N steps (and at each example's end)")
    ap.add_argument("--no-shrink", action="store_true", help="print a failure unshrunk")
    ap.add_argument("--batch", type=int, default=300,
                    help="template copies per lower build (a remount and a cross check each)")
    ap.add_argument("--crash-rounds", type=int, default=100)
    ap.add_argument("--rss-paths", type=int, default=1_000_000)
    ap.add_argument("--rss-ceiling-mib", type=int, default=1024)
    ap.add_argument("--fsx-ops", type=int, default=20000)
    ap.add_argument("--notify-minutes", type=float, default=None)
    args = ap.parse_args(argv)
    if args.minutes is None and args.seed is None:
        args.minutes = 10
    if os.geteuid() != 0:
        say("soak: needs root (mounts, the kernel's overlayfs)")
        return 2
    parts = args.only or ["diff", "crash", "fsx", "rss", "notify"]
    base = tempfile.mkdtemp(prefix="unionfs-soak-")
    ok = True
    t = time.monotonic()
    try:
        for name in parts:
            say("== %s" % name)
            ok = PARTS[name](base, args) and ok
    except KeyboardInterrupt:
        say("soak: interrupted")
        ok = False
    finally:
        with open("/proc/self/mountinfo") as f:
            left = [l.split()[4] for l in f if l.split()[4].startswith(base + "/")]
        if left:
            say("soak: still mounted, not removing %s: %r" % (base, left))
        else:
            shutil.rmtree(base, ignore_errors=True)
    say("soak: %s after %.0f s" % ("ok" if ok else "FAILED", time.monotonic() - t))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
