/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flood.c - tail-call targets (dp_tail) that replicate broadcast and unknown
 * frames: from an endpoint to local endpoints and the VNI's VTEPs, and from
 * the overlay to the local endpoints of the VNI.
 */

#include "lib/all.h"

int flood_endpoint(struct __sk_buff *skb)
{
	__u32 vni = skb->cb[0];
	struct dp_network *net = dp_networks.lookup(&vni);
	struct dp_config *cfg = config_get();
	int ret;

	if (!net)
		return tc_exit(0, -DP_DROP_UNKNOWN_VNI);
	ret = cfg ? flood(skb, cfg, net, vni, skb->cb[1], skb->cb[2]) : -DP_DROP_NO_CONFIG;
	return tc_exit(net->slot, ret);
}

int flood_overlay(struct __sk_buff *skb)
{
	__u32 vni = skb->cb[0];
	struct dp_network *net = dp_networks.lookup(&vni);
	__u32 n;

	if (!net)
		return tc_exit(0, -DP_DROP_UNKNOWN_VNI);
	n = flood_local(skb, net, vni, 0);
	if (n)
		STAT_ADD(net->slot, rx_packets, rx_bytes, skb->cb[1]);
	return tc_exit(net->slot, n ? DP_CONSUMED : -DP_DROP_NO_DESTINATION);
}
