/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flood.h - broadcast, multicast and unknown unicast: a copy to every other
 * local endpoint of the VNI, and head-end replication to every VTEP in the
 * VNI's flood list (one encapsulation, the outer destination rewritten per copy).
 */
#ifndef DP_FLOOD_H
#define DP_FLOOD_H

/*
 * The loops below count straight into the per-CPU stats value and derive how
 * many copies went out from its difference: a counter kept in a register has
 * a value the verifier tracks exactly, so every count would be a new state to
 * walk and a 64-turn loop would never finish verifying.
 */

/* Copies to the local endpoints of vni except the one it came from; returns how many. */
static __always_inline __u32 flood_local(struct __sk_buff *skb, const struct dp_network *net, __u32 vni,
					 __u32 except)
{
	struct dp_stats *s = stats_get(net->slot);
	__u32 n_local = net->n_local;
	__u32 len = skb->len;
	__u64 before;

	if (!s)
		return 0;
	before = s->local_packets;
	for (__u32 i = 0; i < DP_MAX_LOCAL; i++) {
		struct dp_slot_key k = { .vni = vni, .index = i };
		__u32 *oif;

		if (i >= n_local)
			break;
		oif = dp_local_ports.lookup(&k);
		if (!oif || *oif == except)
			continue;
		if (bpf_clone_redirect(skb, *oif, 0) == 0) {
			s->local_packets++;
			s->local_bytes += len;
		}
	}
	return s->local_packets - before;
}

/*
 * The frame already carries outer headers; send one copy per VTEP of the VNI.
 * Uses the next-hop cache only: the unicast path and the control plane fill it.
 */
static __always_inline __u32 flood_remote(struct __sk_buff *skb, const struct dp_network *net, __u32 vni,
					  __u32 inner_len)
{
	struct dp_stats *s = stats_get(net->slot);
	__u32 n_flood = net->n_flood;
	__u64 before;

	if (!s)
		return 0;
	before = s->tx_packets;
	for (__u32 i = 0; i < DP_MAX_FLOOD; i++) {
		struct dp_slot_key k = { .vni = vni, .index = i };
		struct dp_nexthop *nh;
		struct dp_outer *o;
		__be32 *vtep;
		void *data, *end;

		if (i >= n_flood)
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
		if ((void *)(o + 1) > end)
			break;
		mac_copy(o->eth.h_dest, nh->dmac);
		mac_copy(o->eth.h_source, nh->smac);
		o->ip.daddr = *vtep;
		o->ip.check = 0;
		o->ip.check = ipv4_csum(&o->ip);
		if (bpf_clone_redirect(skb, nh->ifindex, 0) == 0) {
			s->tx_packets++;
			s->tx_bytes += inner_len;
		}
	}
	return s->tx_packets - before;
}

static __always_inline int flood(struct __sk_buff *skb, const struct dp_config *cfg,
				 const struct dp_network *net, __u32 vni, __u32 from_ifindex, int inner_is_ip)
{
	__u32 sent, len;
	int ret;

	sent = flood_local(skb, net, vni, from_ifindex);
	if (net->n_flood == 0)
		return sent ? DP_CONSUMED : -DP_DROP_NO_DESTINATION;

	len = skb->len;
	/* Destination and MACs are rewritten per copy by flood_remote. */
	ret = encap_push(skb, cfg, NULL, 0, vni, len, inner_is_ip);
	if (ret < 0)
		return ret;
	sent += flood_remote(skb, net, vni, len);

	struct dp_stats *s = stats_get(net->slot);
	if (s)
		s->flooded++;
	return sent ? DP_CONSUMED : -DP_DROP_NO_DESTINATION;
}

/*
 * Hand a frame to a flood program. The loops are verified there, once, instead
 * of at every call site; skb->cb carries the arguments across the tail call.
 */
static __always_inline int flood_tail(struct __sk_buff *skb, __u32 slot, __u32 vni, __u32 a, __u32 b)
{
	skb->cb[0] = vni;
	skb->cb[1] = a;
	skb->cb[2] = b;
	dp_tail.call(skb, slot);
	/* Only reached when the slot is empty (programs half loaded). */
	return -DP_DROP_HELPER;
}

#endif /* DP_FLOOD_H */
