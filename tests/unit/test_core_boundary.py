"""unionfs/core imports nothing outside itself but the standard library, and its modules import
each other without a circle (the layering the style guide asks for: fuse -> core -> layers)."""
import ast
import pathlib
import sys

import unionfs.core

CORE = pathlib.Path(unionfs.core.__file__).parent


def _imports(path):
    """[(level, module)] of every import statement in a file (the names of `from . import x`
    count as modules)."""
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out += [(0, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.module is None:
                out += [(n.level, a.name) for a in n.names]
            else:
                out.append((n.level, n.module))
    return out


def test_core_imports_only_itself_and_the_standard_library():
    outside = []
    for path in sorted(CORE.glob("*.py")):
        for level, mod in _imports(path):
            top = mod.split(".")[0]
            if level == 0 and top not in sys.stdlib_module_names:
                outside.append((path.name, mod))
            elif level > 1 or (level == 1 and not (CORE / (top + ".py")).exists()):
                outside.append((path.name, "." * level + mod))
    assert outside == []


def test_core_modules_import_each_other_without_a_circle():
    graph = {p.stem: {m.split(".")[0] for lvl, m in _imports(p) if lvl == 1}
             for p in CORE.glob("*.py")}
    done, stack = set(), []

    def visit(mod):
        assert mod not in stack, "import circle: %s" % " -> ".join(stack + [mod])
        if mod in done:
            return
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            visit(dep)
        stack.pop()
        done.add(mod)
    for mod in sorted(graph):
        visit(mod)
    assert {"union", "namei", "dir", "file", "copyup", "readdir", "observe"} <= set(graph)


def _outside(path, package):
    """The unionfs modules a file of `package` (unionfs.fuse, say) imports, dotted from
    unionfs."""
    base = package.split(".")[1:]
    out = set()
    for level, mod in _imports(path):
        if level == 0:
            if mod.split(".")[0] == "unionfs":
                out.add(".".join(mod.split(".")[1:]))
        else:
            out.add(".".join((base[:len(base) - level + 1] if level > 1 else base) + [mod]))
    return out


def test_fuse_imports_only_core_its_own_modules_and_control():
    """The FUSE layer calls down: the core, and the control directory it serves; never the
    observer's implementation or anything above it."""
    fuse = CORE.parent / "fuse"
    wrong = sorted((p.name, m) for p in fuse.glob("*.py") for m in _outside(p, "unionfs.fuse")
                   if m.split(".")[0] not in ("core", "fuse", "control"))
    assert wrong == []


def test_the_recorder_takes_from_core_only_the_observer_interface():
    """observe.py formats and counts what the core's events carry: it imports no core module
    it could use to reach back into the union."""
    mods = _outside(CORE.parent / "observe.py", "unionfs")
    assert {m for m in mods if m.startswith("core")} == {"core.observe"}
