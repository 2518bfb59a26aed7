"""bench.callees' attribution of perf stacks (leaf first) to what a program called."""

from bench.callees import OWN, attribute


def test_samples_go_to_the_callee_or_the_program_and_others_are_left_out():
    prog = "bpf_prog_08dea87504f95a57_from_endpoint+0x"
    samples = [
        ["pskb_expand_head+0x10", "bpf_skb_adjust_room+0x99", prog + "ef7", "tcx_run+0x5"],
        ["bpf_skb_adjust_room+0x12", prog + "ef7", "tcx_run+0x5"],
        [prog + "5", "tcx_run+0x5"],
        [prog + "5", "tcx_run+0x5"],
        ["bpf_prog_ff346c79be08a372_from_overlay+0x9e", "tcx_run+0x5"],
        ["_raw_spin_unlock_irqrestore+0x1"],
    ]
    r = attribute(samples, "from_endpoint")
    assert r["samples"] == 4
    assert r["callees"] == {"bpf_skb_adjust_room": 2, OWN: 2}
    assert r["leaves"] == {"pskb_expand_head": 1, "bpf_skb_adjust_room": 1, "bpf_prog_08dea87504f95a57_from_endpoint": 2}
    assert r["own_offsets"] == {"0x5": 2}
    assert attribute(samples, "from_overlay")["callees"] == {OWN: 1}
