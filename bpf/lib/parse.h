/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * parse.h - classification of frames arriving on the uplink, shared by the
 * tc program (from_overlay) and the XDP guard so both judge a frame alike.
 */
#ifndef DP_PARSE_H
#define DP_PARSE_H

struct vx_info {
	__u32 vni;
	__be32 saddr;         /* outer source: the sending VTEP */
	__u32 inner_off;      /* offset of the inner Ethernet header */
	__u32 inner_len;      /* inner frame length per the outer UDP length */
	struct ethhdr inner;  /* copy of the inner Ethernet header */
};

/*
 * Is this a VXLAN frame for us, and is it well formed?
 * Returns DP_PASS (not ours), 0 (ours, *vx filled) or -DP_DROP_*.
 * pkt_len is the whole frame's length; data..end may be only its linear head.
 */
static __always_inline int vxlan_parse(void *data, void *end, __u32 pkt_len,
				       const struct dp_config *cfg, struct vx_info *vx)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	struct vxlanhdr_dp *vxh;
	struct ethhdr *inner;
	__u32 ihl, tot_len, udp_len;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return DP_PASS;
	ip = (void *)(eth + 1);
	/* The stack would drop these too; we only count them. */
	if ((void *)(ip + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return -DP_DROP_BAD_IP;
	if (ip->daddr != cfg->local_ip || ip->protocol != IPPROTO_UDP)
		return DP_PASS;
	/* A non-first fragment has no UDP header to tell whose it is. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return DP_PASS;
	ihl = (ip->ihl & 0xf) * 4;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > end)
		return -DP_DROP_TRUNCATED;
	if (udp->dest != cfg->port)
		return DP_PASS;
	if (ip->frag_off & bpf_htons(IP_MF))
		return -DP_DROP_FRAGMENT;

	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl + sizeof(*udp))
		return -DP_DROP_BAD_IP;
	if (ETH_HLEN + tot_len > pkt_len)
		return -DP_DROP_TRUNCATED;
	udp_len = bpf_ntohs(udp->len);
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

	vx->vni = bpf_ntohl(vxh->vni) >> 8;
	vx->saddr = ip->saddr;
	vx->inner_off = (void *)inner - data;
	vx->inner_len = udp_len - sizeof(*udp) - sizeof(*vxh);
	__builtin_memcpy(&vx->inner, inner, ETH_HLEN);
	return 0;
}

/* Policy on a well-formed VXLAN frame: known VNI, known peer, sane inner source. */
static __always_inline int vxlan_admit(const struct dp_config *cfg, const struct vx_info *vx)
{
	__u32 vni = vx->vni;

	if (!dp_networks.lookup(&vni))
		return -DP_DROP_UNKNOWN_VNI;
	if (cfg->flags & DP_CFG_PEER_CHECK) {
		struct dp_ip_key k = { .vni = vni, .ip = vx->saddr };

		if (!dp_vteps.lookup(&k))
			return -DP_DROP_UNKNOWN_PEER;
	}
	if (mac_is_multicast(vx->inner.h_source) || mac_is_zero(vx->inner.h_source))
		return -DP_DROP_BAD_INNER_SMAC;
	return 0;
}

#endif /* DP_PARSE_H */
