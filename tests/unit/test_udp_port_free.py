"""kernel/netns.udp_port_free reads the UDP socket tables: a socket on the port, on any
address, IPv4 or IPv6, connected or not, makes it held; nothing is bound to find out (so the
answer never refuses anyone the port). Host namespace, no root needed."""

import socket

from dataplane.kernel.netns import udp_port_free


def _bound(family: int, addr: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 0))
    return s


def test_a_socket_on_the_port_holds_it_and_closing_it_frees_it():
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"),
                         (socket.AF_INET6, "::1"), (socket.AF_INET6, "::")):
        s = _bound(family, addr)
        port = s.getsockname()[1]
        try:
            assert not udp_port_free(None, port), (addr, port)
        finally:
            s.close()
        assert udp_port_free(None, port), (addr, port)


def test_a_connected_socket_holds_its_local_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))
        port = s.getsockname()[1]
        assert not udp_port_free(None, port)


def test_a_tcp_socket_on_the_port_does_not_count():
    with _bound(socket.AF_INET, "127.0.0.1") as u:
        port = u.getsockname()[1]
    with socket.socket() as t:
        t.bind(("127.0.0.1", port))
        assert udp_port_free(None, port)
