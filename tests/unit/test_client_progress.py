"""A command waiting on its agent says so after a second: with the registry unreachable, the
agent's answer to `endpoint add` took up to the client's 60 s, and the command printed nothing
until then (a review found it; the project's rule: a progress line on anything that takes more
than a second). Only the CLI turns it on: the runtimes' plugins write no such line."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from dataplane.agent import client
from dataplane.core import state


def _slow_agent(path: str, delay: float) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        conn.recv(65536)
        time.sleep(delay)
        conn.sendall(json.dumps({"ok": True, "result": {"done": 1}}).encode() + b"\n")
        conn.close()
        srv.close()
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    return t


def test_a_slow_answer_is_announced_and_a_quick_one_is_not(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path))
    (tmp_path / "n1").mkdir()
    monkeypatch.setattr(client, "PROGRESS_AFTER_S", 0.1)
    _slow_agent(client.socket_path("n1"), 0.5)
    assert client.call("n1", "endpoint_add", timeout=5) == {"done": 1}
    assert "waiting for the agent of node n1 to answer 'endpoint_add'" in capsys.readouterr().err
    _slow_agent(client.socket_path("n1"), 0)
    assert client.call("n1", "endpoint_add", timeout=5) == {"done": 1}
    time.sleep(0.2)                                 # a timer left running would print now
    assert capsys.readouterr().err == ""
