"""``unionfs lab [EXERCISE]``: list the exercises, or run one on a real mount (lab/session.py).
``--json`` prints a versioned record of the steps on stdout (the narrative then goes to stderr).

Exit status: 0 every prediction right; 2 some prediction wrong; 3 the filesystem did not behave as
the lesson teaches; 1 bad input or end of input before the last step; 130 interrupted.
"""
import argparse
import json

from ..lab.session import Lab, LabError, catalog, find_exercise, parse_answers, require_root

COMMANDS = {"lab"}

LAB_HELP = """\
Guided exercises on copy-on-write, each on its own small layers and a real unionfs mount in
a temp dir (lower/, upper/, work/, merged/), removed at the end. Each step shows the layers,
asks what will happen, runs a real command through merged/ and checks your prediction
against what is really on disk in upper/.

Without EXERCISE, list the exercises. Exit status: 0 every prediction right, 2 some wrong,
3 the filesystem did not behave as the lesson teaches, 1 bad input or end of input.
"""


def register(sub):
    p = sub.add_parser("lab", help="guided exercises on copy-on-write, on a real mount",
                       description=LAB_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exercise", nargs="?", help="the exercise to run (omit to list them)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--answers", metavar="A,B,...",
                     help="the predictions, one per step, instead of asking on stdin")
    how.add_argument("--auto", action="store_true",
                     help="answer as the lesson teaches (prints the expected answers)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON record of the steps on stdout (the narrative goes to stderr)")


def list_exercises(as_json):
    doc = catalog()
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print("Exercises (unionfs lab NAME runs one; --auto shows the answers, --answers a,b,... "
          "scripts it, --json records it):")
    for e in doc["exercises"]:
        print("  %-14s %d steps  %s" % (e["name"], e["steps"], e["title"]))
    return 0


def run(args):
    """Run a parsed `lab` command; returns the exit status."""
    if args.exercise is None:
        if args.answers is not None or args.auto:
            raise LabError("--answers and --auto need an exercise: unionfs lab NAME")
        return list_exercises(args.json)
    ex = find_exercise(args.exercise)
    answers = parse_answers(ex, args.answers) if args.answers is not None else None
    require_root()
    status, record = Lab(ex, answers, args.auto, args.json).run()
    if args.json:
        print(json.dumps(record, indent=2))
    return status
