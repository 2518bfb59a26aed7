/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lean_vxlan.c - the least a tc program pair can do and still carry one
 * network's IPv4 frames (without IP options) over VXLAN between two hosts:
 * bench.lean's yardstick for our own programs, never loaded by the node.
 *
 * Encapsulation: one inlined per-CPU array read for a prebuilt outer header,
 * the inner destination MAC compared with the one this pair serves, the
 * fast path's own flow hash and source port (wire.h), adjust_room, the 50
 * header bytes written, two lengths and the IPv4 checksum filled in, a
 * redirect to the uplink. Decapsulation: the outer headers checked much as
 * vxlan_parse does for a frame without options (IPv4 to our address, no
 * fragment, UDP to the VXLAN port, the I flag, the VNI; lengths that match
 * the frame exactly, where ours trims bytes past the IPv4 length), the inner
 * destination MAC and ethertype, adjust_room, the inner Ethernet header put
 * back, redirect_peer into the sandbox. No endpoint, FDB or neighbour
 * lookup, no learning, counters, spoofing checks, ARP, flooding, MTU or
 * monitor: what ours does beyond this is the price of those, and this pair's
 * cost is the floor of an overlay built this way (tc hooks, adjust_room,
 * redirects) on the machine.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>

#include "dp_abi.h"
#include "lib/wire.h"

#define OUTER_LEN 50          /* Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 */
#define DECAP_L3_IPV4 (1ULL << 7)

struct lean_cfg {
	__u8 outer[OUTER_LEN];    /* encap: the outer headers; lengths, checksum and source port 0 */
	__u8 mac[ETH_ALEN];       /* the inner destination MAC this pair carries */
	__u32 csum_words;         /* encap: the 16-bit words of outer[14..34] summed, as they lie in memory */
	__u32 ifindex;            /* encap: the uplink; decap: the endpoint's host-side veth */
	__u32 vni_word;           /* decap: the VXLAN header's second word as it lies in memory */
	__be32 local_ip;          /* decap: the outer destination that is ours */
	__u16 port;               /* decap: the VXLAN UDP port, network order */
	__u16 pad[3];
};

BPF_PERCPU_ARRAY(lean_cfg, struct lean_cfg, 2);   /* 0: encapsulation, 1: decapsulation */

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

int from_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 len = skb->len, ip_len, l4 = 0, sum;
	struct lean_cfg *c;
	struct udphdr *udp;
	__u16 sport;
	int k = 0;

	c = lean_cfg.lookup(&k);
	if (!c || data + ETH_HLEN + sizeof(*ip) + 4 > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)ip != 0x45 || !mac_eq(eth->h_dest, c->mac))
		return TC_ACT_OK;
	/* The fast path's hash of the same words (encap.h's skb_flow_hash), so the bytes match ours. */
	if (!(ip->frag_off & bpf_htons(DP_IP_MF | DP_IP_OFFSET)) &&
	    (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP))
		l4 = *(__u32 *)(ip + 1);
	sport = vxlan_src_port(DP_SRC_PORT_MIN, DP_SRC_PORT_MAX, dp_flow_hash4(ip->saddr, ip->daddr, ip->protocol, l4));
	if (bpf_skb_adjust_room(skb, OUTER_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
				BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) |
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + OUTER_LEN + ETH_HLEN > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(data + OUTER_LEN, data, ETH_HLEN);      /* the inner Ethernet header */
	__builtin_memcpy(data, c->outer, OUTER_LEN);
	ip = data + ETH_HLEN;
	udp = (void *)(ip + 1);
	/* Past 64 KB (a GSO packet) as outer_build writes it: IPv4 length 0, UDP length 0xffff. */
	ip_len = len + OUTER_LEN - ETH_HLEN;
	ip->tot_len = bpf_htons(ip_len > 0xffff ? 0 : ip_len);
	sum = c->csum_words + ip->tot_len;
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~((sum & 0xffff) + (sum >> 16));
	udp->len = bpf_htons(ip_len > 0xffff ? 0xffff : ip_len - sizeof(*ip));
	udp->source = bpf_htons(sport);
	return bpf_redirect(c->ifindex, 0);
}

int from_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data, inner;
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *udp = (void *)(ip + 1);
	__u32 *vx = (void *)(udp + 1);
	__u32 len = skb->len;
	struct lean_cfg *c;
	int k = 1;

	c = lean_cfg.lookup(&k);
	if (!c || data + OUTER_LEN + ETH_HLEN > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)ip != 0x45 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != c->local_ip || udp->dest != c->port)
		return TC_ACT_OK;
	__builtin_memcpy(&inner, data + OUTER_LEN, ETH_HLEN);
	if (ip->frag_off & bpf_htons(DP_IP_MF | DP_IP_OFFSET))
		return TC_ACT_SHOT;
	/* The lengths must be the frame's (a GSO packet past 64 KB carries 0 and 0xffff). */
	if (ip->tot_len ? bpf_ntohs(ip->tot_len) != len - ETH_HLEN ||
			  bpf_ntohs(udp->len) != len - ETH_HLEN - sizeof(*ip)
			: !skb->gso_size || udp->len != 0xffff)
		return TC_ACT_SHOT;
	if (vx[0] != bpf_htonl(0x08000000) || vx[1] != c->vni_word || !mac_eq(inner.h_dest, c->mac) ||
	    inner.h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, -OUTER_LEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO | DECAP_L3_IPV4))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(data, &inner, ETH_HLEN);
	return bpf_redirect_peer(c->ifindex, 0);
}
