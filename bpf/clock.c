/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */

#include "lib/all.h"
/*
 * clock.c - never attached: run by BPF_PROG_TEST_RUN (kernel/clock.py) to
 * read jiffies and CLOCK_MONOTONIC's coarse time side by side, from which the
 * tick length and offset in dp_config are worked out (dp_now_ns, common.h).
 * cb[0..1]: jiffies before, cb[2..3]: coarse ns, cb[4]: jiffies after less before.
 */

int dp_clock(struct __sk_buff *skb)
{
	__u64 j = bpf_jiffies64();
	__u64 ns = bpf_ktime_get_coarse_ns();
	__u64 j2 = bpf_jiffies64();

	skb->cb[0] = (__u32)j;
	skb->cb[1] = (__u32)(j >> 32);
	skb->cb[2] = (__u32)ns;
	skb->cb[3] = (__u32)(ns >> 32);
	skb->cb[4] = (__u32)(j2 - j);
	return TC_ACT_OK;
}
