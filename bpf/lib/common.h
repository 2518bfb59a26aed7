/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * common.h - includes, return conventions and small helpers every program uses.
 *
 * Handlers return a TC/XDP action (>= 0), DP_CONSUMED, or -DP_DROP_* and each
 * program has one exit (stats.h) that turns a negative value into a counted drop.
 */
#ifndef DP_COMMON_H
#define DP_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_arp.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>

#include "dp_abi.h"
#include "lib/wire.h"

/* The 6.1 uapi headers bcc compiles against predate these; the 6.18 kernel has them. */
#define DP_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)

#define DP_CONSUMED 1000      /* frame handed on by clones or punted: no drop of ours is counted */
/* ... and its tc verdict. The programs run at tcx (kernel/tcx.py), which knows only next,
 * pass, drop and redirect: TC_ACT_STOLEN would be "next", and the host stack would get the
 * frame too. So a consumed frame leaves as TC_ACT_SHOT (the kernel frees it as a tc drop;
 * our counters do not count it as one). */
#define DP_ACT_CONSUMED TC_ACT_SHOT
#define DP_PASS DP_WIRE_NOT_OURS /* not ours: give it to the host stack untouched */

struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

/*
 * MAC helpers work byte by byte: the verifier rejects unaligned stack access,
 * and MACs sit at odd offsets (bpf_fib_lookup's dmac, ARP's tha).
 */
static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) |
		(a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

static __always_inline int mac_is_multicast(const __u8 *m)
{
	return m[0] & 1;
}

static __always_inline int mac_is_zero(const __u8 *m)
{
	return (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) == 0;
}

/*
 * The fast path's clock: CLOCK_MONOTONIC at tick resolution, the timebase of
 * the agent's time.monotonic_ns(). Ageing, the next-hop TTL and punt
 * staleness need milliseconds, not nanoseconds. bpf_ktime_get_ns() reads the
 * TSC (read_tsc was 1.2% of the sender's CPU in a TCP profile); even
 * bpf_ktime_get_coarse_ns() is a helper call, about 45 ns per frame on a
 * guest with SRSO's safe RET. bpf_jiffies64() the verifier inlines into one
 * load; the tick's length and the offset to CLOCK_MONOTONIC come from
 * dp_config (calibrated by kernel/clock.py through dp_clock below). With no
 * calibration in cfg (or no cfg) it is the helper call.
 */
static __always_inline __u64 dp_now_ns(const struct dp_config *cfg)
{
	if (cfg && cfg->clock_ns_per_jiffy)
		return bpf_jiffies64() * cfg->clock_ns_per_jiffy + cfg->clock_offset_ns;
	return bpf_ktime_get_coarse_ns();
}

/*
 * GCRA meter: may one more go, at a cost of `cost` ns of the budget (the
 * interval, for one of a rate)? *tat (theoretical arrival time) is when the
 * budget is next fully earned; one more is refused while it lies more than
 * burst ahead of now. A tat further ahead than burst + `most`, the dearest
 * cost any one can have under the meter's settings, was set under an older,
 * lower rate: this one passes, and the meter is left full (tat now + burst),
 * not emptied. Not burst + this one's cost: where costs vary (the host's
 * overlay meter, networks of different sizes), a cheap frame after a dear one
 * would find a full meter so. Not emptied: a CPU whose clock read came a
 * jiffy before another's charge finds the tat that much further ahead, and an
 * emptied meter would give every CPU a new burst. Two CPUs racing on one tat
 * may both pass, one charge lost: a frame more than the budget (for the
 * overlay meters, that frame's copies), never a lasting error.
 */
static __always_inline int gcra_allow(__u64 *tat, __u64 now, __u64 cost, __u64 burst, __u64 most)
{
	__u64 next = *tat > now ? *tat : now;

	if (next - now > burst + most) {
		*tat = now + burst;
		return 1;
	}
	if (next - now > burst)
		return 0;
	*tat = next + cost;
	return 1;
}

/* Make the first `want` bytes (or the whole frame, if shorter) directly readable. */
static __always_inline void skb_ensure_head(struct __sk_buff *skb, __u32 want)
{
	__u32 have = skb->data_end - skb->data;

	if (have < want && have < skb->len)
		bpf_skb_pull_data(skb, want < skb->len ? want : skb->len);
}

#endif /* DP_COMMON_H */
