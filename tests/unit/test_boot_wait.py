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
