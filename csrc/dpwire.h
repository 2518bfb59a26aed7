/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dpwire.h - the C helper's API, bound to Python with cffi (csrc/ffi_build.py
 * reads the declarations between the CDEF markers). The encapsulation bytes
 * come from bpf/lib/wire.h, the file the fast path compiles, and constants
 * from bpf/dp_abi.h.
 */
#ifndef DPWIRE_H
#define DPWIRE_H

#include <stdint.h>
#include <stddef.h>

/* CDEF-BEGIN */
struct dpw_encap_args {
	uint8_t smac[6];            /* outer Ethernet source (our uplink) */
	uint8_t dmac[6];            /* outer Ethernet destination (next hop) */
	uint32_t src;               /* outer IPv4 source, network order */
	uint32_t dst;               /* outer IPv4 destination, network order */
	uint16_t dport;             /* outer UDP destination port, host order */
	uint16_t sport_min;         /* outer UDP source port range, host order */
	uint16_t sport_max;
	uint16_t udp_csum;          /* 1: compute the optional outer UDP checksum */
	uint32_t vni;
};

struct dpw_decap_result {
	uint32_t vni;
	uint32_t src;               /* outer IPv4 source, network order */
	uint32_t dst;
	uint16_t sport;             /* host order */
	uint16_t dport;
	uint32_t inner_off;         /* the inner Ethernet frame: pkt[inner_off, inner_off + inner_len) */
	uint32_t inner_len;
};

struct dpw_test_run {
	uint32_t retval;            /* the program's return value */
	uint32_t duration_ns;       /* mean per run, as the kernel measures it */
	uint32_t data_out_len;
	uint32_t ctx_out_len;
};

struct dpw_gen_stats {
	uint64_t packets;
	uint64_t bytes;
	uint64_t errors;            /* sendmmsg failures other than a full queue */
	uint64_t elapsed_ns;
};

int dpw_not_ours(void);     /* dpw_decap: not VXLAN for this VTEP and port */
uint16_t dpw_ipv4_csum(const uint8_t *hdr20);
uint32_t dpw_flow_hash(const uint8_t *frame, size_t len);
uint16_t dpw_src_port(uint16_t lo, uint16_t hi, uint32_t hash);
int dpw_encap(const struct dpw_encap_args *a, const uint8_t *inner, size_t len, uint8_t *out, size_t cap);
int dpw_decap(const uint8_t *pkt, size_t len, uint32_t local_ip, uint16_t port, struct dpw_decap_result *r);
int dpw_prog_test_run(int prog_fd, const uint8_t *data, uint32_t len, uint8_t *out, uint32_t out_cap,
		      const uint8_t *ctx, uint32_t ctx_len, uint8_t *ctx_out, uint32_t ctx_cap,
		      uint32_t repeat, struct dpw_test_run *res);
int dpw_gen_send(int ifindex, const uint8_t *frame, uint32_t len, uint32_t flows,
		 uint64_t max_packets, uint64_t duration_ns, uint64_t rate_pps, struct dpw_gen_stats *st);
int dpw_gen_count(int ifindex, uint64_t duration_ns, struct dpw_gen_stats *st);
/* CDEF-END */

#endif /* DPWIRE_H */
