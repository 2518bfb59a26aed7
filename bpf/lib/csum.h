/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * csum.h - Internet checksum (RFC 1071) of an IPv4 header built on the stack.
 */
#ifndef DP_CSUM_H
#define DP_CSUM_H

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of a 20-byte IPv4 header whose check field is zero. */
static __always_inline __u16 ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return csum_fold32(sum);
}

#endif /* DP_CSUM_H */
