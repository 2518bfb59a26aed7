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
PURE = {"host_ns", "host_name", "vtep_ip", "etcd_ip", "sandbox_name"}


def _lab_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The names a module binds, at import (in `try` and `if` too), to the lab package or
    its modules, and those it binds to the lab's naming functions."""
    modules, pure = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "lab"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lab":
            for a in node.names:
                (pure if a.name in PURE else modules).add(a.asname or a.name)   # "*": caught below
            if any(a.name == "*" for a in node.names):
                modules.add("*")
    return modules, pure


def _runs_at_import(n: ast.AST) -> list[ast.AST]:
    """The parts of n that run when the statement holding it runs: a function's or lambda's
    decorators and default values (not its body), a class's bases, keywords, decorators and
    body (its methods' bodies not)."""
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = n.args
        return list(getattr(n, "decorator_list", [])) + a.defaults + [d for d in a.kw_defaults if d is not None]
    return list(ast.iter_child_nodes(n))


def _calls_into(node: ast.AST, modules: set[str], pure: set[str]) -> list[ast.Call]:
    """Calls run at import under node whose callee is one of modules or an attribute of
    one, but for the naming functions."""
    found, todo = [], [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Call):
            root = n.func
            while isinstance(root, ast.Attribute):
                root = root.value
            named_pure = (isinstance(n.func, ast.Attribute) and n.func.attr in PURE) or \
                (isinstance(n.func, ast.Name) and n.func.id in pure)
            if isinstance(root, ast.Name) and not named_pure and (root.id in modules or "*" in modules):
                found.append(n)
        todo += _runs_at_import(n)
    return found


def import_time_lab_calls(source: str) -> list[int]:
    """Line numbers of calls into the lab that a module makes when it is imported."""
    tree = ast.parse(source)
    modules, pure = _lab_names(tree)
    if not modules:
        return []
    if "*" in modules:    # any bare call may be the lab's: only names bound by the module itself are not
        modules = {"*"}
    return sorted({c.lineno for stmt in tree.body if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                   for c in _calls_into(stmt, modules, pure)})


def test_the_check_sees_a_module_level_lab_call():
    runs = [
        'from lab import topology as lab\nURL = lab.registry_url("etcd")\n',
        'from lab import topology as lab\nimport pytest\n@pytest.mark.skipif(lab.load() is None, reason="x")\n'
        'def test_a():\n    pass\n',
        'from lab import topology as lab\nclass T:\n    URL = lab.registry_url("etcd")\n',
        'from lab import topology as lab\ndef test_a(u=lab.load()):\n    pass\n',
        'from lab import topology as lab\nf = lambda u=lab.load(): u\n',
        'try:\n    import lab.topology as t\nexcept ImportError:\n    t = None\nX = t.load()\n',
        'from lab.topology import *\nX = load()\n',
        'from lab.topology import registry_url\nURL = registry_url("etcd")\n',
    ]
    for src in runs:
        assert import_time_lab_calls(src), src
    later = [
        'from lab import topology as lab\ndef in_registry():\n    return lab.registry_url("etcd")\n',
        'from lab import topology as lab\nf = lambda: lab.load()\n',
        'from lab import topology as lab\nclass T:\n    def url(self):\n        return lab.registry_url("etcd")\n',
        'from lab import topology as lab\nH1, H2 = lab.host_ns(1), lab.host_ns(2)\n',
        'from lab.topology import host_ns\nH1 = host_ns(1)\n',
        'import os\nX = os.getpid()\n',
    ]
    for src in later:
        assert not import_time_lab_calls(src), src


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
