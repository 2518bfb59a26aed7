/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * arp.h - ARP from an endpoint: checked against the endpoint's own addresses,
 * and requests for a known {VNI, IP} answered from dp_neigh without leaving the
 * host. ARP from the overlay: checked against dp_neigh before delivery.
 */
#ifndef DP_ARP_H
#define DP_ARP_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/punt.h"

/* Returns 0 to forward the ARP frame at L2, an action, or -DP_DROP_*. */
static __always_inline int arp_from_endpoint(struct __sk_buff *skb, const struct dp_endpoint *ep,
					     __u32 ifindex)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	struct dp_ip_key k = { .vni = ep->vni };
	struct dp_mac *m;
	__be32 target;
	int ret;

	if ((void *)(arp + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return -DP_DROP_BAD_ARP;
	if (!mac_eq(arp->sha, ep->mac))
		return -DP_DROP_SPOOF_MAC;
	/* 0.0.0.0 is a duplicate-address probe (RFC 5227): allowed, forwarded. */
	if (arp->spa != ep->ip && arp->spa != 0)
		return -DP_DROP_SPOOF_IP;
	if (arp->op != bpf_htons(ARPOP_REQUEST) || arp->spa == 0 || arp->spa == arp->tpa)
		return 0;

	target = arp->tpa;
	k.ip = target;
	m = dp_neigh.lookup(&k);
	if (!m) {
		ret = punt(skb, ep->vni, ep->slot, ifindex, DP_PUNT_ARP_MISS);
		return ret == DP_PUNT_FLOOD ? 0 : ret ? ret : DP_CONSUMED;
	}

	/* Turn the request into its reply in place and send it back. */
	mac_copy(eth->h_dest, eth->h_source);
	mac_copy(eth->h_source, m->mac);
	arp->op = bpf_htons(ARPOP_REPLY);
	mac_copy(arp->tha, arp->sha);
	arp->tpa = arp->spa;
	mac_copy(arp->sha, m->mac);
	arp->spa = target;

	struct dp_stats *s = stats_get(ep->slot);
	if (s)
		s->arp_replies++;
	return bpf_redirect(ifindex, 0);
}

/*
 * ARP inside a VXLAN frame (vx from vxlan_parse): well formed, its sender
 * hardware address the frame's own source, and a sender pair that does not
 * contradict dp_neigh (ARP spoofing across hosts). An unknown sender address
 * and a probe (sender 0.0.0.0) pass. Returns 0 or -DP_DROP_*.
 */
static __always_inline int arp_from_overlay(struct __sk_buff *skb, const struct vx_info *vx)
{
	struct dp_ip_key k = { .vni = vx->vni };
	struct arp_eth_ipv4 arp;
	struct dp_mac *m;

	if (vx->inner_len < ETH_HLEN + sizeof(arp) ||
	    bpf_skb_load_bytes(skb, (vx->inner_off & 0xff) + ETH_HLEN, &arp, sizeof(arp)))
		return -DP_DROP_TRUNCATED;
	if (arp.htype != bpf_htons(ARPHRD_ETHER) || arp.ptype != bpf_htons(ETH_P_IP) ||
	    arp.hlen != ETH_ALEN || arp.plen != 4 ||
	    (arp.op != bpf_htons(ARPOP_REQUEST) && arp.op != bpf_htons(ARPOP_REPLY)))
		return -DP_DROP_BAD_ARP;
	if (!mac_eq(arp.sha, vx->inner.h_source))
		return -DP_DROP_ARP_SPOOF;
	if (arp.spa == 0)
		return 0;
	k.ip = arp.spa;
	m = dp_neigh.lookup(&k);
	if (m && !mac_eq(m->mac, arp.sha))
		return -DP_DROP_ARP_SPOOF;
	return 0;
}

#endif /* DP_ARP_H */
