/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * dp_abi.h - the ABI between the fast path and user space.
 *
 * Owns: every constant, enum and map key/value layout that both the BPF
 * programs and Python (dataplane/abi.py) use. Python parses this file; it
 * never keeps a second copy. So the grammar is deliberately small, and no functions:
 *   - "#define NAME <integer>"            (may sit inside #ifndef NAME ... #endif)
 *   - "enum name { A = 1, B, ... };"      (one member per line)
 *   - "struct name { TYPE field; TYPE field[N]; };"  (one member per line)
 * Types: __u8 __u16 __u32 __u64 __be16 __be32 and struct names defined above (__be*: network order).
 * '#include "dp_abi_X.h"' (a file of the same grammar beside this one) is read in place.
 */
#ifndef DP_ABI_H
#define DP_ABI_H

#define DP_VNI_MAX 16777215              /* 24-bit VXLAN network identifier */
#define DP_VXLAN_PORT 4789               /* IANA port, default outer UDP destination */
#define DP_ENCAP_LEN 50                  /* outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 */
#define DP_VXLAN_FLAG_I 8                /* the only VXLAN flags byte we accept (RFC 7348 sec. 5) */
#define DP_SRC_PORT_MIN 49152            /* default outer UDP source port range, host order */
#define DP_SRC_PORT_MAX 65535
#define DP_FLOOD_CHUNK 64                /* copies one run of a flood program makes; it tail-calls itself for more */
#define DP_MAX_FLOOD 1024                /* remote VTEPs per VNI in the flood list (16 chunks) */
#define DP_MAX_LOCAL 1024                /* local endpoints per VNI that receive broadcast (16 chunks) */
#define DP_LOCAL_ROUTER 0x80000000       /* dp_local_macs value flag: a gateway port (frames leave by it, see gateway.py) */
#define DP_LOCAL_ALIAS 0x40000000        /* with DP_LOCAL_ROUTER: its host's own address's MAC, not the router's own */
#define DP_NH_TTL_NS 1000000000          /* lifetime of a next-hop cache entry, ns */
#define DP_LEARN_REFRESH_NS 1000000000   /* rewrite an unchanged learned entry at most this often, ns */
#define DP_FDB_AGE_DEFAULT_S 300         /* learned FDB entry lifetime unless configured, s */
#define DP_GSO_SEGS_MAX 2048             /* most segments of a GSO packet (encap.h; a sandbox's gso_max_segs) */
#define DP_PUNT_FRAME_MAX 1536           /* longest frame punted to the agent (longer ones flood) */
#define DP_PUNT_RING_BYTES 262144        /* dp_punts ring buffer: power of two, >= a page */
#define DP_AGENT_BEAT_MS 500             /* the agent renews dp_agent.punt_until_ns this often */
#define DP_AGENT_LEASE_MS 2000           /* ... each time to now + this: misses punted until then */

#define DP_MON_HEAD 128                  /* frame bytes a monitor event carries */
#define DP_EVENT_RING_BYTES 262144       /* dp_events ring buffer */
#define DP_DROP_SLOTS 32                 /* power of two >= DP_DROP_MAX, so a mask bounds the index */

/* Map sizes; the loader may override each with -D. */
#ifndef DP_MAP_NETWORKS
#define DP_MAP_NETWORKS 4096
#endif
#ifndef DP_MAP_ENDPOINTS
#define DP_MAP_ENDPOINTS 16384
#endif
#ifndef DP_MAP_FDB
#define DP_MAP_FDB 65536
#endif
#ifndef DP_MAP_LEARNED
#define DP_MAP_LEARNED 65536
#endif
#ifndef DP_MAP_NEIGH
#define DP_MAP_NEIGH 65536
#endif
#ifndef DP_MAP_VTEPS
#define DP_MAP_VTEPS 65536
#endif
#ifndef DP_MAP_NEXTHOPS
#define DP_MAP_NEXTHOPS 4096
#endif
#ifndef DP_MAP_NH_CACHE
#define DP_MAP_NH_CACHE 1024             /* per CPU; a power of two */
#endif
#ifndef DP_MAP_LOCAL_COPIES
#define DP_MAP_LOCAL_COPIES 4096         /* per CPU, each dp_*_copies map; a power of two */
#endif

/* Slots of the dp_tail program array; the flood loops live in their own programs. */
/*
 * skb->cb across the calls: [0] vni, [1] sending ifindex (endpoint) or inner length (overlay),
 * [2] is_ip, [3] first slot index of this run, [4] copies sent so far. Local chunks, then remote
 * ones: at most 32 tail calls in all, within the kernel's 33.
 */
enum dp_tail {
	DP_TAIL_FLOOD_ENDPOINT = 0,          /* a frame from an endpoint: local copies, then encapsulate */
	DP_TAIL_FLOOD_OVERLAY = 1,           /* a decapsulated frame: copies to local endpoints */
	DP_TAIL_FLOOD_REMOTE = 2,            /* the encapsulated frame: a copy per VTEP of the flood list */
	DP_TAIL_MAX = 3,
};

/* dp_config.flags */
enum dp_cfg_flag {
	DP_CFG_PEER_CHECK = 1,               /* decap only from VTEPs in the VNI's peer set */
	DP_CFG_MON_DROP = 2,                 /* a monitor runs: drops become dp_events records */
	DP_CFG_MON_PUNT = 4,                 /* ... punts too */
	DP_CFG_MON_TRACE = 8,                /* ... and forwarded frames, 1 in mon_sample */
};

/* struct dp_event.type */
enum dp_event_type {
	DP_EVENT_DROP = 1,                   /* reason: enum dp_drop */
	DP_EVENT_PUNT = 2,                   /* reason: enum dp_punt_reason */
	DP_EVENT_TRACE = 3,                  /* reason: the TC action (redirect, stolen, ok) */
};

/* Why a frame was punted to the agent (struct dp_punt.reason). */
enum dp_punt_reason {
	DP_PUNT_UNKNOWN_DST = 1,             /* unicast to a MAC in no FDB of the VNI */
	DP_PUNT_ARP_MISS = 2,                /* ARP request for an address not in dp_neigh */
};

/* dp_nexthop.flags */
enum dp_nh_flag {
	DP_NH_STATIC = 1,                    /* set by the control plane; never refreshed by the fast path */
};

/* dp_endpoint.flags */
enum dp_ep_flag {
	DP_EP_ROUTER = 1,                    /* the VNI's gateway port (node/gateway.py): routed frames, any source IP */
};

/* dp_fdb_entry.flags */
enum dp_fdb_flag {
	DP_FDB_STATIC = 1,                   /* from the registry / CLI, never aged */
};

/*
 * Why a frame was dropped. Indexes dp_stats.drops; names are shown by
 * "dataplane stats" in lower case without the prefix.
 */
enum dp_drop {
	DP_DROP_UNSPEC = 0,
	DP_DROP_TRUNCATED,                   /* shorter than the headers it claims */
	DP_DROP_BAD_IP,                      /* IPv4 version != 4, ihl < 5, bad total length */
	DP_DROP_FRAGMENT,                    /* fragmented VXLAN (we never reassemble) */
	DP_DROP_BAD_VXLAN_FLAGS,             /* flags byte other than exactly the I bit */
	DP_DROP_UNKNOWN_VNI,                 /* VNI this host does not serve */
	DP_DROP_UNKNOWN_PEER,                /* outer source not a VTEP of that VNI (peer check on), or of any */
	DP_DROP_BAD_INNER_SMAC,              /* inner source MAC multicast or zero */
	DP_DROP_MAC_CONFLICT,                /* remote frame claims the MAC of a local endpoint */
	DP_DROP_UNKNOWN_DST,                 /* decapsulated unicast to no local endpoint */
	DP_DROP_NO_ENDPOINT,                 /* frame on an interface that is no endpoint */
	DP_DROP_SPOOF_MAC,                   /* endpoint sent with a source MAC not its own */
	DP_DROP_SPOOF_IP,                    /* endpoint sent with a source IPv4 not its own */
	DP_DROP_UNSUPPORTED_L3,              /* neither IPv4 nor ARP (from an endpoint, or inside VXLAN); 802.1Q-tagged */
	DP_DROP_BAD_ARP,                     /* ARP that is not Ethernet/IPv4 or is inconsistent */
	DP_DROP_TOO_BIG,                     /* frame (non-GSO), or GSO packet's segments, over the network MTU */
	DP_DROP_NO_NEXTHOP,                  /* no route or neighbour toward the VTEP */
	DP_DROP_NO_CONFIG,                   /* programs attached before the agent wrote the config */
	DP_DROP_HELPER,                      /* a kernel helper (adjust_room, change_head) failed */
	DP_DROP_NO_DESTINATION,              /* broadcast/unknown with nowhere to go */
	DP_DROP_VTEP_MISMATCH,               /* inner source MAC the registry places behind another VTEP */
	DP_DROP_ARP_SPOOF,                   /* ARP whose sender MAC/IP contradicts dp_neigh or its own frame */
	DP_DROP_STORM,                       /* broadcast/unknown over the endpoint's storm-control rate */
	DP_DROP_REDIRECT,                    /* a clone or redirect toward an interface failed */
	DP_DROP_TUNNEL_GSO,                  /* a GSO packet that already carries a tunnel (see encap.h) */
	DP_DROP_TUNNEL_VIA_GATEWAY,          /* VXLAN to the underlay's port sent out through a gateway (router.h) */
	DP_DROP_OVERLAY_STORM,               /* broadcast/multicast from the underlay over the network's or host's budget */
	DP_DROP_OVERLAY_STORM_PEER,          /* ... over its peer's share of the network's (dp_peer_meters) */
	DP_DROP_GSO_SEGS,                    /* GSO packet to be cut into more than DP_GSO_SEGS_MAX segments */
	DP_DROP_MAX,
};

/* Single entry of map dp_config (key 0). */
struct dp_config {
	__be32 local_ip;                     /* our VTEP address */
	__be16 port;                         /* VXLAN UDP destination port */
	__u16 src_port_min;                  /* outer source port range, host order */
	__u16 src_port_max;
	__u16 flags;                         /* enum dp_cfg_flag */
	__u32 uplink_ifindex;                /* underlay interface, host netns */
	__u64 fdb_age_ns;                    /* learned entries older than this are ignored */
	__u64 storm_interval_ns;             /* storm control: 1e9 / frames per second per endpoint; 0: off */
	__u64 storm_burst_ns;                /* ... and the burst it allows, as interval * frames */
	__u64 mon_interval_ns;               /* a monitor's event rate: 1e9 / events per second */
	__u32 mon_sample;                    /* trace 1 forwarded frame in this many (0, 1: all) */
	__u32 tunnel_ifindex;                /* rxgro.py's vxlan device while it is ours and up (encap.h); 0: none */
	__u64 clock_ns_per_jiffy;            /* the tick (kernel/clock.py): dp_now_ns() = jiffies * this */
	__u64 clock_offset_ns;               /* + this (mod 2^64); 0 and 0: bpf_ktime_get_coarse_ns() */
};

/*
 * Single entry of map dp_agent (key 0), written only by the node's agent. Misses are punted to it
 * while dp_now_ns() < punt_until_ns: its heartbeat moves the time on every DP_AGENT_BEAT_MS, so an
 * agent that dies, even by SIGKILL, stops receiving misses within DP_AGENT_LEASE_MS and they are
 * flooded as without an agent.
 */
struct dp_agent {
	__u64 punt_until_ns;                 /* CLOCK_MONOTONIC ns; 0: no agent */
};

/* dp_networks: key __u32 VNI (host order). */
struct dp_network {
	__u32 mtu;                           /* endpoint MTU: underlay MTU - DP_ENCAP_LEN */
	__u32 slot;                          /* index of the VNI's counters in dp_stats, 1.. (0: no VNI) */
	__u32 n_local;                       /* used slots in dp_local_ports for this VNI */
	__u32 n_flood;                       /* used slots in dp_flood for this VNI */
};

/* dp_endpoints: key __u32 host-side ifindex. */
struct dp_endpoint {
	__u32 vni;
	__be32 ip;
	__u8 mac[6];
	__u16 flags;                         /* enum dp_ep_flag */
	__u32 slot;                          /* the network's dp_stats slot (dp_network.slot) */
	__u32 mtu;                           /* dp_network.mtu: from_endpoint's size check without that lookup */
};

/* Key of dp_local_macs (value __u32 ifindex), dp_fdb and dp_learned. */
struct dp_mac_key {
	__u32 vni;
	__u8 mac[6];
	__u16 pad;                           /* always zero */
};

/* Value of dp_fdb (static) and dp_learned (LRU). */
struct dp_fdb_entry {
	__be32 vtep;                         /* remote VTEP address */
	__u32 flags;                         /* enum dp_fdb_flag */
	__u64 last_seen_ns;                  /* dp_now_ns() (CLOCK_MONOTONIC, coarse) at the last refresh */
};

/*
 * Per-CPU copies of the lookups a frame makes (bpf/lib/local.h), each good while its generation map
 * (dp_local_gen, dp_fdb_gen: one __u64) holds the value it was made under: the control plane writes a
 * new random value there after every change to dp_endpoints, dp_local_macs, dp_networks, dp_learned or
 * dp_vteps (dp_local_gen) and to dp_fdb (dp_fdb_gen); kernel/maps.py. 0: no copies.
 */
/* dp_ep_copies[ifindex & (size - 1)] */
struct dp_ep_copy {
	__u64 gen;
	__u32 ifindex;
	__u32 pad;
	struct dp_endpoint ep;
};

/* dp_mac_copies[hash of the key]: dp_local_macs's answer */
struct dp_mac_copy {
	__u64 gen;
	struct dp_mac_key key;
	__u32 oif;                           /* its value; 0: the MAC is no local endpoint's */
};

/* dp_fdb_copies[hash of the key]: dp_fdb's VTEP, under dp_fdb_gen (dp_fdb changes with every registry update) */
struct dp_fdb_copy {
	__u64 gen;
	struct dp_mac_key key;
	__be32 vtep;                         /* dp_fdb[key].vtep; 0: no static entry */
};

/* dp_learn_copies[hash of the key]: "this CPU found dp_learned[key] = vtep, stamped seen_ns (or was
 * refused learning it: fdb.h)"; lets fdb_learn skip the lookup until the entry is due for its refresh */
struct dp_learn_copy {
	__u64 gen;
	__u64 seen_ns;
	struct dp_mac_key key;
	__be32 vtep;
};

/* dp_dst_copies[hash of the key]: "this CPU found dp_learned[key] = vtep, and may send there until
 * until_ns" (within the entry's age, and DP_LEARN_REFRESH_NS of the lookup): fdb.h's learned_vtep */
struct dp_dst_copy {
	__u64 gen;
	__u64 until_ns;
	struct dp_mac_key key;
	__be32 vtep;
};

/* dp_net_copies[hash of the VNI] */
struct dp_net_copy {
	__u64 gen;
	__u32 vni;
	__u32 found;                         /* 0: not a VNI we serve */
	struct dp_network net;
};

/* Key of dp_neigh (value struct dp_mac) and dp_vteps (value __u32 flood slot). */
struct dp_ip_key {
	__u32 vni;
	__be32 ip;
};

struct dp_mac {
	__u8 mac[6];
	__u16 pad;
};

/* dp_vtep_copies[hash of the key]: dp_vteps's answer (is this VTEP a peer of the VNI) */
struct dp_vtep_copy {
	__u64 gen;
	struct dp_ip_key key;
	__u32 found;                         /* 0: not a peer */
	__u32 pad;
};

/* Key of dp_flood (value __be32 VTEP) and dp_local_ports (value __u32 ifindex). */
struct dp_slot_key {
	__u32 vni;
	__u32 index;
};

/* dp_nexthops: key __be32 VTEP address. Outer Ethernet header toward it.
 * Also the value of dp_nh_cache (key dp_nh_slot(VTEP)), which names its VTEP. */
struct dp_nexthop {
	__u8 smac[6];
	__u8 dmac[6];
	__u32 ifindex;                       /* egress interface */
	__u32 flags;                         /* enum dp_nh_flag */
	__be32 vtep;                         /* dp_nh_cache: whose copy the slot holds; dp_nexthops: 0 */
	__u64 updated_ns;                    /* dp_now_ns() timebase: last resolved (or primed by the agent) */
};

/*
 * dp_stats (per-CPU array): index = a network's slot, given by the control plane and carried in
 * dp_network and dp_endpoint so the fast path reaches its counters without a hash lookup. Slot 0:
 * what belongs to no VNI.
 */
struct dp_stats {
	__u64 rx_packets;                    /* decapsulated and delivered */
	__u64 rx_bytes;                      /* inner frame bytes */
	__u64 tx_packets;                    /* encapsulated toward a VTEP (each flood copy counts) */
	__u64 tx_bytes;
	__u64 local_packets;                 /* delivered endpoint to endpoint on this host */
	__u64 local_bytes;
	__u64 arp_replies;                   /* ARP requests answered from dp_neigh */
	__u64 flooded;                       /* frames replicated to the flood list */
	__u64 punted;                        /* misses handed to the agent (dp_punts) */
	__u64 punt_fallback;                 /* misses flooded because dp_punts was full */
	__u64 frag_needed;                   /* ICMP "fragmentation needed" sent back for a DF frame over the MTU */
	__u64 monitor_lost;                  /* monitor events not written: over the rate, or the ring full */
	__u64 drops[DP_DROP_SLOTS];          /* indexed by enum dp_drop; slots >= DP_DROP_MAX stay zero */
};

/* One record of the dp_events ring buffer: what `dataplane monitor` shows. */
struct dp_event {
	__u32 type;                          /* enum dp_event_type */
	__u32 reason;
	__u32 slot;                          /* the network's dp_stats slot (0: no VNI) */
	__u32 ifindex;                       /* where the frame came in */
	__u32 len;                           /* the frame's length */
	__u32 cap;                           /* bytes of head[] in use */
	__u64 ts_ns;                         /* dp_now_ns() */
	__u8 head[DP_MON_HEAD];
};

/* One record of the dp_punts ring buffer: a frame the fast path could not place. */
struct dp_punt {
	__u32 vni;
	__u32 ifindex;                       /* host side of the endpoint that sent it */
	__u32 reason;                        /* enum dp_punt_reason */
	__u32 len;                           /* bytes of frame[] in use: the whole frame */
	__u64 ts_ns;                         /* dp_now_ns() when punted; old ones are dropped */
	__u8 frame[DP_PUNT_FRAME_MAX];
};

#include "dp_abi_meters.h"
#endif /* DP_ABI_H */
