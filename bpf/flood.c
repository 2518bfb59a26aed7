/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flood.c - tail-call targets (dp_tail) that replicate broadcast and unknown
 * frames: from an endpoint to local endpoints and then, encapsulated once, to
 * the VNI's VTEPs; from the overlay to the local endpoints of the VNI (metered
 * before, in from_overlay.c). Each run makes one chunk of copies and calls
 * itself for the next (flood.h).
 */

#include "lib/all.h"

/* The VNI's network and counters for a flood run; non-zero (a drop) if either is missing. */
static __always_inline int flood_begin(struct __sk_buff *skb, struct dp_network **net, struct dp_stats **s)
{
	__u32 vni = skb->cb[DP_CB_VNI];

	*net = dp_networks.lookup(&vni);
	if (!*net)
		return -DP_DROP_UNKNOWN_VNI;
	*s = stats_get((*net)->slot);
	return *s ? 0 : -DP_DROP_HELPER;
}

static __always_inline int flood_endpoint_run(struct __sk_buff *skb, const struct dp_network *net,
					      struct dp_stats *s, __u32 vni)
{
	struct dp_config *cfg = config_get();
	__u32 from = skb->cb[DP_CB_FROM];
	__u32 sent = skb->cb[DP_CB_SENT];
	__u32 len, hash;
	int ret;

	if (!cfg)
		return -DP_DROP_NO_CONFIG;
	if (from == 0 && !storm_allow(cfg, skb->cb[DP_CB_ARG]))
		return -DP_DROP_STORM;
	sent += flood_local(skb, s, net, vni, skb->cb[DP_CB_ARG], from);
	ret = flood_next(skb, DP_TAIL_FLOOD_ENDPOINT, from + DP_FLOOD_CHUNK, net->n_local, DP_MAX_LOCAL, sent);
	if (ret)
		return ret;
	if (net->n_flood == 0)
		return sent ? DP_CONSUMED : -DP_DROP_NO_DESTINATION;

	len = skb->len;
	if (!skb->gso_size && len > net->mtu + ETH_HLEN)
		return -DP_DROP_TOO_BIG;
	if (skb->gso_size) {
		ret = gso_fits(skb, net->mtu);
		if (ret)
			return ret;
	}
	/* Destination and MACs are rewritten per copy by flood_remote. */
	hash = skb_flow_hash(skb, skb->cb[DP_CB_IS_IP]);
	ret = encap_push(skb, cfg, NULL, 0, vni, len, skb->cb[DP_CB_IS_IP], 0, hash);
	if (ret == DP_MARKED) {      /* a tunnel of its own (encap.h): change_head, which cannot cut GSO */
		if (skb->gso_size)
			return -DP_DROP_TUNNEL_GSO;
		ret = encap_push(skb, cfg, NULL, 0, vni, len, skb->cb[DP_CB_IS_IP], 1, hash);
	}
	if (ret < 0)
		return ret;
	s->flooded++;
	return flood_next(skb, DP_TAIL_FLOOD_REMOTE, 0, net->n_flood, DP_MAX_FLOOD, sent);    /* n_flood > 0 */
}

int flood_endpoint(struct __sk_buff *skb)
{
	struct dp_network *net;
	struct dp_stats *s;
	int ret = flood_begin(skb, &net, &s);

	if (ret)
		return tc_exit(skb, 0, ret);
	return tc_exit(skb, net->slot, flood_endpoint_run(skb, net, s, skb->cb[DP_CB_VNI]));
}

int flood_remote_vteps(struct __sk_buff *skb)
{
	__u32 from = skb->cb[DP_CB_FROM];
	__u32 sent = skb->cb[DP_CB_SENT];
	struct dp_network *net;
	struct dp_stats *s;
	int ret = flood_begin(skb, &net, &s);

	if (ret)
		return tc_exit(skb, 0, ret);
	sent += flood_remote(skb, s, net, skb->cb[DP_CB_VNI], from);
	ret = flood_next(skb, DP_TAIL_FLOOD_REMOTE, from + DP_FLOOD_CHUNK, net->n_flood, DP_MAX_FLOOD, sent);
	if (ret)
		return tc_exit(skb, net->slot, ret);
	return tc_exit(skb, net->slot, sent ? DP_CONSUMED : -DP_DROP_NO_DESTINATION);
}

int flood_overlay(struct __sk_buff *skb)
{
	__u32 from = skb->cb[DP_CB_FROM];
	__u32 sent = skb->cb[DP_CB_SENT];
	struct dp_network *net;
	struct dp_stats *s;
	int ret = flood_begin(skb, &net, &s);

	if (ret)
		return tc_exit(skb, 0, ret);
	sent += flood_local(skb, s, net, skb->cb[DP_CB_VNI], 0, from);
	ret = flood_next(skb, DP_TAIL_FLOOD_OVERLAY, from + DP_FLOOD_CHUNK, net->n_local, DP_MAX_LOCAL, sent);
	if (ret)
		return tc_exit(skb, net->slot, ret);
	if (!sent)
		return tc_exit(skb, net->slot, -DP_DROP_NO_DESTINATION);
	STAT_ADD(net->slot, rx_packets, rx_bytes, skb->cb[DP_CB_ARG]);
	return tc_exit(skb, net->slot, DP_CONSUMED);
}
