/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * fdb.h - where does {VNI, MAC} live: static entries first (the registry's
 * truth), then learned ones younger than the configured age; and which VTEP
 * may send a frame from it.
 */
#ifndef DP_FDB_H
#define DP_FDB_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/local.h"

/*
 * A learned entry through a per-CPU copy (dp_dst_copies): what this CPU last
 * found in dp_learned for k, good until the entry's age runs out and for no
 * more than DP_LEARN_REFRESH_NS after that lookup, so a move another CPU
 * learned is followed within that time, and at once when a frame from the
 * new VTEP reaches this CPU (fdb_learn retires the copy then). The
 * control plane's writes to dp_learned retire every copy (dp_local_gen); an
 * entry the LRU evicts, or a shorter fdb_age, reaches a copy within that
 * second too. gen: local_gen(), read before the maps.
 */
static __always_inline __be32 learned_vtep(struct dp_mac_key *k, const struct dp_config *cfg, __u64 gen)
{
	__u32 idx = mac_key_slot(k);
	struct dp_dst_copy *c = gen ? dp_dst_copies.lookup(&idx) : NULL;
	__u64 now = dp_now_ns(cfg);
	struct dp_fdb_entry *e;
	__u64 until;

	if (c && c->gen == gen && mac_key_eq(&c->key, k) && now < c->until_ns)
		return c->vtep;
	e = dp_learned.lookup(k);
	if (!e)
		return 0;
	/* Written as a sum: a stamp a tick ahead of the coarse clock must read as fresh. */
	until = e->last_seen_ns + cfg->fdb_age_ns;
	if (until <= now)
		return 0;
	if (c) {
		if (until > now + DP_LEARN_REFRESH_NS)
			until = now + DP_LEARN_REFRESH_NS;
		__builtin_memcpy(&c->key, k, sizeof(c->key));
		c->vtep = e->vtep;
		c->until_ns = until;
		c->gen = gen;
	}
	return e->vtep;
}

/* dp_fdb's entry for k (the registry's truth), else a fresh learned one; 0: neither */
static __always_inline __be32 fdb_lookup(struct dp_mac_key *k, const struct dp_config *cfg, __u64 gen, __u64 fgen)
{
	__be32 vtep = static_vtep(k, fgen);

	if (vtep)
		return vtep;
	return learned_vtep(k, cfg, gen);
}

/*
 * Learning budget: a MAC new to dp_learned is learned within the network's
 * rate, a GCRA meter per network (dp_net_meters by the counters' slot) as the
 * overlay storm meter. A peer, or a forger of its address, sending from random
 * source MACs churned the LRU map at line rate, pushing out what other hosts'
 * frames had taught, and wrote the map per frame. Over budget the frame is
 * still delivered, its source not learned and the refusal counted
 * (learn_limited): replies to it flood, under storm control. A MAC the map
 * holds grows nothing: its refresh and its move to another VTEP are free, so
 * a spent budget never keeps replies going to where a MAC was.
 */
static __always_inline int learn_allow(__u32 slot, __u64 now)
{
	__u32 zero = 0;
	struct dp_meters *mc = dp_meters.lookup(&zero);
	struct dp_net_meter *m;

	if (!mc || !mc->learn_interval_ns)
		return 1;
	m = dp_net_meters.lookup(&slot);
	if (!m)                              /* a slot past the map: no VNI has one */
		return 1;
	if (gcra_allow(&m->learn_tat, now, mc->learn_interval_ns, mc->learn_burst_ns, mc->learn_interval_ns))
		return 1;
	__sync_fetch_and_add(&m->learn_limited, 1);
	return 0;
}

/*
 * Learn where an unowned source {vni, smac} lives: vtep (within the network's
 * learning budget, above; slot: the network's counters). (Owned MACs, those the
 * registry or a static entry places, are vxlan_admit's: their frames must come
 * from the owner's VTEP and nothing is learned.) smac must not be one of our
 * own endpoints' (a remote frame claiming it is dropped: -DP_DROP_MAC_CONFLICT).
 * An unchanged learned entry is rewritten at most every DP_LEARN_REFRESH_NS so
 * a busy flow does not write the map per packet; a MAC that moved is rewritten
 * at once. Only a write is preceded by the check against dp_local_macs: an
 * entry that is fresh and unchanged was checked when it was written, and the
 * control plane deletes the learned entry of a MAC when it gives that MAC to a
 * local endpoint.
 * What this CPU last found or wrote (or was refused, above) is kept in a
 * per-CPU copy (local.h's way, under dp_local_gen, which the control plane's writes to dp_learned change
 * too: a MAC given to a local endpoint, an aged entry removed): until
 * the entry is due for its refresh, a frame from the same VTEP needs no lookup
 * at all. Another CPU's entry for a new VTEP is then overwritten no sooner
 * than the refresh, where it was at once: a MAC sending from two VTEPs flaps
 * the entry less often, and one that moved sends from the new VTEP, which
 * misses the copy.
 */
static __always_inline int fdb_learn(const struct dp_config *cfg, __u64 gen, __u32 vni, __u32 slot,
				     const __u8 *smac, __be32 vtep)
{
	struct dp_mac_key k = { .vni = vni };
	__u32 idx;
	struct dp_learn_copy *c;
	struct dp_fdb_entry *e;
	__u64 now;

	mac_copy(k.mac, smac);
	now = dp_now_ns(cfg);
	idx = mac_key_slot(&k);
	c = gen ? dp_learn_copies.lookup(&idx) : NULL;
	if (c && c->gen == gen && c->vtep == vtep && mac_key_eq(&c->key, &k) &&
	    now - c->seen_ns < DP_LEARN_REFRESH_NS)
		return 0;
	e = dp_learned.lookup(&k);
	if (e && e->vtep == vtep && now - e->last_seen_ns < DP_LEARN_REFRESH_NS) {
		now = e->last_seen_ns;           /* the copy lasts as long as the entry stays fresh */
	} else {
		if (local_port(&k, gen))
			return -DP_DROP_MAC_CONFLICT;
		/* New to the network and over its rate: delivered, not learned (counted in
		 * learn_allow); the copy below keeps this CPU from asking again for a second,
		 * unless it holds another source's fresh copy, which a spray of new MACs must
		 * not push out. */
		if (e || learn_allow(slot, now)) {
			struct dp_fdb_entry fresh = { .vtep = vtep, .last_seen_ns = now };

			dp_learned.update(&k, &fresh);
		} else if (c && c->gen == gen && !mac_key_eq(&c->key, &k) &&
			   now - c->seen_ns < DP_LEARN_REFRESH_NS) {
			return 0;
		}
	}
	/* Whoever wrote the move (this CPU now, or another before), this CPU's frames to the
	 * MAC go to the VTEP it sends from, from the next one on. */
	struct dp_dst_copy *d = dp_dst_copies.lookup(&idx);
	if (d && d->vtep != vtep && mac_key_eq(&d->key, &k))
		d->gen = 0;
	if (c) {
		__builtin_memcpy(&c->key, &k, sizeof(c->key));
		c->vtep = vtep;
		c->seen_ns = now;
		c->gen = gen;
	}
	return 0;
}

#endif /* DP_FDB_H */
