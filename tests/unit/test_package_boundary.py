"""The packages of unionfs import one another one way (cli -> {image, inspect, lab, serve} ->
mounts -> fuse -> core): no import circle between packages or top-level modules, and only
unionfs/cli/ (and the ``python -m unionfs`` shim) imports the command line."""
import ast
import pathlib

import unionfs

ROOT = pathlib.Path(unionfs.__file__).parent
SHIM = ROOT / "__main__.py"


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path):
    """The absolute names of everything a file imports (`from . import x` also counts x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (n.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {base + "." + a.name for a in n.names}
    return out


def _node(modname):
    """The unit a module belongs to: its package under unionfs/, or itself for a top-level
    module; None outside unionfs or for a name that is no module."""
    parts = modname.split(".")
    if parts[0] != "unionfs" or len(parts) < 2:
        return None
    top = parts[1]
    if (ROOT / top).is_dir() and (ROOT / top / "__init__.py").exists():
        return top
    return top if (ROOT / (top + ".py")).exists() else None


def _graph():
    graph = {}
    for path in ROOT.rglob("*.py"):
        if path == SHIM:
            continue
        src = _node(_module_name(path))
        if src is None:   # unionfs/__init__.py: the version only
            continue
        deps = {_node(m) for m in _imported(path)} - {None, src}
        graph.setdefault(src, set()).update(deps)
    return graph


def _cycle(graph):
    """One import circle as a list of nodes, or None."""
    done, stack = set(), []

    def visit(node):
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            found = visit(dep)
            if found:
                return found
        stack.pop()
        done.add(node)
        return None
    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_the_graph_sees_the_known_imports():
    g = _graph()
    assert {"image", "inspect", "lab", "serve", "mount"} <= g["cli"]
    assert "core" in g["image"] and "image" in g["inspect"] and "core" in g["fuse"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_between_packages():
    assert _cycle(_graph()) is None


def test_only_the_command_line_imports_the_command_line():
    outside = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                     if p != SHIM and not p.is_relative_to(ROOT / "cli")
                     and any(_node(m) == "cli" for m in _imported(p)))
    assert outside == []
