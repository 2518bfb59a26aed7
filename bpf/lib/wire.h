/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * wire.h - the bytes of RFC 7348 encapsulation in plain C: outer header
 * layout, IPv4 checksum, the inner flow hash, the outer source port and the
 * parser that judges an arriving VXLAN frame.
 *
 * No BPF helper and no kernel-internal type: the fast path (encap.h) and the
 * C helper (csrc/dpwire.c) both include this file, so the outer headers they
 * write come from one definition. Callers include the uapi ethhdr, iphdr and
 * udphdr first.
 */
#ifndef DP_WIRE_H
#define DP_WIRE_H

#include "dp_abi.h"

#ifndef DP_WIRE_INLINE
#define DP_WIRE_INLINE static inline __attribute__((always_inline))
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DP_HTONS(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define DP_HTONL(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define DP_HTONS(x) ((__u16)(x))
#define DP_HTONL(x) ((__u32)(x))
#endif

#define DP_IP_DF 0x4000
#define DP_IP_MF 0x2000
#define DP_IP_OFFSET 0x1fff
#define DP_OUTER_TTL 64
#define DP_FLOW_HASH_SEED 0x9e3779b9u
#define DP_WIRE_NOT_OURS 1001   /* vxlan_parse: leave the frame to the host stack (DP_PASS) */

struct vxlanhdr_dp {
	__be32 flags;         /* first byte: flags; rest reserved */
	__be32 vni;           /* upper 24 bits: VNI; low byte reserved */
};

struct dp_outer {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr_dp vx;
} __attribute__((packed));

DP_WIRE_INLINE __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The ten 16-bit words of an IPv4 header without options, summed (not folded). */
DP_WIRE_INLINE __u32 ipv4_sum20(const void *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#ifdef __clang__
#pragma unroll
#endif
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return sum;
}

/* RFC 1071 checksum of a 20-byte IPv4 header whose check field is zero. */
DP_WIRE_INLINE __u16 ipv4_csum(const void *ip)
{
	return csum_fold32(ipv4_sum20(ip));
}

/*
 * Whether an IPv4 header's checksum holds (ip_rcv drops the frame otherwise), over its ihl
 * bytes (20..60), all of them before end. Options cost nothing to a header without them.
 */
DP_WIRE_INLINE int ipv4_csum_ok(const void *ip, const void *end, __u32 ihl)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = ipv4_sum20(ip);

	if (ihl > 20) {
		/* Unrolled, each word at a constant offset with its own bound: a loop over a variable
		 * count loses the verifier's bound. */
#ifdef __clang__
#pragma unroll
#endif
		for (int i = 10; i < 30; i++) {
			if ((__u32)i < ihl / 2) {
				if ((const void *)(w + i + 1) > end)
					return 0;
				sum += w[i];
			}
		}
	}
	return csum_fold32(sum) == 0;
}

/*
 * Inner flow hash: four 32-bit words mixed with MurmurHash3's round and
 * finaliser. The words are, as loaded from the frame (little-endian loads of
 * network-order bytes): IPv4 source, destination, protocol and the L4 port
 * pair (zero for fragments and for protocols other than TCP/UDP); for other
 * frames the 12 MAC bytes and zero. Our own hash rather than the kernel's
 * skb hash: the same flow gets the same outer port on every host and boot,
 * and the C helper can reproduce it.
 */
DP_WIRE_INLINE __u32 dp_hash_round(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = (k << 15) | (k >> 17);
	k *= 0x1b873593u;
	h ^= k;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64u;
}

/* MurmurHash3's finaliser: every input bit moves every output bit. */
DP_WIRE_INLINE __u32 dp_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

DP_WIRE_INLINE __u32 dp_flow_hash4(__u32 a, __u32 b, __u32 c, __u32 d)
{
	__u32 h = DP_FLOW_HASH_SEED;

	h = dp_hash_round(h, a);
	h = dp_hash_round(h, b);
	h = dp_hash_round(h, c);
	h = dp_hash_round(h, d);
	return dp_fmix32(h ^ 16);
}

/*
 * Outer UDP source port: the hash scaled onto [lo, hi) without a division, lo when
 * hi <= lo. The kernel's udp_flow_src_port scales the same way, so a frame that leaves
 * by the node's vxlan device (encap.h, encap_marked) gets the port this gives it.
 */
DP_WIRE_INLINE __u16 vxlan_src_port(__u32 lo, __u32 hi, __u32 hash)
{
	if (hi <= lo)
		return lo;
	return lo + (__u16)(((__u64)hash * (hi - lo)) >> 32);
}

/*
 * Outer headers for an inner frame of inner_len bytes (its Ethernet header
 * included). DF set, TTL 64, IP id 0, UDP checksum 0, flags = I bit only.
 * A GSO super-packet over 64 KB (IPv4 BIG TCP) gets IPv4 total length 0, as
 * the kernel writes it, and UDP length 0xffff, the field's maximum (Wireshark
 * reads 0 as malformed); segmentation rewrites both per segment.
 */
DP_WIRE_INLINE void outer_build(struct dp_outer *o, const __u8 *smac, const __u8 *dmac,
				__be32 src, __be32 dst, __be16 dport, __u32 vni,
				__u16 sport, __u32 inner_len)
{
	__u32 ip_len = inner_len + sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr_dp);

	__builtin_memset(o, 0, sizeof(*o));
	__builtin_memcpy(o->eth.h_dest, dmac, 6);
	__builtin_memcpy(o->eth.h_source, smac, 6);
	o->eth.h_proto = DP_HTONS(ETH_P_IP);
	o->ip.version = 4;
	o->ip.ihl = 5;
	o->ip.tot_len = DP_HTONS(ip_len > 0xffff ? 0 : ip_len);
	o->ip.frag_off = DP_HTONS(DP_IP_DF);
	o->ip.ttl = DP_OUTER_TTL;
	o->ip.protocol = IPPROTO_UDP;
	o->ip.saddr = src;
	o->ip.daddr = dst;
	o->ip.check = ipv4_csum(&o->ip);
	o->udp.source = DP_HTONS(sport);
	o->udp.dest = dport;
	o->udp.len = DP_HTONS(ip_len > 0xffff ? 0xffff : ip_len - sizeof(struct iphdr));
	o->vx.flags = DP_HTONL((__u32)DP_VXLAN_FLAG_I << 24);
	o->vx.vni = DP_HTONL(vni << 8);
}

/*
 * Slot of a VTEP in dp_nh_cache, a per-CPU array in front of dp_nexthops:
 * MurmurHash3's finaliser of the address as stored (the octet that varies
 * within a subnet is the loaded word's high byte, which a multiplicative hash
 * alone would keep out of the low bits). n: the array's size, a power of two.
 */
DP_WIRE_INLINE __u32 dp_nh_slot(__u32 vtep, __u32 n)
{
	return dp_fmix32(vtep) & (n - 1);
}

struct vx_info {
	__u32 vni;
	__be32 saddr;         /* outer source: the sending VTEP */
	__u32 inner_off;      /* offset of the inner Ethernet header */
	__u32 inner_len;      /* inner frame length per the outer UDP length */
	struct ethhdr inner;  /* copy of the inner Ethernet header */
};

/*
 * Is this a VXLAN frame for us, and is it well formed?
 * Returns DP_WIRE_NOT_OURS (== DP_PASS), 0 (ours, *vx filled) or -DP_DROP_*.
 * pkt_len is the whole frame's length; data..end may be only its linear head.
 */
DP_WIRE_INLINE int vxlan_parse(void *data, void *end, __u32 pkt_len, __be32 local_ip,
			       __be16 port, struct vx_info *vx)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	struct vxlanhdr_dp *vxh;
	struct ethhdr *inner;
	__u32 ihl, tot_len, udp_len;

	if ((void *)(eth + 1) > end || eth->h_proto != DP_HTONS(ETH_P_IP))
		return DP_WIRE_NOT_OURS;
	ip = (void *)(eth + 1);
	/* The stack would drop these too; we only count them. */
	if ((void *)(ip + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return -DP_DROP_BAD_IP;
	if (ip->daddr != local_ip || ip->protocol != IPPROTO_UDP)
		return DP_WIRE_NOT_OURS;
	/* A non-first fragment has no UDP header to tell whose it is. */
	if (ip->frag_off & DP_HTONS(DP_IP_OFFSET))
		return DP_WIRE_NOT_OURS;
	ihl = (ip->ihl & 0xf) * 4;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (udp->dest != port)
		return DP_WIRE_NOT_OURS;
	if (ip->frag_off & DP_HTONS(DP_IP_MF))
		return -DP_DROP_FRAGMENT;
	/* The stack checks it before anything else is read; on an untrusted underlay it proves
	 * nothing, but a frame the kernel would drop is not ours to deliver either. */
	if (!ipv4_csum_ok(ip, end, ihl))
		return -DP_DROP_BAD_IP;

	tot_len = DP_HTONS(ip->tot_len);
	udp_len = DP_HTONS(udp->len);
	/* A GSO super-packet over 64 KB: IPv4 length 0, UDP length 0 (the
	 * kernel's and URO's way) or 0xffff (ours); the frame has the length. */
	if (!tot_len && pkt_len > ETH_HLEN + 0xffff) {
		if (udp_len && udp_len != 0xffff)
			return -DP_DROP_BAD_IP;
		tot_len = pkt_len - ETH_HLEN;
		udp_len = tot_len - ihl;
	}
	if (tot_len < ihl + sizeof(*udp))
		return -DP_DROP_BAD_IP;
	if (ETH_HLEN + tot_len > pkt_len)
		return -DP_DROP_TRUNCATED;
	if (udp_len > tot_len - ihl)
		return -DP_DROP_TRUNCATED;
	if (udp_len < sizeof(*udp) + sizeof(*vxh) + ETH_HLEN)
		return -DP_DROP_TRUNCATED;

	vxh = (void *)(udp + 1);
	inner = (void *)(vxh + 1);
	if ((void *)(inner + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (*(__u8 *)vxh != DP_VXLAN_FLAG_I)
		return -DP_DROP_BAD_VXLAN_FLAGS;

	vx->vni = DP_HTONL(vxh->vni) >> 8;
	vx->saddr = ip->saddr;
	vx->inner_off = (void *)inner - data;
	vx->inner_len = udp_len - sizeof(*udp) - sizeof(*vxh);
	__builtin_memcpy(&vx->inner, inner, ETH_HLEN);
	return 0;
}

#endif /* DP_WIRE_H */
