"""The lessons of ``unionfs lab``: each exercise's lower layer and its steps.

A step is a real command run in the lab directory (through ``merged/``, the mount), a question
asked before it runs, the answer the lesson teaches (``expected``) and two functions that never
look at that answer: ``observe`` reads facts from the real ``upper/``, ``lower/`` and ``merged/``
after the step, and ``classify`` says which answer those facts match (None: none of them). The
runner compares that outcome with the prediction and with ``expected``, so a filesystem that
stops behaving as a lesson teaches is reported, not papered over.
"""
import hashlib
import os
import subprocess
from dataclasses import dataclass, field

from .sandbox import entry, usage, walk

MIB = 1 << 20


def _noise(n, seed):
    """n bytes that neither compress nor contain holes, the same on every run."""
    return hashlib.shake_256(seed.encode()).digest(n)


@dataclass
class Step:
    title: str
    command: str          # what runs, in the lab directory (`sh -c`) unless run is given
    question: str
    choices: dict         # answer -> the outcome it predicts
    expected: str         # the answer the lesson teaches
    why: str
    observe: object       # (sandbox) -> {fact: value}, read from the real directories
    classify: object      # (facts) -> the answer the facts match, or None
    run: object = None    # (sandbox) -> (exit status, output), instead of the shell command


@dataclass
class Exercise:
    name: str
    title: str
    intro: str
    lower: dict           # relative path -> (bytes, mode)
    steps: list = field(default_factory=list)


def run_step(step, sb):
    """Run a step in the lab directory; returns (exit status, output)."""
    if step.run is not None:
        return step.run(sb)
    try:
        proc = subprocess.run(["sh", "-c", step.command], cwd=sb.base, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=60)
    except subprocess.TimeoutExpired:
        return 124, "(no answer from the mount within 60 s)\n"
    return proc.returncode, proc.stdout


# ---- reading the real state --------------------------------------------------------------------

def at(sb, d, rel):
    return entry(sb.path(d, rel))


def text(sb, d, rel):
    try:
        with open(sb.path(d, rel), "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def names(sb, d, rel):
    try:
        return sorted(os.listdir(sb.path(d, rel)))
    except OSError:
        return None


def whiteouts_in(sb, d, rel):
    """Names of the char 0/0 whiteouts directly in the real directory d/rel."""
    return [n for n in names(sb, d, rel) or [] if at(sb, d, os.path.join(rel, n))["whiteout"]]


def files_under(sb, d, rel):
    """How many regular files (real data) there are below d/rel."""
    return sum(1 for _rel, rec in walk(sb.path(d, rel)) if rec["type"] == "file")


def _first(*pairs):
    """The answer of the first (condition, answer) pair that holds, else None."""
    return next((answer for cond, answer in pairs if cond), None)


def _is_file(rec):
    return rec.get("type") == "file"


# ---- copy-up -----------------------------------------------------------------------------------

MOTD = "Welcome to the lab.\n"
LINE = "hello from the lab\n"

COPY_UP = Exercise(
    "copy-up", "A change copies the file up; a read copies nothing",
    "lower/ is read-only. The first change to one of its files through merged/ copies that file\n"
    "into upper/ and changes the copy.",
    {"etc/motd": (MOTD.encode(), 0o644), "etc/hostname": (b"lab\n", 0o644)},
    [
        Step("read a lower file", "cat merged/etc/motd",
             "Does reading merged/etc/motd put a copy of it in upper/?",
             {"y": "yes: the file is copied up to be read",
              "n": "no: the read is served by lower/etc/motd; upper/ stays empty"}, "n",
             "Copy-up happens on the first change, never on a read: reads go straight to the "
             "layer that holds the file.",
             lambda sb: {"upper_motd": at(sb, "upper", "etc/motd"),
                         "upper": usage(sb.path("upper"))},
             lambda f: "y" if f["upper_motd"]["exists"] else "n"),
        Step("append to it", "echo '%s' >> merged/etc/motd" % LINE.strip(),
             "What happens on disk?",
             {"a": "lower/etc/motd is changed in place",
              "b": "upper/etc/motd appears: a whole copy of the lower file plus the new line; "
                   "lower/etc/motd is unchanged",
              "c": "upper/etc/motd appears holding only the new line (a diff against lower)"},
             "b",
             "The whole file is copied to upper/ (built in work/, then renamed into place) and "
             "the write goes to the copy. From now on upper/etc/motd hides lower/etc/motd.",
             lambda sb: {"upper_motd": at(sb, "upper", "etc/motd"),
                         "upper_text": text(sb, "upper", "etc/motd"),
                         "lower_text": text(sb, "lower", "etc/motd")},
             lambda f: _first((not f["lower_unchanged"], "a"),
                              (f["upper_text"] == MOTD + LINE, "b"),
                              (f["upper_text"] == LINE, "c"))),
        Step("look at upper/etc", "ls -A upper/etc",
             "lower/etc holds motd and hostname. What is in upper/etc now?",
             {"a": "motd and hostname: the whole directory was copied up",
              "b": "only motd: its parent directory was created in upper/, its siblings were "
                   "not copied"}, "b",
             "Copy-up copies the changed file and creates its parent directories (with their "
             "owner, mode and times); the rest of the directory still comes from lower/ and is "
             "merged at lookup.",
             lambda sb: {"upper_etc": names(sb, "upper", "etc")},
             lambda f: _first((f["upper_etc"] == ["hostname", "motd"], "a"),
                              (f["upper_etc"] == ["motd"], "b"))),
    ])

# ---- whiteout ----------------------------------------------------------------------------------

NOTES = "remember the milk\n"

WHITEOUT = Exercise(
    "whiteout", "Deleting a lower file leaves a whiteout",
    "lower/ cannot change, so deleting one of its names through merged/ has to be recorded in\n"
    "upper/.",
    {"notes.txt": (NOTES.encode(), 0o644), "docs/guide.txt": (b"a guide\n", 0o644)},
    [
        Step("delete a lower file", "rm merged/notes.txt",
             "What does upper/ hold afterwards?",
             {"a": "nothing: lower/notes.txt itself is deleted",
              "b": "upper/notes.txt, a character device 0/0 (a whiteout) hiding the lower file",
              "c": "an empty file upper/.wh.notes.txt (the marker image tarballs use)"}, "b",
             "A whiteout, in the kernel's format: a character device with device number 0/0 "
             "under the deleted name (ls -l shows 'c--------- 0, 0'). It hides the name in every "
             "layer below. Image tarballs spell it .wh.notes.txt; unionfs reads both, and "
             "`unionfs commit` writes that form.",
             lambda sb: {"upper_notes": at(sb, "upper", "notes.txt"),
                         "upper_oci_marker": at(sb, "upper", ".wh.notes.txt"),
                         "lower_notes": at(sb, "lower", "notes.txt"),
                         "merged_notes": at(sb, "merged", "notes.txt")},
             lambda f: _first((not f["lower_notes"]["exists"], "a"),
                              (f["upper_notes"].get("whiteout") and not f["merged_notes"]["exists"],
                               "b"),
                              (f["upper_oci_marker"]["exists"], "c"))),
        Step("create and delete a new file",
             "echo draft > merged/scratch.txt && rm merged/scratch.txt",
             "No lower layer has scratch.txt. Does upper/ keep a whiteout named scratch.txt?",
             {"y": "yes: every deletion leaves a whiteout",
              "n": "no: nothing below has the name, so there is nothing to hide"}, "n",
             "A whiteout is only needed when a lower layer has the name. Deleting a file that "
             "lives only in upper/ just removes it.",
             lambda sb: {"upper_scratch": at(sb, "upper", "scratch.txt")},
             lambda f: _first((f["upper_scratch"].get("whiteout"), "y"),
                              (not f["upper_scratch"]["exists"], "n"))),
        Step("create the deleted name again", "echo 'new notes' > merged/notes.txt",
             "notes.txt is whited out. What happens when you create it again?",
             {"a": "the whiteout stays and hides the new file too",
              "b": "the whiteout is replaced by a regular file upper/notes.txt with the new text; "
                   "lower/notes.txt still holds the old text and does not show",
              "c": "lower/notes.txt comes back, with 'new notes' appended"}, "b",
             "Creating over a whiteout replaces it (atomically, with renameat2 RENAME_EXCHANGE). "
             "The new file starts empty: nothing of the lower file shows through.",
             lambda sb: {"upper_notes": at(sb, "upper", "notes.txt"),
                         "merged_text": text(sb, "merged", "notes.txt"),
                         "lower_text": text(sb, "lower", "notes.txt")},
             lambda f: _first((f["upper_notes"].get("whiteout"), "a"),
                              (f["merged_text"] == NOTES + "new notes\n", "c"),
                              (_is_file(f["upper_notes"]) and f["merged_text"] == "new notes\n"
                               and f["lower_text"] == NOTES, "b"))),
    ])

# ---- opaque directory --------------------------------------------------------------------------

OPAQUE = Exercise(
    "opaque", "A directory made again is opaque",
    "lower/cache holds a.tmp and b.tmp. Delete the directory through merged/, then make it again.",
    {"cache/a.tmp": (b"a\n", 0o644), "cache/b.tmp": (b"b\n", 0o644),
     "keep.txt": (b"keep\n", 0o644)},
    [
        Step("delete a lower directory", "rm -rf merged/cache",
             "What does upper/ hold afterwards?",
             {"a": "a directory upper/cache holding whiteouts for a.tmp and b.tmp",
              "b": "one whiteout: upper/cache is a character device 0/0",
              "c": "nothing: lower/cache is deleted"}, "b",
             "rm -rf first whites out a.tmp and b.tmp inside a copied-up upper/cache; the rmdir "
             "then replaces that directory of whiteouts by a single whiteout for cache.",
             lambda sb: {"upper_cache": at(sb, "upper", "cache"),
                         "upper_cache_whiteouts": whiteouts_in(sb, "upper", "cache"),
                         "lower_cache": names(sb, "lower", "cache")},
             lambda f: _first((not f["lower_unchanged"], "c"),
                              (f["upper_cache"].get("whiteout"), "b"),
                              (f["upper_cache_whiteouts"] == ["a.tmp", "b.tmp"], "a"))),
        Step("make the directory again", "mkdir merged/cache",
             "How does upper/ now record that lower/cache's files must stay hidden?",
             {"a": "whiteouts for a.tmp and b.tmp inside the new upper/cache",
              "b": "upper/cache is a new directory carrying the xattr trusted.overlay.opaque=y: "
                   "nothing below it is merged",
              "c": "it does not: a.tmp and b.tmp show again in merged/cache"}, "b",
             "mkdir over a whiteout makes an opaque directory. Opaque means: stop the lookup here, "
             "the layers below contribute nothing to this directory. See it with "
             "`getfattr -d -m - upper/cache`.",
             lambda sb: {"upper_cache": at(sb, "upper", "cache"),
                         "upper_cache_whiteouts": whiteouts_in(sb, "upper", "cache"),
                         "merged_cache": names(sb, "merged", "cache")},
             lambda f: _first((bool(f["merged_cache"]), "c"),
                              (f["upper_cache"].get("opaque") and not f["upper_cache_whiteouts"],
                               "b"),
                              (f["upper_cache_whiteouts"] == ["a.tmp", "b.tmp"], "a"))),
        Step("add a file and list", "touch merged/cache/c.tmp && ls -A merged/cache",
             "What does ls -A merged/cache print?",
             {"a": "a.tmp b.tmp c.tmp", "b": "c.tmp only"}, "b",
             "The opaque directory shows only what upper/cache holds; lower/cache is still there, "
             "unchanged, and hidden.",
             lambda sb: {"merged_cache": names(sb, "merged", "cache"),
                         "lower_cache": names(sb, "lower", "cache")},
             lambda f: _first((f["merged_cache"] == ["a.tmp", "b.tmp", "c.tmp"], "a"),
                              (f["merged_cache"] == ["c.tmp"], "b"))),
    ])

# ---- deleted bytes still ship ------------------------------------------------------------------


def _write_layers(sb):
    """What `unionfs commit` does with an upper: write it as an OCI layer tar (and the lower as
    the base layer's tar, so both sizes can be compared)."""
    from ..image.changes import Changes
    from ..image.commit import write_layer

    out = []
    for name, upper, lowers in (("layer-base.tar", "lower", []),
                                ("layer-new.tar", "upper", [sb.path("lower")])):
        with open(sb.path(name), "wb") as f:
            _diff_id, size, _skipped = write_layer(Changes(sb.path(upper), lowers).layer_entries(), f)
        out.append("%s: %d bytes" % (name, size))
    return 0, "\n".join(out) + "\n"


def _tar_facts(sb, name):
    import tarfile
    with tarfile.open(sb.path(name)) as tar:
        members = {m.name: m.size for m in tar.getmembers()}
    return {"bytes": os.path.getsize(sb.path(name)), "members": members}


DELETED_BYTES = Exercise(
    "deleted-bytes", "Deleted bytes still ship",
    "lower/big.bin is 1 MiB of data. Delete it through merged/, then turn upper/ into an image\n"
    "layer as `unionfs commit` does.",
    {"big.bin": (_noise(MIB, "big.bin"), 0o644), "readme.txt": (b"small\n", 0o644)},
    [
        Step("delete the big file", "rm merged/big.bin",
             "How much file data do lower/ and upper/ hold on disk afterwards, together?",
             {"a": "next to nothing: deleting big.bin freed its 1 MiB",
              "b": "still 1 MiB: lower/big.bin is untouched; upper/ holds only a 0-byte whiteout",
              "c": "2 MiB: upper/ keeps a copy so the file can be restored"}, "b",
             "merged/ no longer shows big.bin, but its bytes are still in lower/: a layer above "
             "can only hide a name, never shrink the layers below it.",
             lambda sb: {"lower_big": at(sb, "lower", "big.bin"),
                         "upper_big": at(sb, "upper", "big.bin"),
                         "merged_big": at(sb, "merged", "big.bin"),
                         "lower": usage(sb.path("lower")), "upper": usage(sb.path("upper"))},
             lambda f: _first((f["lower"]["allocated"] < MIB, "a"),
                              (f["upper"]["allocated"] >= MIB, "c"),
                              (f["upper_big"].get("whiteout") and not f["merged_big"]["exists"],
                               "b"))),
        Step("commit the upper as a layer", "unionfs commit (its layer writer): "
             "upper/ -> layer-new.tar; lower/ -> layer-base.tar",
             "An image of the base layer plus this new layer is pushed. How many bytes of layer "
             "tars does it ship?",
             {"a": "a few KiB: big.bin was deleted, so it is not shipped",
              "b": "a little over 1 MiB: layer-base.tar still carries big.bin; layer-new.tar only "
                   "adds an empty .wh.big.bin",
              "c": "over 2 MiB"}, "b",
             "Layers are immutable and every layer of an image is shipped. To really drop bytes, "
             "delete them in the layer that adds them (RUN fetch && use && rm in one step), or "
             "rebuild/squash the base.",
             lambda sb: {"base_tar": _tar_facts(sb, "layer-base.tar"),
                         "new_tar": _tar_facts(sb, "layer-new.tar")},
             lambda f: _first(
                 (f["base_tar"]["bytes"] + f["new_tar"]["bytes"] < MIB, "a"),
                 (f["base_tar"]["bytes"] + f["new_tar"]["bytes"] >= 2 * MIB, "c"),
                 (f["base_tar"]["members"].get("big.bin") == MIB
                  and f["new_tar"]["members"].get(".wh.big.bin") == 0, "b")),
             run=_write_layers),
    ])

# ---- chmod copies the whole file ---------------------------------------------------------------

CHMOD = Exercise(
    "chmod", "chmod copies the whole file",
    "lower/data.bin is 1 MiB, mode 0644. Change only its mode through merged/.",
    {"data.bin": (_noise(MIB, "data.bin"), 0o644)},
    [
        Step("chmod a lower file", "chmod 600 merged/data.bin",
             "How much data does upper/ hold afterwards?",
             {"a": "none: the mode of lower/data.bin is changed in place",
              "b": "almost none: only the new mode is recorded, the data stays in lower/ "
                   "(a metadata-only copy)",
              "c": "a full 1 MiB copy of data.bin, with mode 0600"}, "c",
             "A file's metadata lives with its data, so any metadata change (chmod, chown, touch, "
             "setfattr) copies the whole file up first. The kernel's metacopy=on avoids that; "
             "unionfs, like the kernel's default, does not. A `chmod -R` over a big lower tree "
             "duplicates all of it in upper/ (and in the image layer a Dockerfile RUN makes).",
             lambda sb: {"upper_data": at(sb, "upper", "data.bin"),
                         "lower_data": at(sb, "lower", "data.bin"),
                         "merged_data": at(sb, "merged", "data.bin")},
             lambda f: _first((not f["lower_unchanged"], "a"),
                              (_is_file(f["upper_data"])
                               and f["upper_data"]["allocated"] < f["lower_data"]["size"] // 2,
                               "b"),
                              (_is_file(f["upper_data"]) and f["upper_data"]["mode"] == "0600"
                               and f["upper_data"]["sha256"] == f["lower_data"]["sha256"], "c"))),
        Step("chmod it back", "chmod 644 merged/data.bin",
             "The mode is the lower file's again. Does the copy in upper/ go away?",
             {"y": "yes: the file matches lower/ again, so the copy is dropped",
              "n": "no: upper/data.bin stays, 1 MiB; an upper never returns to the lower version"},
             "n",
             "Nothing compares the copy with the lower file again: once copied up, a file stays "
             "in upper/ until it is deleted (and then it becomes a whiteout).",
             lambda sb: {"upper_data": at(sb, "upper", "data.bin")},
             lambda f: "n" if _is_file(f["upper_data"]) else "y"),
    ])

# ---- rename of a lower directory ---------------------------------------------------------------

RENAME_DIR = Exercise(
    "rename-dir", "Renaming a lower directory records a redirect",
    "lower/project holds README and src/main.c. Rename the directory through merged/.",
    {"project/README": (b"# project\n", 0o644), "project/src/main.c": (b"int main;\n", 0o644)},
    [
        Step("rename a lower directory", "mv merged/project merged/renamed",
             "What does upper/ hold afterwards?",
             {"a": "a full copy of the project tree under upper/renamed",
              "b": "an empty directory upper/renamed carrying trusted.overlay.redirect=project "
                   "(where its lower contents are), and a whiteout upper/project",
              "c": "nothing: mv fails with EXDEV (Invalid cross-device link)"}, "b",
             "As the kernel does with redirect_dir=on, the rename is recorded instead of copying "
             "the tree: the new directory says where to look in the layers below, and a whiteout "
             "hides the old name. Overlays without redirects fail with EXDEV, and mv then falls "
             "back to copying everything.",
             lambda sb: {"upper_renamed": at(sb, "upper", "renamed"),
                         "upper_project": at(sb, "upper", "project"),
                         "upper_files_under_renamed": files_under(sb, "upper", "renamed"),
                         "merged_renamed": names(sb, "merged", "renamed")},
             lambda f: _first((f["exit_status"] != 0, "c"),
                              (f["upper_files_under_renamed"] > 0, "a"),
                              (f["upper_renamed"].get("redirect") == "project"
                               and f["upper_project"].get("whiteout")
                               and f["merged_renamed"] == ["README", "src"], "b"))),
        Step("edit a file in the renamed directory", "echo '# edited' >> merged/renamed/README",
             "Where does the edited copy of README land?",
             {"a": "upper/project/README: copy-up follows the original name",
              "b": "upper/renamed/README; lower/project/README is unchanged",
              "c": "lower/project/README is changed in place"}, "b",
             "The redirect is only used to find lower contents; the copy-up goes to the "
             "directory's new name, in upper/.",
             lambda sb: {"upper_renamed_readme": at(sb, "upper", "renamed/README"),
                         "upper_project": at(sb, "upper", "project")},
             lambda f: _first((not f["lower_unchanged"], "c"),
                              (_is_file(f["upper_renamed_readme"]), "b"),
                              (f["upper_project"].get("type") == "dir", "a"))),
    ])

EXERCISES = {e.name: e for e in (COPY_UP, WHITEOUT, OPAQUE, DELETED_BYTES, CHMOD, RENAME_DIR)}
