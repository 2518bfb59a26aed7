/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * parse.h - classification of frames arriving on the uplink, shared by the
 * tc program (from_overlay) and the XDP guard so both judge a frame alike:
 * the parser proper (wire.h), then the policy that needs the maps.
 */
#ifndef DP_PARSE_H
#define DP_PARSE_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/local.h"

/* vxlan_parse() and struct vx_info live in wire.h: the C helper runs the same parser. */
static __always_inline int vxlan_parse_cfg(void *data, void *end, __u32 pkt_len,
					   const struct dp_config *cfg, struct vx_info *vx)
{
	return vxlan_parse(data, end, pkt_len, cfg->local_ip, cfg->port, vx);
}

/*
 * Where a dropped uplink frame is counted: slot, when vxlan_admit set it; else
 * the slot of the frame's VNI if we serve it; else 0 (no VNI). Drop path only.
 */
static __always_inline __u32 drop_slot(__u32 slot, __u32 vni)
{
	struct dp_network *net;

	if (slot || !vni)
		return slot;
	net = dp_networks.lookup(&vni);
	return net ? net->slot : 0;
}

/*
 * Policy on a well-formed VXLAN frame: known VNI, known sender, sane inner source.
 * *slot: the VNI's counters, set once the VNI is known to be ours.
 * *owner: the VTEP of the inner source MAC's static dp_fdb entry, or 0.
 * gen, fgen: local_gen() and fdb_gen(), read before this (local.h).
 * A MAC the registry places somewhere is owned, and its frames must come from
 * that VTEP (-DP_DROP_VTEP_MISMATCH): a sender that passes is known by the
 * entry itself, so the peer check (dp_vteps) is made only for unowned MACs.
 * One hash lookup less for the common frame; the admit is narrower, never wider,
 * than "any peer of the VNI".
 */
/*
 * An outer source no VTEP can have: ours, 0.0.0.0, loopback, multicast or broadcast. The IP
 * stack drops such martians, but tc runs before it: without the peer check an unowned MAC
 * was learned behind one, and this host's frames to it were sent there.
 */
static __always_inline int vtep_impossible(__be32 saddr, __be32 local)
{
	__u32 a = bpf_ntohl(saddr);

	return saddr == local || a == 0 || (a >> 24) == 127 || a >= 0xe0000000;
}

static __always_inline int vxlan_admit(const struct dp_config *cfg, __u64 gen, __u64 fgen,
				       const struct vx_info *vx, __u32 *slot, __be32 *owner)
{
	__u32 vni = vx->vni;
	struct dp_network *net = local_network(vni, gen);
	struct dp_mac_key mk = { .vni = vni };
	__be32 vtep;

	if (!net)
		return -DP_DROP_UNKNOWN_VNI;
	*slot = net->slot;
	mac_copy(mk.mac, vx->inner.h_source);
	vtep = static_vtep(&mk, fgen);
	*owner = vtep;
	if (vtep) {
		if (vtep != vx->saddr)
			return -DP_DROP_VTEP_MISMATCH;
	} else if (cfg->flags & DP_CFG_PEER_CHECK) {
		if (!vtep_is_peer(vni, vx->saddr, gen))
			return -DP_DROP_UNKNOWN_PEER;
	} else if (vtep_impossible(vx->saddr, cfg->local_ip)) {
		return -DP_DROP_UNKNOWN_PEER;
	}
	if (mac_is_multicast(vx->inner.h_source) || mac_is_zero(vx->inner.h_source))
		return -DP_DROP_BAD_INNER_SMAC;
	return 0;
}

#endif /* DP_PARSE_H */
