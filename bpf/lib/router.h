/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * router.h - what may not leave a network through its gateway (node/gateway.py):
 * the host routes and masquerades what a gateway's router receives, so a
 * datagram to the VXLAN port sent that way reaches a peer VTEP from this
 * host's own address, which the peer admits into any VNI it shares with us,
 * with any inner source MAC the registry places on this host. One network's
 * sandbox (or, through from_overlay, a peer) could so write into another
 * network. Unfragmented datagrams and first fragments carry the UDP header;
 * a later fragment alone cannot be reassembled into one without its first.
 */
#ifndef DP_ROUTER_H
#define DP_ROUTER_H

#include "lib/common.h"

/* Is the IPv4 frame at skb->data (Ethernet, then IPv4 with ihl >= 5) UDP to the VXLAN port? */
static __always_inline int vxlan_via_router(struct __sk_buff *skb, const struct dp_config *cfg)
{
	struct iphdr ip;
	__be16 dport;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return 0;
	if (ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(DP_IP_OFFSET)))
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + (ip.ihl & 0xf) * 4 + 2, &dport, sizeof(dport)))
		return 0;
	return dport == cfg->port;
}

#endif /* DP_ROUTER_H */
