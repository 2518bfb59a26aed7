"""A SQLite registry that cannot work until someone acts (a damaged file, a read-only
file system) is refused for good; one that is busy for a moment is Unavailable, which
callers wait out (the CNI plugin answers it 11, "try again later"). Real files, a real
read-only mount."""

from __future__ import annotations

import subprocess

import pytest

from dataplane.cli.main import main
from dataplane.registry import Refused, Unavailable, open_registry
from tests.conftest import require_privileges


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: ") and err.count("\n") == 1, err
    return err


def test_a_damaged_file_is_refused_not_passing(tmp_path, capsys):
    db = tmp_path / "registry.db"
    db.write_bytes(b"this is not a database, and it is longer than a header\n" * 40)
    with pytest.raises(Refused, match="damaged"):
        open_registry(f"sqlite://{db}").networks()
    assert main(["network", "ls", "--registry", f"sqlite://{db}"]) == 1
    assert "damaged" in one_line(capsys)


@pytest.fixture
def read_only_dir(tmp_path):
    require_privileges()
    d = tmp_path / "ro"
    d.mkdir()
    reg = open_registry(f"sqlite://{d}/registry.db")
    reg.network_create("n1", 300, subnet="10.30.0.0/24")
    reg.close()
    for f in d.glob("registry.db-*"):          # what a clean close leaves: the file alone
        f.unlink()
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], check=True)
        yield d
    finally:
        subprocess.run(["umount", "--lazy", str(d)], check=True)   # even with a file left open


def test_a_read_only_file_system_is_refused_not_passing(read_only_dir, capsys):
    url = f"sqlite://{read_only_dir}/registry.db"
    with pytest.raises(Refused, match="read-only"):
        reg = open_registry(url)
        try:
            reg.network_create("n2", 301, subnet="10.31.0.0/24")
        finally:
            reg.close()
    assert main(["network", "create", "n2", "--vni", "301", "--subnet", "10.31.0.0/24",
                 "--registry", url]) == 5
    assert "read-only" in one_line(capsys)


def test_a_busy_file_is_passing(tmp_path):
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    reg.kv._db.execute("PRAGMA busy_timeout=50")
    other = open_registry(url)
    other.kv._db.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(Unavailable) as e:
            reg.network_create("n1", 300, subnet="10.30.0.0/24")
        assert not isinstance(e.value, Refused)
    finally:
        other.kv._db.execute("ROLLBACK")
        other.close()
        reg.close()
