/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * probe.h - benchmarks only (bench/cold_lab.py): extra copy lookups that
 * measure what a lookup costs a cold run. -DDP_COLD_PROBE=N adds N reads of
 * dp_learn_copies slots far apart, their values summed so none can be left
 * out; with -DDP_COLD_PROBE_DEP each slot also depends on the value the read
 * before it returned, so the reads wait for each other as a frame's lookups
 * do. Without the flags this is nothing.
 */
#ifndef DP_PROBE_H
#define DP_PROBE_H

#include "lib/common.h"
#include "lib/maps.h"

#ifdef DP_COLD_PROBE
static __always_inline int cold_probe(void)
{
	__u64 acc = 0;

#pragma unroll
	for (int i = 0; i < DP_COLD_PROBE; i++) {
#ifdef DP_COLD_PROBE_DEP
		__u32 idx = (i * 613 + 7 + (__u32)(acc & 1)) & (DP_MAP_LOCAL_COPIES - 1);
#else
		__u32 idx = (i * 613 + 7) & (DP_MAP_LOCAL_COPIES - 1);
#endif
		struct dp_learn_copy *c = dp_learn_copies.lookup(&idx);

		if (c)
			acc += c->gen;
	}
	/* Never true in practice (generations are random 64-bit values): it keeps the sum used. */
	return acc == 0x1234567 ? -DP_DROP_HELPER : 0;
}
#else
static __always_inline int cold_probe(void)
{
	return 0;
}
#endif

#endif /* DP_PROBE_H */
