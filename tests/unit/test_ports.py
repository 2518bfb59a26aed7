"""Ports for test servers come from outside the ephemeral range, where no outgoing
connection can take one between the choice and the server's bind."""

import socket

from tests.ports import _ephemeral_low, free_port
from tests.registry.conftest import free_port as registry_free_port
from tests.registry.etcdproc import free_port as etcdproc_free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable():
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(p < low for p in ports), [p for p in ports if p >= low]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_the_etcd_helpers_use_it():
    low = _ephemeral_low()
    assert registry_free_port() < low and etcdproc_free_port() < low
