"""`up --restore` at boot waits for a node's namespace as for its underlay (agent/boot_wait.py):
/run/netns is a tmpfs, so after a reboot a `--netns` node's namespace is made again by whatever
made it, and the unit's ExecStartPre failed at once and was restarted every second until then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dataplane.agent import boot_wait
from dataplane.core.errors import NotFound
from dataplane.kernel import netlink

NODE = SimpleNamespace(netns="dpl-later", name="dpl-later")


@pytest.fixture(autouse=True)
def _not_a_service_of_its_own(monkeypatch):
    """(A run under a CI service inherits that service's SYSTEMD_EXEC_PID: not this process's.)"""
    monkeypatch.delenv("SYSTEMD_EXEC_PID", raising=False)


def test_under_systemd_a_namespace_made_late_is_waited_for(monkeypatch, capsys):
    monkeypatch.setenv("INVOCATION_ID", "0123")
    looks = []
    monkeypatch.setattr(netlink, "ns_exists", lambda ns: looks.append(ns) or len(looks) > 3)
    monkeypatch.setattr(netlink, "link_info", lambda ns, ifname: {"ipv4": ["198.18.0.1"]})
    monkeypatch.setattr(boot_wait.time, "sleep", lambda s: None)
    boot_wait.underlay(NODE, "ul0", "198.18.0.1", 5.0)
    assert len(looks) == 4
    assert "there is no network namespace dpl-later" in capsys.readouterr().err


def test_under_systemd_one_that_never_comes_is_said_after_the_wait(monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0123")
    monkeypatch.setattr(netlink, "ns_exists", lambda ns: False)
    with pytest.raises(NotFound, match="there is no network namespace dpl-later after 0.3 s"):
        boot_wait.underlay(NODE, "ul0", "198.18.0.1", 0.3)


def test_typed_by_hand_a_missing_namespace_is_left_to_up_to_say_at_once(monkeypatch):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setattr(netlink, "ns_exists", lambda ns: False)
    monkeypatch.setattr(boot_wait.time, "sleep", lambda s: pytest.fail("waited"))
    boot_wait.underlay(NODE, "ul0", "198.18.0.1", 60.0)


def test_started_by_systemd_is_told_from_a_shell_that_inherited_its_variables(monkeypatch):
    """A terminal's shell under a user service, or `sudo -E`, inherits INVOCATION_ID and
    SYSTEMD_EXEC_PID (the service's pid): typed by hand, not waited for."""
    import os
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert boot_wait.under_systemd(), "systemd before 248 sets INVOCATION_ID alone"
    monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getpid()))
    assert boot_wait.under_systemd()
    monkeypatch.setenv("SYSTEMD_EXEC_PID", "1")
    assert not boot_wait.under_systemd()
