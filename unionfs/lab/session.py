"""One run of a lab exercise: each step shows the state, asks for a prediction (stdin,
``--answers`` or ``--auto``), runs, then reads the real directories and says whether the
prediction was right and whether the filesystem did what the lesson teaches; the JSON record of
the steps. The mount and the lab directory are always removed, whichever way the run ends.

Exit status of a run: 0 every prediction right; 2 some prediction wrong; 3 the filesystem did not
behave as the lesson teaches; 1 end of input before the last step; 130 interrupted.
"""
import os
import sys
import textwrap

from ..errors import UnionfsError
from .exercises import EXERCISES, run_step
from .sandbox import Sandbox, interruptible, render

FORMAT = "unionfs-lab"
VERSION = 1


class LabError(UnionfsError):
    """A one-line, user-facing error about the lab request."""


class EndOfInput(Exception):
    """stdin ended (or the learner quit) before every step had an answer."""


def _choices(step):
    return "/".join(step.choices)


def parse_answers(ex, text):
    answers = [a.strip().lower() for a in text.split(",")]
    if len(answers) != len(ex.steps):
        raise LabError("lab %s has %d steps, --answers gives %d" % (
            ex.name, len(ex.steps), len(answers)))
    for i, (a, step) in enumerate(zip(answers, ex.steps), 1):
        if a not in step.choices:
            raise LabError("lab %s: answer %d is %r, not one of %s" % (
                ex.name, i, a, ", ".join(step.choices)))
    return answers


class Lab:
    """One run of an exercise, told on stdout (on stderr when the JSON record goes to stdout)."""

    def __init__(self, ex, answers=None, auto=False, as_json=False):
        self.ex = ex
        self.answers = answers
        self.auto = auto
        self.out = sys.stderr if as_json else sys.stdout

    def say(self, *lines):
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    def wrap(self, label, body):
        self.say(textwrap.fill(body, 96, initial_indent=label, subsequent_indent=" " * len(label)))

    def show(self, sb, dirs):
        for d in dirs:
            self.say(*render(sb.path(d), d))

    def predict(self, i, step):
        if self.answers is not None:
            self.say("Your prediction: %s   (--answers)" % self.answers[i - 1])
            return self.answers[i - 1]
        if self.auto:
            self.say("Expected answer: %s   (--auto)" % step.expected)
            return step.expected
        while True:
            self.out.write("Your prediction [%s, q quits]: " % _choices(step))
            self.out.flush()
            line = sys.stdin.readline()
            answer = line.strip().lower()
            if not line or answer in ("q", "quit"):
                if not line:
                    self.say("")  # end the prompt's line
                raise EndOfInput("no answer for step %d" % i if not line else "quit at step %d" % i)
            if answer in ("yes", "no") and answer[0] in step.choices:
                answer = answer[0]
            if answer in step.choices:
                return answer
            self.say("Please answer one of %s." % ", ".join(step.choices))

    def verdict(self, step, prediction, actual):
        what = "%s) %s" % (actual, step.choices[actual]) if actual else "none of the answers"
        if prediction == actual:
            self.wrap("Right: ", what)
        else:
            self.wrap("Not quite: ", "you predicted %s); what happened is %s" % (prediction, what))
        if actual != step.expected:
            self.wrap("WARNING: ", "unionfs did not behave as this lesson teaches. The lesson "
                      "says %s) %s; the real state above matches %s. Please report this "
                      "(the JSON record, --json, has every observed fact)." % (
                          step.expected, step.choices[step.expected], what))
        self.wrap("Why: ", step.why)

    def step(self, sb, i, step):
        self.say("", "== Step %d/%d: %s ==" % (i, len(self.ex.steps), step.title))
        if i == 1:  # later steps start from the state shown after the one before
            self.show(sb, ("lower", "upper", "merged"))
        self.say("", "Next: $ %s" % step.command)
        self.wrap("", step.question)
        for key, outcome in step.choices.items():
            self.wrap("  %s) " % key, outcome)
        prediction = self.predict(i, step)
        status, output = run_step(step, sb)
        self.say("$ %s" % step.command, *["  " + l for l in output.splitlines()])
        if status:
            self.say("  (exit status %d)" % status)
        facts = {"exit_status": status, "output": output,
                 "lower_unchanged": sb.fingerprint("lower") == sb.lower_digest}
        facts.update(step.observe(sb))
        actual = step.classify(facts)
        self.say("After the step:")
        self.show(sb, ("upper", "merged"))
        self.say("lower/ is %s" % ("unchanged" if facts["lower_unchanged"] else "CHANGED"))
        self.verdict(step, prediction, actual)
        return {"exercise": self.ex.name, "step": i, "title": step.title,
                "command": step.command, "question": step.question, "choices": step.choices,
                "prediction": prediction, "expected": step.expected, "actual": actual,
                "correct": prediction == actual, "lesson_holds": actual == step.expected,
                "observed": facts}

    def run(self):
        """Run every step; returns (exit status, record)."""
        steps = []
        record = {"format": FORMAT, "version": VERSION, "exercise": self.ex.name,
                  "title": self.ex.title,
                  "mode": "answers" if self.answers else "auto" if self.auto else "interactive",
                  "completed": False, "steps": steps}
        with interruptible():
            try:
                with Sandbox() as sb:
                    self.say("Lab: %s: %s" % (self.ex.name, self.ex.title), self.ex.intro,
                             "Lab directory: %s" % sb.base,
                             "  (while it waits for an answer, look around from another shell: "
                             "ls -l, stat, getfattr -d -m - upper/...)")
                    sb.build_lower(self.ex.lower)
                    sb.mount()
                    self.say("$ %s" % sb.mount_command())
                    for i, step in enumerate(self.ex.steps, 1):
                        steps.append(self.step(sb, i, step))
                record["completed"] = True
            except EndOfInput as e:
                record["stopped"] = str(e)
            except KeyboardInterrupt:
                record["stopped"] = "interrupted"
        record["correct"] = sum(s["correct"] for s in steps)
        record["all_correct"] = record["completed"] and record["correct"] == len(steps)
        record["lesson_holds"] = all(s["lesson_holds"] for s in steps)
        return self.finish(record), record

    def finish(self, record):
        steps = record["steps"]
        if "stopped" in record:
            print("unionfs: lab %s stopped (%s); unmounted and removed its directory" % (
                self.ex.name, record["stopped"]), file=sys.stderr)
            return 130 if record["stopped"] == "interrupted" else 1
        wrong = [str(s["step"]) for s in steps if not s["correct"]]
        self.say("", "%d of %d predictions right%s." % (
            record["correct"], len(steps), "" if not wrong else " (wrong: step %s)" % ", ".join(wrong)))
        if not record["lesson_holds"]:
            self.say("The filesystem did not behave as this lesson teaches (see the WARNING above).")
            return 3
        return 0 if not wrong else 2


def catalog():
    """The exercises as a versioned record: name, title, number of steps."""
    return {"format": FORMAT, "version": VERSION, "exercises": [
        {"name": e.name, "title": e.title, "steps": len(e.steps)} for e in EXERCISES.values()]}


def find_exercise(name):
    ex = EXERCISES.get(name)
    if ex is None:
        raise LabError("no exercise %r; the exercises are: %s" % (name, ", ".join(EXERCISES)))
    return ex


def require_root():
    if os.geteuid() != 0:
        raise LabError("the lab needs root: whiteouts (mknod 0/0) and trusted.overlay.* "
                       "xattrs in upper/ need CAP_MKNOD and CAP_SYS_ADMIN")
