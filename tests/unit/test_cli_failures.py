"""Commands fail in one line with a non-zero exit, never a traceback, when the node's state
cannot be read (not root, damaged) or the agent cannot be talked to (denied, silent)."""

from __future__ import annotations

import socket

import pytest

from dataplane.agent import client
from dataplane.cli.main import main
from dataplane.core import state


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path / "lib"))
    return tmp_path


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: ") and err.count("\n") == 1, err
    return err


def test_a_state_that_cannot_be_read_or_is_damaged(roots, capsys):
    path = roots / "run" / "host" / "state.json"
    path.mkdir(parents=True)                 # open() fails as it does for a user who is not root
    assert main(["status"]) != 0
    assert "cannot read the state of node host" in one_line(capsys)
    path.rmdir()
    path.write_text("{")
    assert main(["status"]) == 1
    assert "is damaged" in one_line(capsys)


class Denied(socket.socket):
    def connect(self, path):
        raise PermissionError(13, "Permission denied")


class Silent(socket.socket):
    def connect(self, path):
        pass

    def sendall(self, data):
        pass

    def recv(self, n):
        raise TimeoutError("timed out")


def test_an_agent_that_cannot_be_talked_to(roots, capsys, monkeypatch):
    monkeypatch.setattr(client.socket, "socket", Denied)
    assert main(["agent", "status"]) == 5
    assert "cannot talk to the agent of node host: Permission denied" in one_line(capsys)
    monkeypatch.setattr(client.socket, "socket", Silent)
    assert main(["agent", "status"]) == 1
    assert "did not answer 'status'" in one_line(capsys)
