/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * punt.h - the slow path's door: a frame the fast path cannot place (unicast
 * to an unknown MAC, ARP for an unknown address) is copied whole into the
 * dp_punts ring buffer for the agent, which asks the registry, installs the
 * entry and sends the frame on. Only while the agent's heartbeat is fresh
 * (dp_agent.punt_until_ns): a dead agent's misses are flooded, as are those
 * that find the ring full or are too long for it.
 *
 * A punt is charged to its endpoint's storm-control meter (flood.h), as the
 * flood it stands for would be: one container spraying unknown destinations
 * kept the ring, shared by the node's endpoints, full (a record is 1.5 KiB, the
 * ring holds about 170), so every other endpoint's misses fell back to
 * flooding (a review found it). Over the rate it is a storm drop, as the flood
 * would have been.
 */
#ifndef DP_PUNT_H
#define DP_PUNT_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/monitor.h"
#include "lib/flood.h"

/*
 * 0: the frame is the agent's now (drop it here). DP_PUNT_FLOOD: flood it as before.
 * -DP_DROP_STORM: over its endpoint's storm-control rate.
 */
#define DP_PUNT_FLOOD 1

static __always_inline int punt(struct __sk_buff *skb, __u32 vni, __u32 slot, __u32 ifindex, __u32 reason)
{
	__u32 zero = 0;
	struct dp_agent *agent = dp_agent.lookup(&zero);
	struct dp_config *cfg = dp_config.lookup(&zero);
	struct dp_stats *s = stats_get(slot);
	struct dp_punt *p;
	__u64 len;  /* 64 bits: a 32-bit copy is zero-extended into a register the verifier does not link */

	if (!agent || !cfg || dp_now_ns(cfg) >= agent->punt_until_ns)
		return DP_PUNT_FLOOD;
	p = dp_punts.ringbuf_reserve(sizeof(*p));
	if (!p)
		goto fallback;
	/*
	 * Two separate tests on one register: clang would merge them into one
	 * unsigned range test on a copy, and the verifier then sees no bound.
	 */
	len = skb->len;
	if (len > DP_PUNT_FRAME_MAX) {
		dp_punts.ringbuf_discard(p, 0);
		goto fallback;
	}
	asm volatile("" : "+r"(len));
	if (len < ETH_HLEN) {
		dp_punts.ringbuf_discard(p, 0);
		goto fallback;
	}
	p->vni = vni;
	p->ifindex = ifindex;
	p->reason = reason;
	p->len = len;
	p->ts_ns = dp_now_ns(cfg);
	if (bpf_skb_load_bytes(skb, 0, p->frame, len)) {
		dp_punts.ringbuf_discard(p, 0);
		goto fallback;
	}
	/* Charged only now: a fallback's flood (no room, too long) is charged by the flood alone. */
	if (!storm_allow(cfg, ifindex)) {
		dp_punts.ringbuf_discard(p, 0);
		return -DP_DROP_STORM;
	}
	dp_punts.ringbuf_submit(p, 0);
	if (s)
		s->punted++;
	if (cfg && (cfg->flags & DP_CFG_MON_PUNT))
		monitor_emit(skb, cfg, DP_EVENT_PUNT, reason, slot);
	return 0;
fallback:
	if (s)
		s->punt_fallback++;
	return DP_PUNT_FLOOD;
}

#endif /* DP_PUNT_H */
