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
#include "lib/local.h"

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

/*
 * A gateway's router holds the network's gateway address with a MAC derived from it, the same
 * on every host, and its host's own address in the subnet (node/gateway.py), registered like an
 * endpoint with the MAC derived from that: what the host masquerades into the subnet (a DNAT
 * back into it, as kube-proxy's ClusterIP) comes from there, so the target's reply returns to
 * the host whose conntrack holds the connection, wherever the target lives.
 *
 * router_take: a frame to that host address's MAC (dp_local_macs flags it DP_LOCAL_ALIAS) gets
 * the router's own MAC as destination: the device takes frames to its own MAC only.
 */
static __always_inline int router_take(struct __sk_buff *skb, __u32 port, __u64 gen)
{
	struct dp_endpoint *ep = local_endpoint(port, gen);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (!ep)
		return -DP_DROP_NO_ENDPOINT;
	if ((void *)(eth + 1) > end)
		return -DP_DROP_TRUNCATED;
	mac_copy(eth->h_dest, ep->mac);
	return 0;
}

/*
 * router_leave: a router's frames leave from the host address's MAC, 02:42 and the address
 * (model.mac_for_ip), which the port's endpoint entry holds as its address, whatever way they
 * go (to another host, flooded, punted): the gateway's MAC is every host's router's, and another
 * host that has a gateway of the network takes a frame from it for one of its own
 * (mac_conflict). An ARP's sender MAC goes with it (the router's requests name the host
 * address, and a sender pair that contradicts dp_neigh is arp_spoof). Nothing for a router
 * with no host address: its entry has the gateway's, whose MAC the router already sends from.
 */
static __always_inline int router_leave(struct __sk_buff *skb, const struct dp_endpoint *ep, int is_arp)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	__u32 tail;

	__builtin_memcpy(&tail, &ep->mac[2], 4);
	if (ep->mac[0] == 0x02 && ep->mac[1] == 0x42 && tail == ep->ip)
		return 0;
	if ((void *)(eth + 1) > end)
		return -DP_DROP_TRUNCATED;
	eth->h_source[0] = 0x02;
	eth->h_source[1] = 0x42;
	__builtin_memcpy(&eth->h_source[2], &ep->ip, 4);
	if (is_arp) {
		if ((void *)(arp + 1) > end)
			return -DP_DROP_TRUNCATED;
		__builtin_memcpy(arp->sha, eth->h_source, ETH_ALEN);
	}
	return 0;
}

#endif /* DP_ROUTER_H */
