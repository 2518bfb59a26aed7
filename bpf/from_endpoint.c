/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */

#include "lib/all.h"
/*
 * from_endpoint.c - tc ingress on the host side of every endpoint veth:
 * frames a sandbox sends. Source check, ARP answered from dp_neigh, local
 * delivery within the VNI, encapsulation toward a remote VTEP, a punt to the
 * agent on a miss (registry mode), or flooding.
 */

static __always_inline int l2_forward(struct __sk_buff *skb, const struct dp_config *cfg, __u64 gen,
				      __u64 fgen, const struct dp_endpoint *ep, __u32 ifindex, int is_ip)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 vni = ep->vni;
	struct dp_mac_key k = { .vni = vni };
	__u32 oif;
	__be32 vtep;

	if ((void *)(eth + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (mac_is_multicast(eth->h_dest))
		return flood_tail(skb, DP_TAIL_FLOOD_ENDPOINT, vni, ifindex, is_ip);

	mac_copy(k.mac, eth->h_dest);
	oif = local_port(&k, gen);
	if (oif) {
		__u32 to = local_port_ifindex(oif);
		int ret;

		if (to == ifindex)
			return -DP_DROP_NO_DESTINATION;
		if ((oif & DP_LOCAL_ROUTER) && is_ip && vxlan_via_router(skb, cfg))
			return -DP_DROP_TUNNEL_VIA_GATEWAY;
		if (oif & DP_LOCAL_ALIAS) {
			ret = router_take(skb, to, gen);
			if (ret)
				return ret;
		}
		STAT_ADD(ep->slot, local_packets, local_bytes, skb->len);
		/* A gateway port's peer is in this namespace, where redirect_peer refuses to go. */
		if (oif & DP_LOCAL_ROUTER)
			return bpf_redirect(to, 0);
		/* redirect_peer skips the veth's backlog; it needs skb->protocol right, so IP only. */
		return is_ip ? bpf_redirect_peer(to, 0) : bpf_redirect(to, 0);
	}
	vtep = fdb_lookup(&k, cfg, gen, fgen);
	if (!vtep) {
		int ret = punt(skb, vni, ep->slot, ifindex, DP_PUNT_UNKNOWN_DST);

		if (ret != DP_PUNT_FLOOD)
			return ret ? ret : DP_CONSUMED;
		return flood_tail(skb, DP_TAIL_FLOOD_ENDPOINT, vni, ifindex, is_ip);
	}
	return encap_unicast(skb, cfg, ep, vtep, is_ip);
}

static __always_inline int handle_from_endpoint(struct __sk_buff *skb, __u32 *slot_out)
{
	__u32 ifindex = skb->ingress_ifindex;
	__u64 gen = local_gen(), fgen = fdb_gen();   /* before the maps they stand for (local.h) */
	struct dp_endpoint *ep = local_endpoint(ifindex, gen);
	struct dp_config *cfg;
	struct ethhdr *eth;
	void *data, *end;
	int is_ip = 0;
	int ret;

	if (!ep)
		return -DP_DROP_NO_ENDPOINT;
	*slot_out = ep->slot;
	cfg = config_get();
	if (!cfg)
		return -DP_DROP_NO_CONFIG;

	skb_ensure_head(skb, ETH_HLEN + sizeof(struct arp_eth_ipv4));
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (!mac_eq(eth->h_source, ep->mac))
		return -DP_DROP_SPOOF_MAC;
	/* An 802.1Q tag the stack took into the skb's metadata before tc: neither IPv4 nor ARP of
	 * this network, and it would ride along into the outer frame (an underlay VLAN chosen by
	 * the sandbox) or into a neighbour sandbox. */
	if (skb->vlan_present)
		return -DP_DROP_UNSUPPORTED_L3;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return -DP_DROP_TRUNCATED;
		if (ip->version != 4 || ip->ihl < 5)
			return -DP_DROP_BAD_IP;
		/* A gateway port forwards the world's replies: any source but its own MAC's. */
		if (ip->saddr != ep->ip && !(ep->flags & DP_EP_ROUTER))
			return -DP_DROP_SPOOF_IP;
		is_ip = 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		ret = arp_from_endpoint(skb, ep, ifindex);
		if (ret)
			return ret;
	} else {
		return -DP_DROP_UNSUPPORTED_L3;
	}
	if (ep->flags & DP_EP_ROUTER) {         /* from its host address's MAC (router.h) */
		ret = router_leave(skb, ep, !is_ip);
		if (ret)
			return ret;
	}
	return l2_forward(skb, cfg, gen, fgen, ep, ifindex, is_ip);
}

int from_endpoint(struct __sk_buff *skb)
{
	__u32 slot = 0;
	int ret = handle_from_endpoint(skb, &slot);

	return tc_exit(skb, slot, ret);
}
