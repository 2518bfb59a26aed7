/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */

#include "lib/all.h"
/*
 * from_overlay.c - tc ingress on the uplink: everything that is not VXLAN to
 * our address and port goes on to the host untouched. Ours is checked (peer,
 * inner ethertype, ARP against dp_neigh, inner source against the registry's
 * VTEP for it), its inner source learned, decapsulated, trimmed to the outer
 * UDP length and put straight into the sandbox.
 */

static __always_inline int deliver_inner(struct __sk_buff *skb, const struct dp_config *cfg, __u64 gen,
					 __u32 vni, __u32 slot, const struct vx_info *vx, int inner_is_ip)
{
	struct dp_mac_key k = { .vni = vni };
	__u32 oif;

	if (mac_is_multicast(vx->inner.h_dest))
		return flood_tail(skb, DP_TAIL_FLOOD_OVERLAY, vni, vx->inner_len, 0);
	mac_copy(k.mac, vx->inner.h_dest);
	oif = local_port(&k, gen);
	if (!oif)
		return -DP_DROP_UNKNOWN_DST;
	if ((oif & DP_LOCAL_ROUTER) && inner_is_ip && vxlan_via_router(skb, cfg))
		return -DP_DROP_TUNNEL_VIA_GATEWAY;  /* a peer's VXLAN, relayed from this host's address */
	if (oif & DP_LOCAL_ALIAS) {          /* to the router's host address (router.h) */
		int ret = router_take(skb, local_port_ifindex(oif), gen);

		if (ret)
			return ret;
	}
	STAT_ADD(slot, rx_packets, rx_bytes, vx->inner_len);
	if (oif & DP_LOCAL_ROUTER)           /* a gateway port: out of it, to its peer beside it */
		return bpf_redirect(local_port_ifindex(oif), 0);
	/* Non-IP frames go through the veth so the sandbox re-parses skb->protocol. */
	return inner_is_ip ? bpf_redirect_peer(oif, 0) : bpf_redirect(oif, 0);
}

static __always_inline int handle_from_overlay(struct __sk_buff *skb, __u32 *vni_out, __u32 *slot_out)
{
	struct dp_config *cfg = config_get();
	__be32 owner = 0;
	__u64 gen, fgen;
	struct vx_info vx = {};
	void *data, *end;
	int inner_is_ip;
	__u64 flags;
	int ret;

	/* A frame with its VLAN tag in the skb's metadata (taken out by the NIC or the stack)
	 * belongs to that VLAN's interface, not to the uplink: the kernel delivers or drops it.
	 * Decapsulating it would take VXLAN from any VLAN, the tag kept into the sandbox. */
	if (!cfg || skb->vlan_present)
		return DP_PASS;
	ret = cold_probe();                  /* benchmarks only (lib/probe.h); nothing without its flag */
	if (ret)
		return ret;
	/* Outer headers (IPv4 options included) and inner Ethernet must be in the linear head. */
	skb_ensure_head(skb, ETH_HLEN + 60 + 16 + ETH_HLEN);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;

	ret = vxlan_parse_cfg(data, end, skb->len, cfg, &vx);
	if (ret)
		return ret;
	*vni_out = vx.vni;
	/* Only for our frames (the host's own traffic passes above), before the maps they stand for (local.h). */
	gen = local_gen();
	fgen = fdb_gen();
	ret = vxlan_admit(cfg, gen, fgen, &vx, slot_out, &owner);
	if (ret)
		return ret;

	/* The network carries IPv4 and ARP; ARP is checked against dp_neigh first. */
	inner_is_ip = vx.inner.h_proto == bpf_htons(ETH_P_IP);
	/* Less than an IPv4 header: refused before it teaches anything (decapsulation would
	 * refuse it too, counted as a helper failure). */
	if (inner_is_ip && vx.inner_len < ETH_HLEN + sizeof(struct iphdr))
		return -DP_DROP_TRUNCATED;
	if (!inner_is_ip) {
		if (vx.inner.h_proto != bpf_htons(ETH_P_ARP))
			return -DP_DROP_UNSUPPORTED_L3;
		ret = arp_from_overlay(skb, &vx);
		if (ret)
			return ret;
	}
	if (!owner) {
		ret = fdb_learn(cfg, gen, vx.vni, *slot_out, vx.inner.h_source, vx.saddr);
		if (ret)
			return ret;
	}
	/* A broadcast's copies are charged to the network's meter before it is decapsulated (flood.h):
	 * after the checks that would drop it anyway, and after learning (a gratuitous ARP still moves
	 * its MAC), which has a budget of its own. */
	if (mac_is_multicast(vx.inner.h_dest)) {
		struct dp_network *net = local_network(vx.vni, gen);

		ret = net ? overlay_storm_check(cfg, vx.vni, *slot_out, vx.saddr, net->n_local) : 0;
		if (ret)
			return ret;
	}

	flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (inner_is_ip)
		flags |= DP_ADJ_ROOM_DECAP_L3_IPV4;
	/* Removes outer IPv4/UDP/VXLAN and the inner Ethernet header; the outer one stays. */
	if (bpf_skb_adjust_room(skb, -(int)(vx.inner_off & 0xff), BPF_ADJ_ROOM_MAC, flags))
		return -DP_DROP_HELPER;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > end)
		return -DP_DROP_HELPER;
	__builtin_memcpy(data, &vx.inner, ETH_HLEN);
	/* Bytes after the outer UDP length (padding, or smuggled) are not the inner frame's. */
	if (skb->len > vx.inner_len && bpf_skb_change_tail(skb, vx.inner_len, 0))
		return -DP_DROP_HELPER;

	return deliver_inner(skb, cfg, gen, vx.vni, *slot_out, &vx, inner_is_ip);
}

int from_overlay(struct __sk_buff *skb)
{
	__u32 vni = 0, slot = 0;
	int ret = handle_from_overlay(skb, &vni, &slot);

	return tc_exit(skb, ret < 0 ? drop_slot(slot, vni) : slot, ret);
}

/* tcx ingress on the receive-GRO device (node/rxgro.py), a vxlan device that is there only
 * for its UDP socket's GRO: what the socket decapsulated is VXLAN from_overlay let by (to
 * another address of the host), and none of it may reach the host stack. */
int gro_sink(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}
