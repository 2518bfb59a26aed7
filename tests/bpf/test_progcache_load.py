"""The compiled-program cache (kernel/progcache.py) in the kernel: a load from it gives
the programs bcc compiled, bound to its own pin directory's maps, without compiling; an
entry the kernel refuses is compiled again and replaced. The session's harness compiled
first (into the session's cache, tests/conftest.py)."""

import base64
import json
import os
import shutil

import pytest

from dataplane.kernel import bpfsys, loader, progcache
from dataplane.kernel.maps import SPECS
from tests.bpf.conftest import EP_IFINDEX, TC_ACT_REDIRECT, VNI, Harness
from tests.bpf.test_wire_identity import TABLE


@pytest.fixture
def compiles(monkeypatch):
    """Counts bcc compiles in a list; the test may forbid them."""
    import bcc
    done, real = [], bcc.BPF

    class Counting(real):
        forbid = False

        def __init__(self, *a, **kw):
            assert not Counting.forbid, "bcc compiled"
            done.append(1)
            super().__init__(*a, **kw)

    monkeypatch.setattr(bcc, "BPF", Counting)
    yield Counting, done


@pytest.fixture
def pin():
    path = os.path.join(loader.PIN_ROOT, f"cached-{os.getpid()}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pinned_map_ids(pin_dir):
    ids = set()
    for name in SPECS:
        fd = bpfsys.obj_get(os.path.join(pin_dir, name))
        ids.add(bpfsys.map_info(fd).id)
        os.close(fd)
    return ids


def test_a_load_from_the_cache_is_what_bcc_compiled_on_its_own_maps(hx, compiles, pin):
    counting, _ = compiles
    assert hx.loaded._bpf is not None, "the session's harness should have compiled"
    counting.forbid = True
    cached = Harness(pin)
    try:
        # The kernel's tag hashes the instructions with map fds left out: the same program.
        for name, fd in hx.fds.items():
            assert bpfsys.prog_info(cached.fds[name])["tag"] == bpfsys.prog_info(fd)["tag"], name
            assert bpfsys.prog_info(cached.fds[name])["name"] == bpfsys.prog_info(fd)["name"]
        mine, theirs = pinned_map_ids(pin), pinned_map_ids(hx.maps.pin_dir)
        for name, fd in cached.fds.items():
            used = set(bpfsys.prog_map_ids(fd))
            assert used <= mine and not used & theirs, name
        assert len(bpfsys.prog_map_ids(cached.fds["from_endpoint"])) > 10
        # Frame by frame the same bytes, counted in the cached load's own maps.
        cached.baseline()
        for name, frame in sorted(TABLE.items()):
            got = cached.run_tc("from_endpoint", frame, EP_IFINDEX)
            assert got == hx.run_tc("from_endpoint", frame, EP_IFINDEX), name
            assert got[0] == TC_ACT_REDIRECT, name
        assert cached.stats(VNI)["tx_packets"] == len(TABLE)
    finally:
        cached.close()


def half_an_instruction(entry):
    entry["progs"]["from_overlay"]["insns"] = base64.b64encode(b"\x18" + b"\0" * 7).decode()
    entry["progs"]["from_overlay"]["relocs"] = []


def another_map_layout(entry):
    entry["maps"]["dp_fdb"][3] += 1


def another_program_set(entry):
    del entry["progs"]["dp_clock"]


def map_flags(entry):
    entry["maps"]["dp_learned"][4] = 1          # BPF_F_NO_PREALLOC: would stay on the map until `down`


@pytest.mark.parametrize("damage", [half_an_instruction, another_map_layout, another_program_set, map_flags])
def test_an_entry_that_does_not_fit_is_compiled_again_and_replaced(hx, compiles, pin, tmp_path, monkeypatch,
                                                                    capsys, damage):
    """Refused by the verifier, or made for other map layouts, flags or another set of programs
    (each would follow a change that the key misses): a compile, said even when quiet, and the
    entry is written anew."""
    counting, done = compiles
    mine = tmp_path / "cache"
    shutil.copytree(progcache.directory(), mine)
    os.chmod(mine, 0o700)
    monkeypatch.setenv(progcache.ENV, str(mine))
    from dataplane.kernel.bundle import bundle
    path = mine / f"{loader.cache_key(bundle().encode(), loader._cflags({}), __import__('bcc').__version__)}.json"
    good = json.loads(path.read_text())
    bad = json.loads(path.read_text())
    damage(bad)
    path.write_text(json.dumps(bad))

    fds_before = len(os.listdir("/proc/self/fd"))
    loader.load(pin, quiet=True).close()
    assert len(os.listdir("/proc/self/fd")) == fds_before     # nothing the failed load opened is left
    assert len(done) == 1
    err = capsys.readouterr().err
    assert "did not load" in err and "compiling it again" in err, err
    assert json.loads(path.read_text()) == good
    fd = bpfsys.obj_get(os.path.join(pin, "dp_fdb"))       # nothing pinned with the entry's layout
    try:
        assert bpfsys.map_info(fd).max_entries == good["maps"]["dp_fdb"][3]
    finally:
        os.close(fd)
    counting.forbid = True                      # and now the entry serves the next load
    loader.load(pin, quiet=True).close()
