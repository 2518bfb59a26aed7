"""No test module reads the lab at import. Modules are imported when pytest
collects them, before any lab of the run exists: whatever lab is up then (a demo
left running before the suite) is what such a module-level value describes.
test_cluster.py computed its etcd URL so, and with a SQLite demo lab up at
collection its registry calls went out in plain HTTP to the module's TLS etcd,
which closed each connection (CI failed twice that way)."""

from __future__ import annotations

import ast
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The lab's naming functions: they read nothing, so a module may call them at import.
PURE = {"host_ns", "host_name", "vtep_ip", "etcd_ip"}


def _lab_names(tree: ast.Module) -> set[str]:
    """The names a module binds to the lab package or one of its modules."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "lab"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lab":
            names |= {a.asname or a.name for a in node.names}
    return names


def _calls_into(node: ast.AST, names: set[str]) -> list[ast.Call]:
    """Calls under node (functions' and lambdas' bodies not entered: they run later)
    whose callee is one of names or an attribute of one, but for the naming functions."""
    found, todo = [], [node]
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo += getattr(n, "decorator_list", [])     # decorators run at import
            continue
        if isinstance(n, ast.Call):
            root = n.func
            while isinstance(root, ast.Attribute):
                root = root.value
            pure = isinstance(n.func, ast.Attribute) and n.func.attr in PURE
            if isinstance(root, ast.Name) and root.id in names and not pure:
                found.append(n)
        todo += list(ast.iter_child_nodes(n))
    return found


def import_time_lab_calls(source: str) -> list[int]:
    """Line numbers of calls into the lab that a module makes when it is imported."""
    tree = ast.parse(source)
    names = _lab_names(tree)
    if not names:
        return []
    return sorted(c.lineno for stmt in tree.body if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                  for c in _calls_into(stmt, names))


def test_the_check_sees_a_module_level_lab_call():
    old = 'from lab import topology as lab\nimport pytest\nURL = lab.registry_url("etcd")\nH1 = lab.host_ns(1)\n' \
          '@pytest.mark.skipif(lab.load() is None, reason="x")\ndef test_a():\n    lab.up(1, [256])\n'
    assert import_time_lab_calls(old) == [3, 5]
    later = 'from lab import topology as lab\ndef in_registry():\n    return lab.registry_url("etcd")\n' \
            'f = lambda: lab.load()\n'
    assert import_time_lab_calls(later) == []


def test_no_test_module_reads_the_lab_when_imported():
    offenders = []
    for d, _, files in os.walk(TESTS):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                with open(path) as fh:
                    lines = import_time_lab_calls(fh.read())
                offenders += [f"{os.path.relpath(path, TESTS)}:{n}" for n in lines]
    assert not offenders, f"module-level calls into the lab (run at collection): {offenders}"
