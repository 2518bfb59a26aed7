"""progcache without the kernel: which references it names, and what its key depends on."""

import os
import struct

import pytest

from dataplane.kernel import progcache


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


MOV, EXIT = 0xb7, 0x95


def ld_imm64(src: int, imm: int) -> bytes:
    return insn(0x18, 1, src, 0, imm) + insn(0, 0, 0, 0, 0)


def test_every_map_fd_is_named_and_nothing_else():
    code = insn(MOV, 0, 0, 0, 7) + ld_imm64(1, 7) + insn(MOV, 2, 0, 0, 9) + ld_imm64(1, 9) + ld_imm64(0, 7) + insn(EXIT)
    # An immediate that looks like an fd (7 in a mov, 7 in a plain 64-bit load) is not one.
    assert progcache.relocations(code, {7: "dp_config", 9: "dp_fdb"}) == [(1, "dp_config"), (4, "dp_fdb")]


def test_an_fd_of_no_map_of_ours_or_another_pseudo_load_is_uncacheable():
    with pytest.raises(progcache.Uncacheable, match="fd 8"):
        progcache.relocations(ld_imm64(1, 8) + insn(EXIT), {7: "dp_config"})
    for kind in (2, 3, 4):            # a map value, a BTF id, a function
        with pytest.raises(progcache.Uncacheable, match=f"kind {kind}"):
            progcache.relocations(ld_imm64(kind, 7) + insn(EXIT), {7: "dp_config"})


def test_the_fds_go_back_where_they_were():
    code = insn(MOV) + ld_imm64(1, 7) + insn(EXIT)
    relocs = progcache.relocations(code, {7: "dp_config"})
    blank = progcache._with_fds(code, relocs, {"dp_config": 0})
    assert blank != code
    assert progcache._with_fds(blank, relocs, {"dp_config": 7}) == code


def test_the_key_follows_source_flags_toolchain_kernel_and_programs_but_nothing_else(monkeypatch):
    P = {"f": 3}
    base = progcache.key(b"int x;", ["-DA=1"], "bcc 0.26.0", P)
    assert base == progcache.key(b"int x;", ["-DA=1"], "bcc 0.26.0", {"f": 3})
    others = {progcache.key(b"int y;", ["-DA=1"], "bcc 0.26.0", P),
              progcache.key(b"int x;", ["-DA=2"], "bcc 0.26.0", P),
              progcache.key(b"int x;", ["-DA=1"], "bcc 0.27.0", P),
              progcache.key(b"int x;-DA=1", [], "bcc 0.26.0", P),
              progcache.key(b"int x;", ["-DA=1"], "bcc 0.26.0", {"f": 6}),
              progcache.key(b"int x;", ["-DA=1"], "bcc 0.26.0", {"f": 3, "g": 3})}
    u = os.uname()
    for release, version in ((u.release + "x", u.version), (u.release, u.version + "x")):
        monkeypatch.setattr(os, "uname", lambda r=release, v=version: os.uname_result((u.sysname, u.nodename, r, v, u.machine)))
        others.add(progcache.key(b"int x;", ["-DA=1"], "bcc 0.26.0", P))
        monkeypatch.undo()
    assert len(others | {base}) == 9


def test_off_turns_it_off(monkeypatch):
    monkeypatch.setenv(progcache.ENV, "off")
    assert progcache.directory() is None
    progcache.write("k", {})          # nothing to write to, and no error
    assert progcache.read("k") is None


def test_an_entry_round_trips_and_a_foreign_one_is_not_read(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.ENV, str(d))
    progcache.write("k1", {"progs": {}})
    assert (d.stat().st_mode & 0o777) == 0o700
    assert progcache.read("k1")["progs"] == {}
    assert progcache.read("k2") is None
    os.rename(d / "k1.json", d / "k2.json")          # an entry under another key's name
    assert progcache.read("k2") is None
    (d / "k3.json").write_text("{not json")
    assert progcache.read("k3") is None
    assert sorted(os.listdir(d)) == ["k2.json", "k3.json"]     # no temporary file left


def test_a_directory_others_may_write_is_not_used(tmp_path, monkeypatch, capsys):
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.ENV, str(d))
    progcache.write("k1", {"progs": {}})
    os.chmod(d, 0o777)
    assert progcache.read("k1") is None
    assert "no one else may write it" in capsys.readouterr().err
    os.chmod(d, 0o700)
    link = tmp_path / "link"
    link.symlink_to(d)
    monkeypatch.setenv(progcache.ENV, str(link))     # nor a link to one
    assert progcache.read("k1") is None


def test_only_the_entries_used_last_are_kept(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.ENV, str(d))
    for i in range(progcache.KEEP):
        progcache.write(f"k{i}", {"progs": {}})
        os.utime(d / f"k{i}.json", (1000 + i, 1000 + i))
    assert progcache.read("k0") is not None            # k0 used now: k1 is the oldest
    progcache.write("new", {"progs": {}})
    assert sorted(os.listdir(d)) == sorted([f"k{i}.json" for i in range(progcache.KEEP) if i != 1] + ["new.json"])


def test_an_entry_file_not_ours_alone_is_not_read(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.ENV, str(d))
    progcache.write("k1", {"progs": {}})
    os.chmod(d / "k1.json", 0o666)                   # written while the directory was open to others
    assert progcache.read("k1") is None
    os.chmod(d / "k1.json", 0o600)
    os.link(d / "k1.json", tmp_path / "elsewhere")    # a second name someone else may reach
    assert progcache.read("k1") is None
    os.unlink(tmp_path / "elsewhere")
    assert progcache.read("k1") is not None


def test_a_temporary_file_an_hour_old_goes_with_the_next_write(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(progcache.ENV, str(d))
    progcache.write("k1", {"progs": {}})
    for name, age in ((".new-old-k9", 7200), (".new-young-k9", 60)):
        (d / name).write_text("{")
        t = __import__("time").time() - age
        os.utime(d / name, (t, t))
    progcache.write("k2", {"progs": {}})
    assert sorted(os.listdir(d)) == [".new-young-k9", "k1.json", "k2.json"]
    progcache.forget("k1")
    assert progcache.read("k1") is None and progcache.read("k2") is not None
