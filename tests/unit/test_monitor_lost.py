"""Events.lost: what the fast path could not write during a monitor, per VNI, never going
down when a VNI is unserved meanwhile (its slot leaves dp_networks with its count)."""

from __future__ import annotations

from types import SimpleNamespace

from dataplane.node.monitor import Events


class Maps:
    def __init__(self):
        self.nets = {256: 1, 300: 2}             # VNI -> slot
        self.lost = {0: 0, 1: 5, 2: 7}           # slot -> monitor_lost (one CPU)
        self.dp_networks = SimpleNamespace(items=lambda: [(SimpleNamespace(value=v), SimpleNamespace(slot=s))
                                                          for v, s in self.nets.items()])
        self.dp_stats = SimpleNamespace(get=lambda k: [SimpleNamespace(monitor_lost=self.lost[k.value])]
                                        if k.value in self.lost else None)


def test_lost_counts_per_vni_and_never_goes_down():
    m = Maps()
    ev = Events(SimpleNamespace(netns=None), m, reader=None)
    assert ev.lost() == 0, "what was lost before the monitor is not its"
    m.lost[1], m.lost[2], m.lost[0] = 15, 9, 1
    assert (ev.lost(), ev.lost(256), ev.lost(300), ev.lost(0)) == (13, 10, 2, 1)
    del m.nets[300], m.lost[2]                # VNI 300 unserved: its slot and count gone
    assert (ev.lost(), ev.lost(300)) == (13, 2)
