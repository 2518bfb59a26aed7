"""What must outlive a reboot (under /var/lib/dataplane: the node's `up` arguments, the
Docker network map) is synced to disk, file and directory, before it counts as written:
write-then-rename alone is atomic against a crash but not durable against a power cut,
after which the file can be missing or empty, and Docker never repeats a CreateNetwork.
The state under /run (rewritten on every change) is not synced."""

from __future__ import annotations

import os

from dataplane.core import state
from dataplane.runtimes import docker


def synced(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = os.fsync

    def fsync(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_the_boot_record_and_the_docker_map_are_synced_with_their_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path / "lib"))
    calls = synced(monkeypatch)
    state.save_boot("n1", {"underlay": "eth0"})
    d = str(tmp_path / "lib" / "n1")
    assert calls == [os.path.join(d, "node.json.new"), d], calls
    assert state.load_boot("n1") == {"underlay": "eth0"}

    calls.clear()
    drv = docker.Driver("n1")
    drv._save({"abc": {"vni": 256}})
    assert calls == [drv.path + ".new", d], calls
    assert drv._load() == {"abc": {"vni": 256}}


def test_the_run_state_is_not_synced(tmp_path, monkeypatch):
    calls = synced(monkeypatch)
    state.write_json(str(tmp_path / "run" / "state.json"), {"x": 1})
    assert calls == []
