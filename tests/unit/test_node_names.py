"""A namespace named "host" was taken for the host's own node: the same pins, state, agent
socket and systemd unit (process.running_pid and unit_name read the name "host" as no
namespace). It is refused with what to do, before anything is read or made."""

import subprocess

import pytest

from dataplane.core.errors import UsageError
from dataplane.node import HOST_NODE, Node
from tests.integration.conftest import DATAPLANE


def test_a_namespace_named_host_is_refused():
    with pytest.raises(UsageError, match="cannot be a node"):
        Node(HOST_NODE)
    assert Node().name == HOST_NODE and Node("hostile").name == "hostile"


def test_the_cli_refuses_it_with_exit_2():
    r = subprocess.run(DATAPLANE + ["--netns", "host", "status"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot be a node" in r.stderr, r.stderr
