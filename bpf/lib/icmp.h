/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * icmp.h - path MTU discovery across the overlay. A non-GSO IPv4 frame with
 * DF that is longer than the network's MTU is turned, in place, into the ICMP
 * "fragmentation needed" a router would send (RFC 792 type 3 code 4, with the
 * next-hop MTU of RFC 1191) and sent back into the sandbox, so TCP and PMTU
 * discovery recover instead of losing the frame silently. Without DF the
 * frame is dropped and counted (too_big), as a router without fragmentation would.
 */
#ifndef DP_ICMP_H
#define DP_ICMP_H

#include "lib/common.h"
#include "lib/stats.h"

#define DP_ICMP_DEST_UNREACH 3
#define DP_ICMP_FRAG_NEEDED 4
#define DP_ICMP_QUOTE 28                          /* the offending IPv4 header (no options) + 8 bytes */
#define DP_ICMP_FRAME (ETH_HLEN + 20 + 8 + DP_ICMP_QUOTE)

static __always_inline int icmp_frag_needed(struct __sk_buff *skb, __u32 slot, __u32 mtu)
{
	__u32 ifindex = skb->ingress_ifindex;
	struct iphdr oip;
	__u8 macs[12], quote[8];
	struct iphdr *ip;
	__u8 *icmp;
	void *data, *end;
	__u32 sum = 0;

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &oip, sizeof(oip)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(oip), quote, sizeof(quote)))
		return -DP_DROP_TOO_BIG;
	/* Only for DF (the sender asked not to be fragmented), a plain header to quote, and
	 * never about an ICMP error (RFC 1122 3.2.2): of ICMP, echo request and reply only. */
	if (!(oip.frag_off & bpf_htons(DP_IP_DF)) || oip.ihl != 5 ||
	    (oip.protocol == IPPROTO_ICMP && quote[0] != 8 && quote[0] != 0))
		return -DP_DROP_TOO_BIG;
	if (bpf_skb_change_tail(skb, DP_ICMP_FRAME, 0))
		return -DP_DROP_HELPER;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + DP_ICMP_FRAME > end)
		return -DP_DROP_HELPER;

	/* Ethernet: back to the sender, from the address it sent to. */
	__builtin_memcpy(data, macs + 6, 6);
	__builtin_memcpy(data + 6, macs, 6);
	ip = data + ETH_HLEN;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(20 + 8 + DP_ICMP_QUOTE);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->saddr = oip.daddr;
	ip->daddr = oip.saddr;
	ip->check = 0;
	ip->check = ipv4_csum(ip);

	icmp = (void *)(ip + 1);
	icmp[0] = DP_ICMP_DEST_UNREACH;
	icmp[1] = DP_ICMP_FRAG_NEEDED;
	*(__u16 *)(icmp + 2) = 0;                          /* checksum, below */
	*(__u16 *)(icmp + 4) = 0;                          /* unused */
	*(__be16 *)(icmp + 6) = bpf_htons(mtu);           /* next-hop MTU */
	__builtin_memcpy(icmp + 8, &oip, sizeof(oip));
	__builtin_memcpy(icmp + 28, quote, sizeof(quote));
#pragma unroll
	for (int i = 0; i < (8 + DP_ICMP_QUOTE) / 2; i++)
		sum += ((__u16 *)icmp)[i];
	*(__u16 *)(icmp + 2) = csum_fold32(sum);

	struct dp_stats *s = stats_get(slot);
	if (s) {
		s->frag_needed++;
		s->drops[DP_DROP_TOO_BIG]++;       /* the frame itself did not go */
	}
	return bpf_redirect(ifindex, 0);
}

#endif /* DP_ICMP_H */
