"""The import rule of the package layout, checked on the source (nothing is imported).

  layer 0  dataplane/core/      abi, errors, keys, model, state, procs, cwire
                                (and the compiled extension dataplane._cwire)
  layer 1  dataplane/kernel/    netlink, gso, bpfsys, maps, ringbuf, loader, bundle
  layer 1  dataplane/registry/
  layer 2  dataplane/node/
  layer 3  dataplane/agent/
  layer 4  dataplane/runtimes/  docker, cni
  layer 5  dataplane/cli/, dataplane/__init__.py, dataplane/__main__.py

a. A module imports only from its own subpackage or a strictly lower layer
   (kernel and registry, both layer 1, never import each other).
b. The runtimes reach the agent only through its API client, dataplane.agent.client.
c. Nothing in the package imports the top-level lab, bench or tests.
d. Only dataplane/kernel/loader.py imports bcc; only kernel/netlink.py,
   kernel/netns.py, kernel/gso.py, kernel/ethtool.py and kernel/conntrack.py import pyroute2.
e. Each BPF map has one writer module.
f. No file in the package is longer than 350 lines.

Every Import/ImportFrom node counts, wherever it is (inside functions, under
`if TYPE_CHECKING:`). Each rule is checked by a pure function over
{path: source}, so the self-tests at the end can feed it a violation.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = "dataplane"

LAYERS = {"core": 0, "kernel": 1, "registry": 1, "node": 2, "agent": 3, "runtimes": 4, "cli": 5}
TOP = "cli"                    # dataplane/__init__.py and __main__.py sit with the CLI, at the top
CORE_EXTENSIONS = {"_cwire"}   # compiled modules directly in dataplane/, treated as core
RUNTIMES_MAY_USE = "dataplane.agent.client"
FOREIGN = {"lab", "bench", "tests"}
ONLY_IN = {
    "bcc": {"dataplane/kernel/loader.py"},
    "pyroute2": {"dataplane/kernel/netlink.py", "dataplane/kernel/netns.py", "dataplane/kernel/gso.py",
                 "dataplane/kernel/ethtool.py", "dataplane/kernel/conntrack.py"},
}
MAP_WRITE = re.compile(r"\b(dp_[a-z_]+)\.(put|delete|put_many|delete_many|clear)\(")
MAX_LINES = 350


# --- the package as {path: source} ----------------------------------------------------

def _walk(followlinks: bool):
    for d, dirs, names in os.walk(ROOT / PKG, followlinks=followlinks):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for n in sorted(names):
            p = Path(d) / n
            yield p.relative_to(ROOT).as_posix(), p


@functools.cache
def sources() -> dict[str, str]:
    """Every .py file under dataplane/, by path relative to the repository."""
    return {rel: p.read_text(encoding="utf-8") for rel, p in _walk(False) if rel.endswith(".py")}


@functools.cache
def text_files() -> dict[str, str]:
    """Every file under dataplane/ that is text (compiled extensions left out)."""
    out = {}
    for rel, p in _walk(True):
        raw = p.read_bytes()
        if b"\0" not in raw:
            out[rel] = raw.decode("utf-8", errors="replace")
    return out


@functools.cache
def disk_modules() -> frozenset[str]:
    """Every module and package name that exists under dataplane/."""
    mods = {PKG}
    for rel, p in _walk(False):
        parts = rel.split("/")
        for i in range(1, len(parts)):        # packages, namespace ones included
            mods.add(".".join(parts[:i]))
        name = parts[-1]
        if name.endswith(".py"):
            stem = name[:-3]
            mods.add(".".join(parts[:-1]) if stem == "__init__" else ".".join(parts[:-1] + [stem]))
        elif name.endswith((".so", ".pyd")):
            mods.add(".".join(parts[:-1] + [name.split(".")[0]]))
    return frozenset(mods)


# --- classification ---------------------------------------------------------------------

def module_of(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(rel: str) -> str:
    """The package a relative import in this file is resolved against."""
    return ".".join(rel.split("/")[:-1])


def group_of_module(mod: str) -> str | None:
    """The subpackage (layer) a dataplane module belongs to; None outside the layout."""
    parts = mod.split(".")
    if parts[0] != PKG:
        return None
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    if parts[1] in CORE_EXTENSIONS:
        return "core"
    return parts[1] if parts[1] in LAYERS else None


def group_of_file(rel: str) -> str | None:
    parts = rel.split("/")
    if len(parts) == 2:
        return TOP if parts[1] in ("__init__.py", "__main__.py") else None
    return parts[1] if parts[1] in LAYERS else None


def describe(group: str | None) -> str:
    return f"layer {LAYERS[group]} {group}" if group else "layer ? (outside the layout)"


def imports(rel: str, source: str, modules) -> list[tuple[int, str, bool]]:
    """(line, absolute module, was it relative) for every import in the file.
    `from P import n` is the module P.n when that exists, else P."""
    out = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_of(rel).split(".")
                if node.level - 1 >= len(parts):
                    out.append((node.lineno, "." * node.level + (node.module or ""), True))
                    continue
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if a.name != "*" and sub in modules else base, bool(node.level)))
    return sorted(out)


def internal(name: str, relative: bool) -> bool:
    return relative or name == PKG or name.startswith(PKG + ".")


# --- the rules --------------------------------------------------------------------------

def outside_layout(files) -> list[str]:
    return [f"{rel} is outside the layout (not in {', '.join(LAYERS)}, nor dataplane/__init__.py or __main__.py)"
            for rel in sorted(files) if group_of_file(rel) is None]


def layer_violations(files, modules) -> list[str]:
    out = []
    for rel, src in sorted(files.items()):
        mine = group_of_file(rel)
        if mine is None:
            continue                   # reported by outside_layout
        for _, mod, rel_import in imports(rel, src, modules):
            if not internal(mod, rel_import):
                continue
            theirs = group_of_module(mod)
            if theirs == mine or (theirs is not None and LAYERS[theirs] < LAYERS[mine]):
                continue
            out.append(f"{rel} imports {mod} ({describe(mine)} -> {describe(theirs)})")
    return list(dict.fromkeys(out))


def runtime_violations(files, modules) -> list[str]:
    out = []
    for rel, src in sorted(files.items()):
        if group_of_file(rel) != "runtimes":
            continue
        for _, mod, rel_import in imports(rel, src, modules):
            if not internal(mod, rel_import) or group_of_module(mod) != "agent":
                continue
            if mod == RUNTIMES_MAY_USE or mod.startswith(RUNTIMES_MAY_USE + "."):
                continue
            out.append(f"{rel} imports {mod} ({describe('runtimes')} -> {describe('agent')})")
    return list(dict.fromkeys(out))


def foreign_violations(files, modules) -> list[str]:
    out = []
    for rel, src in sorted(files.items()):
        for _, mod, rel_import in imports(rel, src, modules):
            if not rel_import and mod.split(".")[0] in FOREIGN:
                out.append(f"{rel} imports {mod} ({describe(group_of_file(rel))} -> outside the package)")
    return list(dict.fromkeys(out))


def binding_violations(files, modules) -> list[str]:
    out = []
    for rel, src in sorted(files.items()):
        for _, mod, rel_import in imports(rel, src, modules):
            top = mod.split(".")[0]
            if not rel_import and top in ONLY_IN and rel not in ONLY_IN[top]:
                out.append(f"{rel} imports {mod} ({describe(group_of_file(rel))} -> {top})")
    return list(dict.fromkeys(out))


def map_writers(files) -> dict[str, set[str]]:
    writers: dict[str, set[str]] = {}
    for rel, src in sorted(files.items()):
        for m in MAP_WRITE.finditer(src):
            writers.setdefault(m.group(1), set()).add(rel)
    return writers


def map_writer_violations(files) -> list[str]:
    return [f"map {name} is written by {len(who)} modules: {', '.join(sorted(who))}"
            for name, who in sorted(map_writers(files).items()) if len(who) != 1]


def length_violations(files) -> list[str]:
    out = []
    for rel, text in sorted(files.items()):
        n = len(text.splitlines())
        if n > MAX_LINES:
            out.append(f"{rel} has {n} lines (at most {MAX_LINES})")
    return out


def report(title: str, violations: list[str]) -> str:
    return f"{title}: {len(violations)} violation(s)\n  " + "\n  ".join(violations)


# --- the package as it is -----------------------------------------------------------------

def test_the_package_is_there():
    assert sources(), f"no .py files under {ROOT / PKG}"
    assert f"{PKG}/__init__.py" in sources()


def test_every_module_is_in_the_layout():
    v = outside_layout(sources())
    assert not v, report("modules outside the layout", v)


def test_a_imports_go_only_down_the_layers():
    v = layer_violations(sources(), disk_modules())
    assert not v, report("imports against the layers (own subpackage or a strictly lower layer only)", v)


def test_b_runtimes_reach_the_agent_only_through_its_client():
    v = runtime_violations(sources(), disk_modules())
    assert not v, report(f"runtimes importing the agent other than {RUNTIMES_MAY_USE}", v)


def test_c_nothing_imports_lab_bench_or_tests():
    v = foreign_violations(sources(), disk_modules())
    assert not v, report("imports of the top-level lab, bench or tests", v)


def test_d_bcc_and_pyroute2_each_in_their_own_modules():
    v = binding_violations(sources(), disk_modules())
    allowed = "; ".join(f"{top} only in {', '.join(sorted(who))}" for top, who in sorted(ONLY_IN.items()))
    assert not v, report(f"bcc or pyroute2 imported outside their modules ({allowed})", v)


def test_e_each_bpf_map_has_one_writer_module():
    v = map_writer_violations(sources())
    assert not v, report("BPF maps with more than one writer module", v)


def test_f_no_file_longer_than_350_lines():
    v = length_violations(text_files())
    assert not v, report(f"files longer than {MAX_LINES} lines", v)


# --- self-tests: each checker reports a violation fed to it --------------------------------

FAKE_MODULES = frozenset({
    "dataplane", "dataplane.core", "dataplane.core.model", "dataplane.core.errors", "dataplane._cwire",
    "dataplane.kernel", "dataplane.kernel.maps", "dataplane.registry", "dataplane.registry.store",
    "dataplane.node", "dataplane.agent", "dataplane.agent.main", "dataplane.agent.client",
    "dataplane.runtimes", "dataplane.cli", "dataplane.cli.main",
})


@pytest.mark.parametrize("rel,src,want", [
    pytest.param("dataplane/core/x.py", "from ..agent import main\n",
                 "dataplane/core/x.py imports dataplane.agent.main (layer 0 core -> layer 3 agent)",
                 id="core importing the agent relatively is reported"),
    pytest.param("dataplane/core/x.py", "def f():\n    import dataplane.node\n",
                 "dataplane/core/x.py imports dataplane.node (layer 0 core -> layer 2 node)",
                 id="an import inside a function is reported"),
    pytest.param("dataplane/kernel/x.py", "from dataplane.registry.store import key\n",
                 "dataplane/kernel/x.py imports dataplane.registry.store (layer 1 kernel -> layer 1 registry)",
                 id="kernel importing registry is reported"),
    pytest.param("dataplane/registry/x.py", "from ..kernel import maps\n",
                 "dataplane/registry/x.py imports dataplane.kernel.maps (layer 1 registry -> layer 1 kernel)",
                 id="registry importing kernel is reported"),
    pytest.param("dataplane/node/x.py", "from .. import agent\n",
                 "dataplane/node/x.py imports dataplane.agent (layer 2 node -> layer 3 agent)",
                 id="from dot-dot import a higher subpackage is reported"),
    pytest.param("dataplane/agent/x.py", "from ..model import parse_vni\n",
                 "dataplane/agent/x.py imports dataplane.model (layer 3 agent -> layer ? (outside the layout))",
                 id="an import of a module outside the layout is reported"),
    pytest.param("dataplane/registry/x.py", "from .. import __version__\n",
                 "dataplane/registry/x.py imports dataplane (layer 1 registry -> layer 5 cli)",
                 id="a lower layer importing the package's own init is reported"),
    pytest.param("dataplane/core/sub/x.py", "from ...kernel.maps import Map\n",
                 "dataplane/core/sub/x.py imports dataplane.kernel.maps (layer 0 core -> layer 1 kernel)",
                 id="a relative import two levels up is resolved"),
])
def test_self_layer_checker_reports(rel, src, want):
    assert want in layer_violations({rel: src}, FAKE_MODULES)


def test_self_layer_checker_passes_a_good_tree():
    good = {
        "dataplane/__init__.py": '"""doc"""\n',
        "dataplane/__main__.py": "from .cli.main import main\nmain()\n",
        "dataplane/cli/main.py": "from dataplane import agent\nfrom ..runtimes import docker\nimport dataplane\n",
        "dataplane/runtimes/docker.py": "from ..agent import client\nfrom ..agent.client import Client\n",
        "dataplane/agent/main.py": "from . import client\nfrom ..node import x\nfrom ..registry.store import key\n",
        "dataplane/node/x.py": "from ..kernel import maps\nfrom ..registry import store\nfrom .. import _cwire\n",
        "dataplane/kernel/maps.py": "from ..core import errors\nfrom .._cwire import f\nimport os\n",
        "dataplane/registry/store.py": "from dataplane.core.model import parse_vni\nfrom . import kv\n",
        "dataplane/core/cwire.py": "from .. import _cwire\nfrom .errors import UsageError\n",
    }
    assert layer_violations(good, FAKE_MODULES) == []
    assert runtime_violations(good, FAKE_MODULES) == []
    assert foreign_violations(good, FAKE_MODULES) == []
    assert binding_violations(good, FAKE_MODULES) == []
    assert outside_layout(good) == []


def test_self_layer_checker_lists_every_violation():
    files = {"dataplane/core/x.py": "from ..agent import main\nfrom ..node import y\n",
             "dataplane/kernel/y.py": "from ..registry import store\n"}
    assert layer_violations(files, FAKE_MODULES) == [
        "dataplane/core/x.py imports dataplane.agent.main (layer 0 core -> layer 3 agent)",
        "dataplane/core/x.py imports dataplane.node (layer 0 core -> layer 2 node)",
        "dataplane/kernel/y.py imports dataplane.registry.store (layer 1 kernel -> layer 1 registry)",
    ]


@pytest.mark.parametrize("src,bad", [
    pytest.param("from ..agent import main\n", True, id="runtimes importing the agent's main is reported"),
    pytest.param("from ..agent.main import Agent\n", True, id="runtimes importing from the agent's main is reported"),
    pytest.param("import dataplane.agent\n", True, id="runtimes importing the agent package is reported"),
    pytest.param("from ..agent import client\n", False, id="runtimes importing the agent client is fine"),
    pytest.param("from dataplane.agent.client import Client\n", False, id="runtimes importing from the client is fine"),
])
def test_self_runtime_checker(src, bad):
    v = runtime_violations({"dataplane/runtimes/cni.py": src}, FAKE_MODULES)
    assert bool(v) == bad, v
    assert all(s.startswith("dataplane/runtimes/cni.py imports dataplane.agent") for s in v)


@pytest.mark.parametrize("src,bad", [
    pytest.param("from lab import topology\n", True, id="importing lab is reported"),
    pytest.param("def f():\n    import bench.stats\n", True, id="importing bench inside a function is reported"),
    pytest.param("from tests.packets import udp\n", True, id="importing tests is reported"),
    pytest.param("from ..core import model\nimport labrador\n", False, id="other names are fine"),
])
def test_self_foreign_checker(src, bad):
    v = foreign_violations({"dataplane/agent/x.py": src}, FAKE_MODULES)
    assert bool(v) == bad, v


@pytest.mark.parametrize("rel,src,bad", [
    pytest.param("dataplane/kernel/maps.py", "from bcc import BPF\n", True, id="bcc outside the loader is reported"),
    pytest.param("dataplane/kernel/loader.py", "import bcc\n", False, id="bcc in the loader is fine"),
    pytest.param("dataplane/node/x.py", "from pyroute2 import IPRoute\n", True,
                 id="pyroute2 outside netlink and gso is reported"),
    pytest.param("dataplane/kernel/gso.py", "from pyroute2.netlink import nlmsg\n", False, id="pyroute2 in gso is fine"),
    pytest.param("dataplane/kernel/netlink.py", "def f():\n    import pyroute2\n", False,
                 id="pyroute2 in netlink is fine"),
])
def test_self_binding_checker(rel, src, bad):
    v = binding_violations({rel: src}, FAKE_MODULES)
    assert bool(v) == bad, v


def test_self_map_writer_checker():
    files = {
        "dataplane/node/macs.py": "self.maps.dp_fdb.put_many(x)\nm.dp_learned.delete(k)\n",
        "dataplane/node/other.py": "maps.dp_learned.delete_many(ks)\nmaps.dp_fdb.get(k)\n",
        "dataplane/kernel/loader.py": "bpf['dp_tail'][k] = fd\n",
    }
    assert map_writers(files) == {"dp_fdb": {"dataplane/node/macs.py"},
                                  "dp_learned": {"dataplane/node/macs.py", "dataplane/node/other.py"}}
    assert map_writer_violations(files) == [
        "map dp_learned is written by 2 modules: dataplane/node/macs.py, dataplane/node/other.py"]


def test_self_length_checker():
    files = {"dataplane/core/long.py": "x = 1\n" * (MAX_LINES + 1), "dataplane/core/ok.py": "x = 1\n" * MAX_LINES}
    assert length_violations(files) == [f"dataplane/core/long.py has {MAX_LINES + 1} lines (at most {MAX_LINES})"]


def test_self_outside_layout_checker():
    files = {"dataplane/remote.py": "", "dataplane/__main__.py": "", "dataplane/agent/x.py": ""}
    assert outside_layout(files) == [
        "dataplane/remote.py is outside the layout (not in core, kernel, registry, node, agent, runtimes, cli, "
        "nor dataplane/__init__.py or __main__.py)"]


def test_self_import_messages_name_file_module_and_layers():
    files = {
        "dataplane/core/x.py": "from ..agent import main\nimport lab\nfrom pyroute2 import IPRoute\n",
        "dataplane/runtimes/docker.py": "from ..agent.main import Agent\n",
    }
    msgs = (layer_violations(files, FAKE_MODULES) + runtime_violations(files, FAKE_MODULES)
            + foreign_violations(files, FAKE_MODULES) + binding_violations(files, FAKE_MODULES))
    assert msgs == [
        "dataplane/core/x.py imports dataplane.agent.main (layer 0 core -> layer 3 agent)",
        "dataplane/runtimes/docker.py imports dataplane.agent.main (layer 4 runtimes -> layer 3 agent)",
        "dataplane/core/x.py imports lab (layer 0 core -> outside the package)",
        "dataplane/core/x.py imports pyroute2 (layer 0 core -> pyroute2)",
    ]
