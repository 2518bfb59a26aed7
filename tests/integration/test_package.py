"""The package installs without the checkout: `pip install .` (not editable)
into a fresh venv, run from another directory, brings a node up from the BPF
sources it ships, and ships nothing of the lab, the bench or the tests."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.test_cli import host  # noqa: F401 - the namespace-with-uplink fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg") / "venv"
    # Debian's python with its site-packages: bcc (python3-bpfcc) is a Debian package.
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(d)], check=True)
    r = subprocess.run([str(d / "bin" / "pip"), "install", "-q", ROOT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def run(venv, *argv):
    """A command of the installed package, from / (so the checkout is not on sys.path)."""
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, cwd="/")


def test_installed_package_has_its_bpf_sources_and_nothing_else(venv):
    r = run(venv, "python", "-c", "import dataplane.core.abi as a, dataplane.kernel.bundle as b, json; "
                                  "print(json.dumps([str(a.HEADER), str(b.BPF_DIR)]))")
    assert r.returncode == 0, r.stderr
    header, bpf_dir = json.loads(r.stdout)
    assert header.startswith(str(venv)) and os.path.isfile(header), header
    assert bpf_dir.startswith(str(venv)) and os.path.isfile(os.path.join(bpf_dir, "lib", "wire.h"))
    for name in ("lab", "bench", "tests"):
        r = run(venv, "python", "-c", f"import {name}")
        assert r.returncode != 0, f"{name} is importable from the installed package"


def test_installed_dataplane_brings_a_node_up_and_down(venv, host):  # noqa: F811
    r = run(venv, "dataplane", "--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry",
            "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["networks"][0]["vni"] == 256
    r = run(venv, "dataplane", "--netns", host, "stats", "-o", "json")
    assert r.returncode == 0 and {row["vni"] for row in json.loads(r.stdout)} == {0, 256}
    r = run(venv, "dataplane", "--netns", host, "down")
    assert r.returncode == 0, r.stderr
