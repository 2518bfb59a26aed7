/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * monitor.h - the single exit of each tc program, and the events `dataplane
 * monitor` shows. A drop is counted by reason; while a monitor runs (bits in
 * dp_config.flags, set by it and cleared when it ends) drops, punts and a
 * sample of forwarded frames are also written to the dp_events ring buffer:
 * type, reason, slot, interface, length and the first DP_MON_HEAD bytes.
 * Events are metered (mon_interval_ns, a GCRA as storm control) and those
 * not written are counted (monitor_lost). With no monitor the cost is one
 * test of a flag in the (inlined) config lookup.
 */
#ifndef DP_MONITOR_H
#define DP_MONITOR_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/stats.h"

static __always_inline int monitor_allow(const struct dp_config *cfg)
{
	__u32 zero = 0;
	__u64 *tat = dp_mon_meter.lookup(&zero);

	if (!tat)
		return 0;
	if (!cfg->mon_interval_ns)
		return 1;
	/* A burst of up to 64 events, then one per interval. */
	return gcra_allow(tat, dp_now_ns(cfg), cfg->mon_interval_ns, 64 * cfg->mon_interval_ns, cfg->mon_interval_ns);
}

static __always_inline void monitor_emit(struct __sk_buff *skb, const struct dp_config *cfg, __u32 type,
					 __u32 reason, __u32 slot)
{
	struct dp_event *ev;
	struct dp_stats *s;
	__u64 len;  /* 64 bits and two tests with a barrier between: see punt.h */

	if (!monitor_allow(cfg))
		goto lost;
	ev = dp_events.ringbuf_reserve(sizeof(*ev));
	if (!ev)
		goto lost;
	ev->type = type;
	ev->reason = reason;
	ev->slot = slot;
	ev->ifindex = skb->ingress_ifindex;
	ev->len = skb->len;
	ev->ts_ns = dp_now_ns(cfg);
	ev->cap = 0;
	len = skb->len;
	if (len > DP_MON_HEAD)
		len = DP_MON_HEAD;
	asm volatile("" : "+r"(len));
	if (len >= 1 && bpf_skb_load_bytes(skb, 0, ev->head, len) == 0)
		ev->cap = len;
	dp_events.ringbuf_submit(ev, 0);
	return;
lost:
	s = stats_get(slot);
	if (s)
		s->monitor_lost++;
}

/* One exit for tc programs: count the drop reason, tell a monitor, map our codes to TC actions. */
#ifdef DP_NO_MONITOR
/* The event code compiled out: what bench/monitor_cost.py compares the default against. */
static __always_inline int tc_exit(struct __sk_buff *skb, __u32 slot, int ret)
{
	if (ret == DP_PASS)
		return TC_ACT_OK;
	if (ret == DP_CONSUMED)
		return DP_ACT_CONSUMED;
	if (ret < 0) {
		count_drop(slot, -ret);
		return TC_ACT_SHOT;
	}
	return ret;
}
#else
static __always_inline int tc_exit(struct __sk_buff *skb, __u32 slot, int ret)
{
	__u32 zero = 0;
	struct dp_config *cfg = dp_config.lookup(&zero);
	__u32 mon = cfg ? cfg->flags & (DP_CFG_MON_DROP | DP_CFG_MON_TRACE) : 0;

	if (ret == DP_PASS)
		return TC_ACT_OK;
	if (ret < 0) {
		count_drop(slot, -ret);
		if (cfg && (mon & DP_CFG_MON_DROP))
			monitor_emit(skb, cfg, DP_EVENT_DROP, -ret, slot);
		return TC_ACT_SHOT;
	}
	/* A consumed frame's event says so (TC_ACT_STOLEN's code, `monitor`'s "consumed"),
	 * though its verdict at tcx is a drop (DP_ACT_CONSUMED). */
	if (cfg && (mon & DP_CFG_MON_TRACE) &&
	    (cfg->mon_sample <= 1 || bpf_get_prandom_u32() % cfg->mon_sample == 0))
		monitor_emit(skb, cfg, DP_EVENT_TRACE, ret == DP_CONSUMED ? TC_ACT_STOLEN : ret, slot);
	return ret == DP_CONSUMED ? DP_ACT_CONSUMED : ret;
}
#endif

#endif /* DP_MONITOR_H */
