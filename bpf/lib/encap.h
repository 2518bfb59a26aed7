/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * encap.h - RFC 7348 encapsulation: outer Ethernet/IPv4/UDP/VXLAN headers,
 * the next-hop cache that supplies the outer MACs, and the head-room calls.
 * The bytes themselves come from wire.h, which csrc/ compiles too.
 */
#ifndef DP_ENCAP_H
#define DP_ENCAP_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/icmp.h"

/* bcc 0.26 declares this helper with the wrong arity; the kernel takes four arguments. */
static long (*dp_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/*
 * The inner flow's hash (wire.h says which words), read before the frame
 * changes. inner_is_ip: from_endpoint checked version 4 and ihl >= 5.
 * Headers in the linear head (every locally built TCP/UDP packet) are read in
 * place; bpf_skb_load_bytes, a helper call per read, only for the rest.
 */
static __always_inline __u32 skb_flow_hash(struct __sk_buff *skb, int inner_is_ip)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *iph = data + ETH_HLEN;
	__u32 w[4] = {};
	struct iphdr ip;

	if (!inner_is_ip) {
		if (data + 12 <= end)
			__builtin_memcpy(w, data, 12);
		else if (bpf_skb_load_bytes(skb, 0, w, 12))
			w[0] = w[1] = w[2] = 0;
		return dp_flow_hash4(w[0], w[1], w[2], 0);
	}
	if ((void *)(iph + 1) <= end)
		__builtin_memcpy(&ip, iph, sizeof(ip));
	else if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return dp_flow_hash4(0, 0, 0, 0);
	w[0] = ip.saddr;
	w[1] = ip.daddr;
	w[2] = ip.protocol;
	if (!(ip.frag_off & bpf_htons(DP_IP_MF | DP_IP_OFFSET)) &&
	    (ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP)) {
		__u32 l4 = ETH_HLEN + (ip.ihl & 0xf) * 4;

		if (data + l4 + 4 <= end)
			__builtin_memcpy(&w[3], data + l4, 4);
		else if (bpf_skb_load_bytes(skb, l4, &w[3], 4))
			w[3] = 0;
	}
	return dp_flow_hash4(w[0], w[1], w[2], w[3]);
}

/*
 * Outer MACs toward a VTEP: cached for DP_NH_TTL_NS, then asked again of the
 * kernel's FIB and neighbour table. NULL when neither has one: the caller
 * then lets bpf_redirect_neigh resolve it.
 */
static __always_inline struct dp_nexthop *nexthop_lookup(struct __sk_buff *skb,
							 const struct dp_config *cfg, __be32 vtep, __u64 now)
{
	struct dp_nexthop *nh = dp_nexthops.lookup(&vtep);
	struct bpf_fib_lookup p = {};

	if (nh && (nh->flags & DP_NH_STATIC))
		return nh;
	/* A sum, as in fdb_lookup: the agent primes entries with a precise clock a tick ahead of ours. */
	if (nh && nh->updated_ns + DP_NH_TTL_NS > now)
		return nh;

	p.family = 2; /* AF_INET */
	p.ipv4_src = cfg->local_ip;
	p.ipv4_dst = vtep;
	p.ifindex = cfg->uplink_ifindex;
	/* Needs IPv4 forwarding on the uplink (the agent turns it on). If the FIB
	 * cannot answer, an old entry beats a drop. */
	if (bpf_fib_lookup(skb, &p, sizeof(p), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return nh;

	struct dp_nexthop fresh = {};
	mac_copy(fresh.smac, p.smac);
	mac_copy(fresh.dmac, p.dmac);
	fresh.ifindex = p.ifindex;
	fresh.updated_ns = now;
	dp_nexthops.update(&vtep, &fresh);
	return dp_nexthops.lookup(&vtep);
}

/*
 * nexthop_lookup behind a per-CPU, direct-mapped copy (dp_nh_cache): an array
 * lookup the verifier inlines, where a hash map's is a function call (about
 * 45 ns a frame on a guest with SRSO's safe RET). A copy lives no longer than
 * the entry it copies would before its refresh (a static one DP_NH_TTL_NS), so
 * the FIB's answer reaches frames when it did; an agent's rewrite of an entry
 * still fresh (priming a peer removed and added again within the second) waits
 * out the rest of that second. Two VTEPs sharing a slot take turns; per CPU,
 * so no other CPU's rewrite is seen half done.
 */
static __always_inline struct dp_nexthop *nexthop_get(struct __sk_buff *skb,
						      const struct dp_config *cfg, __be32 vtep)
{
	__u32 idx = dp_nh_slot(vtep, DP_MAP_NH_CACHE);
	struct dp_nexthop *c = dp_nh_cache.lookup(&idx);
	__u64 now = dp_now_ns(cfg);
	struct dp_nexthop *nh;

#ifdef DP_NO_COPIES
	c = NULL;
#endif
	if (c && c->vtep == vtep && c->updated_ns + DP_NH_TTL_NS > now)
		return c;
	nh = nexthop_lookup(skb, cfg, vtep, now);
	if (nh && c) {
		__builtin_memcpy(c, nh, sizeof(*c));
		c->vtep = vtep;
		if (nh->flags & DP_NH_STATIC)
			c->updated_ns = now;
	}
	return nh;
}

#define DP_EALREADY 114 /* errno on x86 and arm */
#define DP_MARKED 1      /* vxlan_push: the frame carries tunnel marks already, untouched */

/*
 * Make room for the outer headers in front of the inner Ethernet header.
 * IP frames use adjust_room so GSO super-packets stay whole and are segmented
 * as UDP tunnel packets later; adjust_room refuses anything else (ARP), which
 * gets change_head instead, as does any frame when `head` is set. Afterwards
 * bytes [0, DP_ENCAP_LEN) are ours to fill. Returns 0, DP_MARKED or -reason.
 *
 * DP_MARKED: adjust_room refuses (EALREADY) a frame that carries tunnel marks
 * (skb->encapsulation, inner offsets, for GSO a tunnel GSO type). Two kinds
 * reach us: what a sandbox tunnels itself (its vxlan or GRE device), and what
 * it forwards from the overlay, since from_overlay's decapsulation leaves the
 * marks on this kernel (the flag that clears them is newer). See encap_marked.
 */
static __always_inline int vxlan_push(struct __sk_buff *skb, int inner_is_ip, int head)
{
	void *data, *end;
	long ret;

	if (!inner_is_ip || head)
		return bpf_skb_change_head(skb, DP_ENCAP_LEN, 0) ? -DP_DROP_HELPER : 0;

	ret = bpf_skb_adjust_room(skb, DP_ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				  BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
				  BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) |
				  BPF_F_ADJ_ROOM_FIXED_GSO);
	if (ret == -DP_EALREADY)
		return DP_MARKED;
	if (ret)
		return -DP_DROP_HELPER;
	/* The room went in after the old Ethernet header; move that header behind it. */
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + DP_ENCAP_LEN + ETH_HLEN > end)
		return -DP_DROP_HELPER;
	__builtin_memcpy(data + DP_ENCAP_LEN, data, ETH_HLEN);
	return 0;
}

/*
 * Put outer headers in front of the frame: room first, then the 50 bytes,
 * written in place (not built on the stack and copied: 50 bytes of stores
 * and a 50-byte copy less per frame). hash: skb_flow_hash of the inner flow,
 * taken by the caller before the frame changes (once, though a marked frame
 * may be pushed twice). Returns 0, DP_MARKED or -reason.
 */
static __always_inline int encap_push(struct __sk_buff *skb, const struct dp_config *cfg,
				      const struct dp_nexthop *nh, __be32 dst, __u32 vni,
				      __u32 inner_len, int inner_is_ip, int head, __u32 hash)
{
	/* Without a next hop bpf_redirect_neigh fills both MACs; it refuses a multicast placeholder. */
	__u8 placeholder[6] = { 0x02, 0, 0, 0, 0, 0 };
	__u16 sport = vxlan_src_port(cfg->src_port_min, cfg->src_port_max, hash);
	void *data, *end;
	int ret;

	ret = vxlan_push(skb, inner_is_ip, head);
	if (ret)
		return ret;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + sizeof(struct dp_outer) > end)
		return -DP_DROP_HELPER;
	outer_build(data, nh ? nh->smac : placeholder, nh ? nh->dmac : placeholder, cfg->local_ip, dst,
		    cfg->port, vni, sport, inner_len);
	return 0;
}

/*
 * A frame with a tunnel in it already (DP_MARKED). Its marks describe that tunnel, and
 * GSO or a NIC would take our headers for it. The kernel's own tunnel code handles it
 * (segments a tunnelled GSO packet first; moves the network and transport headers onto
 * the new outer ones, which makes drivers' checks see the nesting): so it leaves by
 * rxgro.py's collect_md vxlan device, with our VNI, addresses, TTL, DF, zero UDP
 * checksum and source port in its tunnel key and hash. Without that device
 * (--no-rx-gro, or the port another device's), a single frame gets change_head,
 * whose network header stays on the inner IPv4 header; a GSO packet cannot be cut
 * here and is counted (the sandbox ends cut tunnelled GSO themselves,
 * kernel/ethtool.py). No next hop: dropped, as redirect_neigh would leave the
 * network header on ours and the transport on the inner.
 */
static __always_inline int encap_marked(struct __sk_buff *skb, const struct dp_config *cfg,
					const struct dp_nexthop *nh, __be32 vtep, __u32 vni, __u32 slot,
					__u32 len, int inner_is_ip, __u32 hash)
{
	int ret;

	if (cfg->tunnel_ifindex) {
		struct bpf_tunnel_key key = {
			.tunnel_id = vni,
			.remote_ipv4 = bpf_ntohl(vtep),
			.tunnel_ttl = 64,
			.local_ipv4 = bpf_ntohl(cfg->local_ip),
		};

		if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT))
			return -DP_DROP_HELPER;
		/* The flow's outer source port, as ours (wire.h vxlan_src_port): the kernel takes
		 * v ^ v << 16 of the skb's hash v, so given hash ^ hash << 16 it gets hash back. The
		 * skb's hash would otherwise be the NIC's of the packet it arrived in, and one flow
		 * would leave on two ports. */
		bpf_set_hash(skb, hash ^ (hash << 16));
		STAT_ADD(slot, tx_packets, tx_bytes, len);
		return bpf_redirect(cfg->tunnel_ifindex, 0);
	}
	if (skb->gso_size)
		return -DP_DROP_TUNNEL_GSO;
	if (!nh)
		return -DP_DROP_NO_NEXTHOP;
	ret = encap_push(skb, cfg, nh, vtep, vni, len, inner_is_ip, 1, hash);
	if (ret < 0)
		return ret;
	STAT_ADD(slot, tx_packets, tx_bytes, len);
	return bpf_redirect(nh->ifindex, 0);
}

/*
 * A GSO packet is cut into segments of gso_size payload bytes behind its inner IPv4 and
 * transport headers, after it left us (FIXED_GSO keeps it whole). Do they fit the network's
 * MTU? gso_size is the sender's to choose (a packet socket with PACKET_VNET_HDR sets any), and
 * the size check on single frames skipped GSO: segments over the MTU went out, DF set, to be
 * lost on the underlay. The stack makes IPv4 GSO of TCP and UDP only; anything else fails.
 * 0, or the drop reason (negative).
 *
 * Nor may it be cut into more than DP_GSO_SEGS_MAX segments. The kernel sets no lower bound
 * on a packet socket's TCP gso_size: with 1, one 64 KB send became about 64,000 frames on the
 * underlay, cut in softirq outside the sender's CPU share (a review found it). A stack's own
 * TCP keeps to the device's gso_max_segs, which an endpoint's sandbox side is given
 * (endpoints.py), so it makes smaller packets under a tiny MSS rather than have them dropped.
 */

static __always_inline int gso_fits(struct __sk_buff *skb, __u32 mtu)
{
	struct iphdr ip;
	__u8 doff;
	__u32 hdr;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4)
		return -DP_DROP_TOO_BIG;
	hdr = (ip.ihl & 0xf) * 4;
	if (ip.protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + hdr + 12, &doff, 1))
			return -DP_DROP_TOO_BIG;
		hdr += (doff >> 4) * 4;
	} else if (ip.protocol == IPPROTO_UDP) {
		hdr += sizeof(struct udphdr);
	} else {
		return -DP_DROP_TOO_BIG;
	}
	if (skb->gso_size + hdr > mtu)
		return -DP_DROP_TOO_BIG;
	if (skb->len > ETH_HLEN + hdr + skb->gso_size * DP_GSO_SEGS_MAX)
		return -DP_DROP_GSO_SEGS;
	return 0;
}

/* Encapsulate a frame of endpoint ep toward one VTEP and send it out of the uplink. */
static __always_inline int encap_unicast(struct __sk_buff *skb, const struct dp_config *cfg,
					 const struct dp_endpoint *ep, __be32 vtep, int inner_is_ip)
{
	struct dp_nexthop *nh;
	__u32 len = skb->len;
	__u32 vni = ep->vni, slot = ep->slot, hash;
	int ret;

	if (!skb->gso_size && len > ep->mtu + ETH_HLEN)
		return inner_is_ip ? icmp_frag_needed(skb, slot, ep->mtu) : -DP_DROP_TOO_BIG;
	if (skb->gso_size) {
		ret = gso_fits(skb, ep->mtu);
		if (ret)
			return ret;
	}
	nh = nexthop_get(skb, cfg, vtep);
	/* redirect_neigh can only resolve for frames the kernel sees as IP. */
	if (!nh && !inner_is_ip)
		return -DP_DROP_NO_NEXTHOP;

	hash = skb_flow_hash(skb, inner_is_ip);
	ret = encap_push(skb, cfg, nh, vtep, vni, len, inner_is_ip, 0, hash);
	if (ret == DP_MARKED)
		return encap_marked(skb, cfg, nh, vtep, vni, slot, len, inner_is_ip, hash);
	if (ret < 0)
		return ret;
	STAT_ADD(slot, tx_packets, tx_bytes, len);
	if (nh)
		return bpf_redirect(nh->ifindex, 0);
	return dp_redirect_neigh(cfg->uplink_ifindex, NULL, 0, 0);
}

#endif /* DP_ENCAP_H */
