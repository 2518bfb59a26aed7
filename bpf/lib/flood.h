/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flood.h - broadcast, multicast and unknown unicast: a copy to every other
 * local endpoint of the VNI, and head-end replication to every VTEP in the
 * VNI's flood list (one encapsulation, the outer destination rewritten per copy).
 *
 * One program run makes at most DP_FLOOD_CHUNK copies and tail-calls itself
 * for the next chunk (skb->cb carries the state, dp_abi.h says how), so a
 * VNI's members are never cut off at the size of one verified loop.
 */
#ifndef DP_FLOOD_H
#define DP_FLOOD_H

#include "lib/common.h"
#include "lib/maps.h"

#define DP_CB_VNI 0
#define DP_CB_ARG 1        /* sending ifindex (endpoint) or inner length (overlay) */
#define DP_CB_IS_IP 2
#define DP_CB_FROM 3       /* first slot of this run */
#define DP_CB_SENT 4       /* copies sent by earlier runs */

/*
 * The loops below count straight into the per-CPU stats value and derive how
 * many copies went out from its difference: a counter kept in a register has
 * a value the verifier tracks exactly, so every count would be a new state to
 * walk and a 64-turn loop would never finish verifying. A failed clone is a
 * counted drop, as is a frame that became unreadable part way.
 */

/* Local copies from slot `from` on, except to the sender; returns how many. */
static __always_inline __u32 flood_local(struct __sk_buff *skb, struct dp_stats *s, const struct dp_network *net,
					 __u32 vni, __u32 except, __u32 from)
{
	__u32 n_local = net->n_local;
	__u32 len = skb->len;
	__u64 before = s->local_packets;

	for (__u32 i = 0; i < DP_FLOOD_CHUNK; i++) {
		struct dp_slot_key k = { .vni = vni, .index = from + i };
		__u32 *oif;

		if (from + i >= n_local)
			break;
		oif = dp_local_ports.lookup(&k);
		if (!oif || *oif == except)
			continue;
		if (bpf_clone_redirect(skb, *oif, 0) == 0) {
			s->local_packets++;
			s->local_bytes += len;
		} else {
			s->drops[DP_DROP_REDIRECT]++;
		}
	}
	return s->local_packets - before;
}

/*
 * The frame already carries outer headers; send one copy per VTEP of the VNI
 * from slot `from` on. Uses the next-hop cache only: the unicast path and the
 * control plane fill it.
 */
static __always_inline __u32 flood_remote(struct __sk_buff *skb, struct dp_stats *s, const struct dp_network *net,
					  __u32 vni, __u32 from)
{
	__u32 n_flood = net->n_flood;
	__u32 inner_len = skb->len - DP_ENCAP_LEN;
	__u64 before = s->tx_packets;

	for (__u32 i = 0; i < DP_FLOOD_CHUNK; i++) {
		struct dp_slot_key k = { .vni = vni, .index = from + i };
		struct dp_nexthop *nh;
		struct dp_outer *o;
		__be32 *vtep;
		void *data, *end;

		if (from + i >= n_flood)
			break;
		vtep = dp_flood.lookup(&k);
		if (!vtep)
			continue;
		nh = dp_nexthops.lookup(vtep);
		if (!nh) {
			s->drops[DP_DROP_NO_NEXTHOP]++;
			continue;
		}
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		o = data;
		if ((void *)(o + 1) > end) {
			s->drops[DP_DROP_HELPER]++;
			break;
		}
		mac_copy(o->eth.h_dest, nh->dmac);
		mac_copy(o->eth.h_source, nh->smac);
		o->ip.daddr = *vtep;
		o->ip.check = 0;
		o->ip.check = ipv4_csum(&o->ip);
		if (bpf_clone_redirect(skb, nh->ifindex, 0) == 0) {
			s->tx_packets++;
			s->tx_bytes += inner_len;
		} else {
			s->drops[DP_DROP_REDIRECT]++;
		}
	}
	return s->tx_packets - before;
}

/* Storm control: may this endpoint flood one more frame? A GCRA meter per endpoint; off when the interval is 0. */
static __always_inline int storm_allow(const struct dp_config *cfg, __u32 ifindex)
{
	__u64 interval = cfg->storm_interval_ns;
	__u64 now, *tat, next;

	if (!interval)
		return 1;
	now = dp_now_ns(cfg);
	tat = dp_storm.lookup(&ifindex);
	if (!tat) {
		next = now + interval;
		dp_storm.update(&ifindex, &next);
		return 1;
	}
	return gcra_allow(tat, now, interval, cfg->storm_burst_ns, interval);
}

/*
 * Storm control for floods that arrive from the underlay: the sender's host
 * metered them per endpoint, but a host without that (storm control off, an
 * older version) or a forger of a peer's address is metered by nothing else,
 * and each frame costs this host a copy per local endpoint of the VNI. So the
 * meter is per network (dp_net_meters by its counters' slot), under one for
 * the host (slot 0), over one per peer and network (dp_peer_meters), and charged in copies: a frame
 * that will make n costs n intervals; none, nothing. Checked
 * before the frame is decapsulated, after the checks that would drop it and
 * after learning (from_overlay.c). A burst
 * is no bound on one frame's copies: a frame dearer than the burst passes
 * whenever the meter has caught up.
 */
static __always_inline int overlay_peer_allow(const struct dp_meters *mc, __u64 now, __u32 vni, __be32 peer,
					      __u64 cost)
{
	struct dp_ip_key k = { .vni = vni, .ip = peer };
	struct dp_peer_meter *m, fresh = { .tat = now + cost };

	m = dp_peer_meters.lookup(&k);
	if (!m) {       /* NOEXIST: another CPU's new entry, and the refusals counted in it, stay */
		dp_peer_meters.insert(&k, &fresh);
		return 1;
	}
	if (gcra_allow(&m->tat, now, cost, mc->overlay_peer_burst_ns, mc->overlay_peer_interval_ns * DP_MAX_LOCAL))
		return 1;
	__sync_fetch_and_add(&m->refused, 1);    /* which peer: stats, metrics (readout.peer_refusals) */
	return 0;
}

/* dp_net_meters[slot]'s overlay storm meter (a network's, or the host's at slot 0) at iv ns a copy;
 * off at iv 0, and for a slot past the map (no VNI has one). */
static __always_inline int overlay_net_allow(__u32 slot, __u64 iv, __u64 burst, __u64 now, __u32 copies)
{
	struct dp_net_meter *m = iv ? dp_net_meters.lookup(&slot) : NULL;

	return !m || gcra_allow(&m->overlay_storm_tat, now, iv * copies, burst, iv * DP_MAX_LOCAL);
}

/* 0, or the drop: DP_DROP_OVERLAY_STORM_PEER (the peer's meter), DP_DROP_OVERLAY_STORM (the
 * network's or the host's). */
static __always_inline int overlay_storm_check(const struct dp_config *cfg, __u32 vni, __u32 slot, __be32 peer,
					       __u32 copies)
{
	__u32 zero = 0;
	struct dp_meters *mc = dp_meters.lookup(&zero);
	__u64 now, iv;

	if (!mc || !copies)
		return 0;
	if (copies > DP_MAX_LOCAL)           /* no more are made (flood.c), nor charged */
		copies = DP_MAX_LOCAL;
	now = dp_now_ns(cfg);
	/* The peer's meter first: one host that does not meter its floods (or an address forged as
	 * its) takes at most its share of the network's budget, and nothing more once refused. */
	iv = mc->overlay_peer_interval_ns;
	if (iv && !overlay_peer_allow(mc, now, vni, peer, iv * copies))
		return -DP_DROP_OVERLAY_STORM_PEER;
	/* Then the network's, so that a flood into one network, refused there, takes nothing
	 * from the others' share of the host's. */
	if (!overlay_net_allow(slot, mc->overlay_storm_interval_ns, mc->overlay_storm_burst_ns, now, copies))
		return -DP_DROP_OVERLAY_STORM;
	/* Then the host's (slot 0: no VNI's), which holds a forger who knows many networks' peers. A
	 * frame it refuses stays charged to its network: an overload's error, on that network alone. */
	if (!overlay_net_allow(0, mc->overlay_host_interval_ns, mc->overlay_host_burst_ns, now, copies))
		return -DP_DROP_OVERLAY_STORM;
	return 0;
}

/*
 * Hand a frame to a flood program. The loops are verified there, once, instead
 * of at every call site; skb->cb carries the arguments across the tail call.
 */
static __always_inline int flood_tail(struct __sk_buff *skb, __u32 slot, __u32 vni, __u32 arg, __u32 is_ip)
{
	skb->cb[DP_CB_VNI] = vni;
	skb->cb[DP_CB_ARG] = arg;
	skb->cb[DP_CB_IS_IP] = is_ip;
	skb->cb[DP_CB_FROM] = 0;
	skb->cb[DP_CB_SENT] = 0;
	dp_tail.call(skb, slot);
	/* Only reached when the slot is empty (programs half loaded). */
	return -DP_DROP_HELPER;
}

/*
 * The next run of program `tail`, from slot `from`, if the list (n members, at
 * most max of them served) goes on that far; 0 if it does not.
 */
static __always_inline int flood_next(struct __sk_buff *skb, __u32 tail, __u32 from, __u32 n, __u32 max,
				      __u32 sent)
{
	if (from >= n || from >= max)
		return 0;
	skb->cb[DP_CB_FROM] = from;
	skb->cb[DP_CB_SENT] = sent;
	dp_tail.call(skb, tail);
	/* The kernel's tail-call limit: dp_abi.h keeps the chunks within it. */
	return -DP_DROP_HELPER;
}

#endif /* DP_FLOOD_H */
