/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * local.h - the lookups every frame makes, through per-CPU copies: the
 * endpoint behind an ingress ifindex, a {VNI, MAC}'s local port (or that it
 * has none), a VNI's network, whether a VTEP is one of the VNI's peers, and a
 * {VNI, MAC}'s static FDB entry (or that it has none; under its own
 * generation, dp_fdb_gen, as dp_fdb changes with every registry update). A
 * copy is an array lookup, which the verifier inlines; the hash map's is a
 * function call (30-45 ns a frame on a guest with SRSO's safe RET). A copy is
 * good while its generation map (dp_local_gen, dp_fdb_gen) still holds the
 * value it was made under: the control plane writes a new random value there
 * after every change to a map it stands for (COPIED in kernel/maps.py; fdb.h's
 * two copies of learned entries ride on dp_local_gen too). The caller reads
 * the generation once, before any of the maps, so a copy made from a map read
 * older than a change carries an older generation too (x86 keeps loads in
 * order). Two keys that share a slot take turns. Generation 0 (nothing
 * written yet): no copies.
 */
#ifndef DP_LOCAL_H
#define DP_LOCAL_H

#include "lib/common.h"
#include "lib/maps.h"

/* -DDP_NO_COPIES (benchmarks only: bench/progcost.py): generation 0 always, no copies. */
static __always_inline __u64 gen_value(const __u64 *g)
{
#ifdef DP_NO_COPIES
	return 0;
#endif
	return g ? *g : 0;
}

static __always_inline __u64 local_gen(void)
{
	__u32 zero = 0;

	return gen_value(dp_local_gen.lookup(&zero));
}

static __always_inline __u64 fdb_gen(void)
{
	__u32 zero = 0;

	return gen_value(dp_fdb_gen.lookup(&zero));
}

/* dp_endpoints[ifindex] */
static __always_inline struct dp_endpoint *local_endpoint(__u32 ifindex, __u64 gen)
{
	__u32 idx = ifindex & (DP_MAP_LOCAL_COPIES - 1);
	struct dp_ep_copy *c = gen ? dp_ep_copies.lookup(&idx) : NULL;
	struct dp_endpoint *ep;

	if (c && c->gen == gen && c->ifindex == ifindex)
		return &c->ep;
	ep = dp_endpoints.lookup(&ifindex);
	if (ep && c) {
		__builtin_memcpy(&c->ep, ep, sizeof(c->ep));
		c->ifindex = ifindex;
		c->gen = gen;
	}
	return ep;
}

/*
 * A {VNI, MAC} key's slot in the copies: the words (VNI; MAC bytes 0-3; 4-5)
 * spread apart by two odd multipliers, then one MurmurHash3 finaliser. It was
 * a finaliser per word, three in a chain; a frame takes three to four of these
 * slots (BPF_PROG_TEST_RUN: 7-24 ns less a run on the learned and owned paths;
 * docs/DESIGN.md). A collision only makes two keys take turns in a slot.
 */
static __always_inline __u32 mac_key_slot(const struct dp_mac_key *k)
{
	const __u32 *w = (const __u32 *)k;

	return dp_fmix32((w[0] * 0x9e3779b1u) ^ w[1] ^ (w[2] * 0x85ebca77u)) & (DP_MAP_LOCAL_COPIES - 1);
}

static __always_inline int mac_key_eq(const struct dp_mac_key *a, const struct dp_mac_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

/* A dp_local_macs value's interface, without its flags (DP_LOCAL_ROUTER, DP_LOCAL_ALIAS). */
static __always_inline __u32 local_port_ifindex(__u32 oif)
{
	return oif & ~(DP_LOCAL_ROUTER | DP_LOCAL_ALIAS);
}

/* dp_local_macs[k], or 0 for a MAC that is no local endpoint's */
static __always_inline __u32 local_port(const struct dp_mac_key *k, __u64 gen)
{
	__u32 idx = mac_key_slot(k);
	struct dp_mac_copy *c = gen ? dp_mac_copies.lookup(&idx) : NULL;
	__u32 *oif;

	if (c && c->gen == gen && mac_key_eq(&c->key, k))
		return c->oif;
	oif = dp_local_macs.lookup(k);
	if (c) {
		__builtin_memcpy(&c->key, k, sizeof(c->key));
		c->oif = oif ? *oif : 0;
		c->gen = gen;
	}
	return oif ? *oif : 0;
}

/* dp_fdb[k].vtep, or 0 for a MAC with no static entry; gen: fdb_gen(), read first */
static __always_inline __be32 static_vtep(const struct dp_mac_key *k, __u64 gen)
{
	__u32 idx = mac_key_slot(k);
	struct dp_fdb_copy *c = gen ? dp_fdb_copies.lookup(&idx) : NULL;
	struct dp_fdb_entry *e;

	if (c && c->gen == gen && mac_key_eq(&c->key, k))
		return c->vtep;
	e = dp_fdb.lookup(k);
	if (c) {
		__builtin_memcpy(&c->key, k, sizeof(c->key));
		c->vtep = e ? e->vtep : 0;
		c->gen = gen;
	}
	return e ? e->vtep : 0;
}

/* Is vtep one of the VNI's peers (an entry in dp_vteps)? The peer check on arrival. */
static __always_inline int vtep_is_peer(__u32 vni, __be32 vtep, __u64 gen)
{
	struct dp_ip_key k = { .vni = vni, .ip = vtep };
	__u32 idx = dp_fmix32((vni * 0x9e3779b1u) ^ vtep) & (DP_MAP_LOCAL_COPIES - 1);
	struct dp_vtep_copy *c = gen ? dp_vtep_copies.lookup(&idx) : NULL;
	int found;

	if (c && c->gen == gen && c->key.vni == vni && c->key.ip == vtep)
		return c->found;
	found = dp_vteps.lookup(&k) != NULL;
	if (c) {
		c->key = k;
		c->found = found;
		c->gen = gen;
	}
	return found;
}

/* dp_networks[vni] */
static __always_inline struct dp_network *local_network(__u32 vni, __u64 gen)
{
	__u32 idx = dp_fmix32(vni) & (DP_MAP_LOCAL_COPIES - 1);
	struct dp_net_copy *c = gen ? dp_net_copies.lookup(&idx) : NULL;
	struct dp_network *net;

	if (c && c->gen == gen && c->vni == vni)
		return c->found ? &c->net : NULL;
	net = dp_networks.lookup(&vni);
	if (c) {
		c->vni = vni;
		c->found = net != NULL;
		if (net)
			__builtin_memcpy(&c->net, net, sizeof(c->net));
		c->gen = gen;
	}
	return net;
}

#endif /* DP_LOCAL_H */
