/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * maps.h - every map of the fast path, pinned under DP_PIN_DIR so that a
 * reloaded program and the CLI find the same state. Layouts: dp_abi.h.
 * Filled by: the control plane, except dp_learned, dp_nexthops (cache), dp_nh_cache, dp_*_copies, dp_storm,
 * dp_net_meters, dp_peer_meters and dp_stats;
 * dp_agent by the agent alone.
 */
#ifndef DP_MAPS_H
#define DP_MAPS_H

#include "lib/common.h"

#ifndef DP_PIN_DIR
#error "DP_PIN_DIR must be defined by the loader"
#endif
#define DP_PIN(name) DP_PIN_DIR "/" #name

BPF_TABLE_PINNED("array", __u32, struct dp_config, dp_config, 1, DP_PIN(dp_config));
/* the agent's heartbeat: misses are punted to it until punt_until_ns */
BPF_TABLE_PINNED("array", __u32, struct dp_agent, dp_agent, 1, DP_PIN(dp_agent));
BPF_TABLE_PINNED("hash", __u32, struct dp_network, dp_networks, DP_MAP_NETWORKS, DP_PIN(dp_networks));
BPF_TABLE_PINNED("hash", __u32, struct dp_endpoint, dp_endpoints, DP_MAP_ENDPOINTS, DP_PIN(dp_endpoints));
/* {VNI, MAC} -> host-side ifindex of a local endpoint */
BPF_TABLE_PINNED("hash", struct dp_mac_key, __u32, dp_local_macs, DP_MAP_ENDPOINTS, DP_PIN(dp_local_macs));
/* {VNI, index < n_local} -> host-side ifindex, for broadcast delivery */
BPF_TABLE_PINNED("hash", struct dp_slot_key, __u32, dp_local_ports, DP_MAP_ENDPOINTS, DP_PIN(dp_local_ports));
/* {VNI, MAC} -> remote VTEP, static */
BPF_TABLE_PINNED("hash", struct dp_mac_key, struct dp_fdb_entry, dp_fdb, DP_MAP_FDB, DP_PIN(dp_fdb));
/* {VNI, MAC} -> remote VTEP, learned from decapsulated frames */
BPF_TABLE_PINNED("lru_hash", struct dp_mac_key, struct dp_fdb_entry, dp_learned, DP_MAP_LEARNED, DP_PIN(dp_learned));
/* {VNI, IPv4} -> MAC, answers ARP requests */
BPF_TABLE_PINNED("hash", struct dp_ip_key, struct dp_mac, dp_neigh, DP_MAP_NEIGH, DP_PIN(dp_neigh));
/* {VNI, index < n_flood} -> remote VTEP, head-end replication list */
BPF_TABLE_PINNED("hash", struct dp_slot_key, __be32, dp_flood, DP_MAP_VTEPS, DP_PIN(dp_flood));
/* {VNI, VTEP} -> flood slot; membership test for the peer check */
BPF_TABLE_PINNED("hash", struct dp_ip_key, __u32, dp_vteps, DP_MAP_VTEPS, DP_PIN(dp_vteps));
/* VTEP -> outer Ethernet header and egress interface */
BPF_TABLE_PINNED("hash", __be32, struct dp_nexthop, dp_nexthops, DP_MAP_NEXTHOPS, DP_PIN(dp_nexthops));
/* dp_nh_slot(VTEP) -> a copy of its dp_nexthops entry, per CPU, fast path only (encap.h) */
_Static_assert((DP_MAP_NH_CACHE & (DP_MAP_NH_CACHE - 1)) == 0, "DP_MAP_NH_CACHE must be a power of two");
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_nexthop, dp_nh_cache, DP_MAP_NH_CACHE, DP_PIN(dp_nh_cache));
/* host-side ifindex -> storm control's theoretical arrival time (dp_now_ns), fast path only */
BPF_TABLE_PINNED("lru_hash", __u32, __u64, dp_storm, DP_MAP_ENDPOINTS, DP_PIN(dp_storm));
/* the per-network meters' settings (key 0) and, by a network's dp_stats slot, their state (dp_abi_meters.h) */
BPF_TABLE_PINNED("array", __u32, struct dp_meters, dp_meters, 1, DP_PIN(dp_meters));
BPF_TABLE_PINNED("array", __u32, struct dp_net_meter, dp_net_meters, DP_MAP_NETWORKS, DP_PIN(dp_net_meters));
/* {VNI, a peer's outer source} -> its overlay storm meter (time, refusals), fast path only */
BPF_TABLE_PINNED("lru_hash", struct dp_ip_key, struct dp_peer_meter, dp_peer_meters, DP_MAP_VTEPS, DP_PIN(dp_peer_meters));
/* the generation of dp_ep_copies, dp_mac_copies, dp_net_copies, dp_learn_copies, dp_dst_copies and
 * dp_vtep_copies (dp_abi.h) */
BPF_TABLE_PINNED("array", __u32, __u64, dp_local_gen, 1, DP_PIN(dp_local_gen));
_Static_assert((DP_MAP_LOCAL_COPIES & (DP_MAP_LOCAL_COPIES - 1)) == 0, "DP_MAP_LOCAL_COPIES must be a power of two");
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_ep_copy, dp_ep_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_ep_copies));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_mac_copy, dp_mac_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_mac_copies));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_net_copy, dp_net_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_net_copies));
/* the generation of dp_fdb's per-CPU copies */
BPF_TABLE_PINNED("array", __u32, __u64, dp_fdb_gen, 1, DP_PIN(dp_fdb_gen));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_fdb_copy, dp_fdb_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_fdb_copies));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_learn_copy, dp_learn_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_learn_copies));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_dst_copy, dp_dst_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_dst_copies));
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_vtep_copy, dp_vtep_copies, DP_MAP_LOCAL_COPIES, DP_PIN(dp_vtep_copies));
/* tail-call targets, enum dp_tail */
BPF_TABLE_PINNED("prog", __u32, __u32, dp_tail, DP_TAIL_MAX, DP_PIN(dp_tail));
/* network slot -> counters, per CPU (slot 0: no VNI); an array, so no packet can add entries */
BPF_TABLE_PINNED("percpu_array", __u32, struct dp_stats, dp_stats, DP_MAP_NETWORKS, DP_PIN(dp_stats));

/*
 * Misses punted to the agent (struct dp_punt records). bcc 0.26 has no pinned
 * ring buffer macro: this is its BPF_RINGBUF_OUTPUT with the pin path in the
 * section name, as BPF_TABLE_PINNED does for other map types.
 */
#define DP_RINGBUF_PINNED(_name, _bytes, _pinned)                              \
	struct _name##_table_t {                                               \
		int key;                                                       \
		u32 leaf;                                                      \
		int (*ringbuf_output)(void *, u64, u64);                       \
		void *(*ringbuf_reserve)(u64);                                 \
		void (*ringbuf_discard)(void *, u64);                          \
		void (*ringbuf_submit)(void *, u64);                           \
		u32 max_entries;                                               \
	};                                                                     \
	__attribute__((section("maps/ringbuf:" _pinned)))                      \
	struct _name##_table_t _name = { .max_entries = (_bytes) }
DP_RINGBUF_PINNED(dp_punts, DP_PUNT_RING_BYTES, DP_PIN(dp_punts));
/* What `dataplane monitor` reads (struct dp_event), written only while one runs (dp_config.flags). */
DP_RINGBUF_PINNED(dp_events, DP_EVENT_RING_BYTES, DP_PIN(dp_events));
/* The monitor's event meter: theoretical arrival time (GCRA, as storm control), fast path only. */
BPF_TABLE_PINNED("array", __u32, __u64, dp_mon_meter, 1, DP_PIN(dp_mon_meter));

static __always_inline struct dp_config *config_get(void)
{
	__u32 zero = 0;
	struct dp_config *cfg = dp_config.lookup(&zero);

	if (cfg && cfg->local_ip)
		return cfg;
	return NULL;
}

#endif /* DP_MAPS_H */
