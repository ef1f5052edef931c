"""Files of the store written and removed safely: JSON written atomically (fsynced, then renamed
into place), JSON read back with a corrupt file as an ImageError, and trees removed by directory
fds however deep they nest. store.py uses them and the other image modules take them from there
or from here."""
import contextlib
import json
import os
import stat
import tempfile

from .errors import ImageError


def write_json_atomic(path, obj):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (ValueError, RecursionError) as e:
        raise ImageError("store file %s is corrupt (%s)" % (path, e))


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path):
    """Remove a tree we own, even with read-only directories in it, and however deep it nests:
    a layer may hold paths far past PATH_MAX, thousands of levels down, which shutil.rmtree
    (recursive, by path) cannot remove. Walks down and back up by directory fds, one open at a
    time, and never follows a symlink. Best effort, as cleanup is: errors are ignored."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    parent, name = os.path.split(os.path.abspath(path))
    try:
        pfd = os.open(parent, _DIR)
    except OSError:
        return
    try:
        _rmtree_at(pfd, name)
    except OSError:
        pass
    finally:
        os.close(pfd)


def _open_dir(pfd, name):
    try:
        fd = os.open(name, _DIR, dir_fd=pfd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=pfd)
        fd = os.open(name, _DIR, dir_fd=pfd)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
        os.fchmod(fd, 0o700)    # unlinking in it needs write and search permission
    return fd


def _rmtree_at(pfd, name):
    """Remove directory name of pfd and all below it (pfd stays open)."""
    fd = _open_dir(pfd, name)
    stack = []                  # (name of the directory fd is, its parent's subdirectories left)
    here, todo = name, None
    try:
        while True:
            if todo is None:    # first visit: remove the non-directories, list the directories
                todo = []
                with os.scandir(fd) as it:
                    for de in it:
                        if de.is_dir(follow_symlinks=False):
                            todo.append(de.name)
                        else:
                            os.unlink(de.name, dir_fd=fd)
            if todo:
                child = todo.pop()
                nfd = _open_dir(fd, child)
                os.close(fd)
                stack.append((here, todo))
                fd, here, todo = nfd, child, None
                continue
            if not stack:
                break
            up = os.open("..", _DIR, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(here, dir_fd=fd)
            here, todo = stack.pop()
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)
