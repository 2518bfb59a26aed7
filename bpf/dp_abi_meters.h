/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * dp_abi_meters.h - the per-network meters' settings and state (part of
 * dp_abi.h, in its grammar). Maps of their own, so that dp_config and dp_stats
 * keep the layouts a node brought up by an older version has pinned: a new map
 * is made at the next `up`, where a changed layout made `up` refuse until
 * `dataplane down`.
 */
#ifndef DP_ABI_METERS_H
#define DP_ABI_METERS_H

/* Single entry of map dp_meters (key 0), written by `up` (fpconfig.py write_config). 0: that meter off. */
struct dp_meters {
	__u64 overlay_storm_interval_ns;     /* floods from the underlay: 1e9 / copies per second per network */
	__u64 overlay_storm_burst_ns;        /* ... and the burst it allows (flood.h overlay_storm_check) */
	__u64 learn_interval_ns;             /* learning: 1e9 / MACs new to the network per second */
	__u64 learn_burst_ns;                /* ... and the burst it allows (fdb.h learn_allow) */
	__u64 overlay_host_interval_ns;      /* floods from the underlay: 1e9 / copies per second, all networks */
	__u64 overlay_host_burst_ns;         /* ... and the burst it allows (on dp_net_meters[0], no VNI's) */
	__u64 overlay_peer_interval_ns;      /* floods from the underlay: 1e9 / copies per second, one peer in a network */
	__u64 overlay_peer_burst_ns;         /* ... and the burst it allows (on dp_peer_meters) */
};

/* dp_net_meters[a network's dp_stats slot]: its meters' state, fast path only; zeroed with the slot.
 * Slot 0 (no VNI): the host's overlay storm meter, for all networks together. */
struct dp_net_meter {
	__u64 overlay_storm_tat;             /* GCRA theoretical arrival times, dp_now_ns() */
	__u64 learn_tat;
	__u64 learn_limited;                 /* new sources not learned, over the rate: again each second (atomic) */
};

/* dp_peer_meters[struct dp_ip_key {VNI, a peer's outer source address}], an LRU hash with as many entries
 * as DP_MAP_VTEPS: that peer's overlay storm meter in that network, fast path only (a pair pushed out
 * starts afresh, its count with it). */
struct dp_peer_meter {
	__u64 tat;                           /* GCRA theoretical arrival time, dp_now_ns() */
	__u64 refused;                       /* frames its meter refused (overlay_storm_peer drops; atomic) */
};

#endif /* DP_ABI_METERS_H */
