"""``unionfs lab``: short guided exercises on copy-on-write, run against a real unionfs mount.

* ``sandbox.py`` owns the lab directory (lower, upper, work, merged), the mount and its removal,
  and reading the real state of each layer (whiteouts and markers recognised by ``whiteout.py``);
* ``exercises.py`` owns the lessons: their layers, steps, questions and how the observed state
  of each step is classified into one of the question's answers;
* ``session.py`` owns one run of an exercise: asking, checking, the report and the JSON record
  (the verb itself, ``unionfs lab``, is unionfs/cli/lab.py).

A step's verdict is never taken from the lesson alone: after the step runs, the real upper, lower
and merged directories are inspected and classified, and that outcome is compared with both the
learner's prediction and the outcome the lesson claims.
"""
