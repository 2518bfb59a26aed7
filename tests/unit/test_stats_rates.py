"""`stats --watch`'s rates between two readings (cli/observe_cmds.rates)."""

from dataplane.cli.observe_cmds import rates

COUNTS = dict.fromkeys(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "local_packets", "local_bytes"), 0)


def test_a_vni_served_again_between_readings_reads_no_negative_drops():
    """Its stats slot zeroed between two readings: every rate was clamped at 0 but the drops,
    which went negative (and named the wrong top reason)."""
    old = {"vni": 256, **COUNTS, "drops": {"spoof_mac": 50, "bad_ip": 3}}
    new = {"vni": 256, **COUNTS, "drops": {"spoof_mac": 0, "bad_ip": 5}}
    r = rates(old, new, 1.0)
    assert r["drops_per_s"] == 2 and r["top_drop"] == "bad_ip", r
