/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dpwire.c - reference VXLAN encapsulation and decapsulation. Every byte
 * comes from bpf/lib/wire.h, the header the fast path compiles.
 */
#include <string.h>
#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#include "dp_abi.h"
#include "lib/wire.h"
#include "dpwire.h"

int dpw_not_ours(void)
{
	return DP_WIRE_NOT_OURS;
}

uint16_t dpw_ipv4_csum(const uint8_t *hdr20)
{
	struct iphdr ip;

	memcpy(&ip, hdr20, sizeof(ip));
	ip.check = 0;
	return ipv4_csum(&ip);
}

static uint32_t load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* The words skb_flow_hash() in bpf/lib/encap.h loads, read from a flat frame. */
uint32_t dpw_flow_hash(const uint8_t *f, size_t len)
{
	uint32_t ihl;

	if (len >= ETH_HLEN + 20 && f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4 &&
	    (f[14] & 0xf) >= 5) {
		const uint8_t *ip = f + ETH_HLEN;
		uint16_t frag = (uint16_t)(ip[6] << 8 | ip[7]);
		uint32_t ports = 0;

		ihl = (ip[0] & 0xf) * 4u;
		if (!(frag & (DP_IP_MF | DP_IP_OFFSET)) && (ip[9] == IPPROTO_TCP || ip[9] == IPPROTO_UDP) &&
		    len >= ETH_HLEN + ihl + 4)
			ports = load32(ip + ihl);
		return dp_flow_hash4(load32(ip + 12), load32(ip + 16), ip[9], ports);
	}
	if (len >= 12)
		return dp_flow_hash4(load32(f), load32(f + 4), load32(f + 8), 0);
	return dp_flow_hash4(0, 0, 0, 0);
}

uint16_t dpw_src_port(uint16_t lo, uint16_t hi, uint32_t hash)
{
	return vxlan_src_port(lo, hi, hash);
}

/* Outer UDP checksum over the pseudo-header, UDP header and payload (RFC 768). */
static uint16_t udp_csum(uint32_t saddr, uint32_t daddr, const uint8_t *udp, size_t len)
{
	uint64_t sum = 0;
	size_t i;

	sum += (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16);
	sum += DP_HTONS(IPPROTO_UDP) + DP_HTONS((uint16_t)len);
	for (i = 0; i + 1 < len; i += 2) {
		uint16_t w;

		memcpy(&w, udp + i, 2);
		sum += w;
	}
	if (len & 1)
		sum += DP_HTONS((uint16_t)(udp[len - 1] << 8));
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	uint16_t c = (uint16_t)~sum;
	return c ? c : 0xffff;  /* zero means "no checksum" */
}

int dpw_encap(const struct dpw_encap_args *a, const uint8_t *inner, size_t len, uint8_t *out, size_t cap)
{
	struct dp_outer o;
	uint16_t sport;

	if (len < ETH_HLEN || len > 0xffff - DP_ENCAP_LEN || cap < len + DP_ENCAP_LEN || a->vni > DP_VNI_MAX)
		return -1;
	sport = vxlan_src_port(a->sport_min, a->sport_max, dpw_flow_hash(inner, len));
	outer_build(&o, a->smac, a->dmac, a->src, a->dst, DP_HTONS(a->dport), a->vni, sport, (__u32)len);
	memcpy(out, &o, sizeof(o));
	memcpy(out + sizeof(o), inner, len);
	if (a->udp_csum) {
		uint16_t c = udp_csum(a->src, a->dst, out + ETH_HLEN + sizeof(struct iphdr), len + 16);

		memcpy(out + ETH_HLEN + sizeof(struct iphdr) + 6, &c, 2);
	}
	return (int)(len + DP_ENCAP_LEN);
}

/*
 * The parser reads headers through struct pointers, as the kernel does on
 * frames it keeps at NET_IP_ALIGN. A caller's buffer has any alignment, so
 * the headers (all the parser touches: at most 14 + 60 + 8 + 8 + 14 bytes)
 * are copied to a buffer where the IPv4 header is 4-byte aligned; lengths
 * are still judged against the whole frame's length.
 */
#define DPW_HEAD_MAX 128

int dpw_decap(const uint8_t *pkt, size_t len, uint32_t local_ip, uint16_t port, struct dpw_decap_result *r)
{
	uint32_t aligned[(DPW_HEAD_MAX + 4) / 4];
	uint8_t *head = (uint8_t *)aligned + 2;
	size_t have = len < DPW_HEAD_MAX ? len : DPW_HEAD_MAX;
	const struct iphdr *ip = (const void *)(head + ETH_HLEN);
	const struct udphdr *udp;
	struct vx_info vx;
	int ret;

	if (len > 0xffffffffu)
		return -DP_DROP_TRUNCATED;
	memcpy(head, pkt, have);
	ret = vxlan_parse(head, head + have, (__u32)len, local_ip, DP_HTONS(port), &vx);
	if (ret)
		return ret;
	udp = (const void *)((const uint8_t *)ip + ip->ihl * 4);
	r->vni = vx.vni;
	r->src = vx.saddr;
	r->dst = ip->daddr;
	r->sport = DP_HTONS(udp->source);
	r->dport = DP_HTONS(udp->dest);
	r->inner_off = vx.inner_off;
	r->inner_len = vx.inner_len;
	return 0;
}
