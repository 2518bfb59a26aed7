/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * stats.h - per-VNI, per-CPU counters (the single exit of each program,
 * which counts drops, is in monitor.h).
 * Counters are found by the network's slot (dp_network.slot, dp_endpoint.slot),
 * an array index: no hash lookup per packet. Slot 0 collects what has no VNI.
 */
#ifndef DP_STATS_H
#define DP_STATS_H

#include "lib/common.h"
#include "lib/maps.h"

_Static_assert(DP_DROP_MAX <= DP_DROP_SLOTS, "dp_stats.drops too small for enum dp_drop");

static __always_inline struct dp_stats *stats_get(__u32 slot)
{
	return dp_stats.lookup(&slot);
}

static __always_inline void count_drop(__u32 slot, int reason)
{
	struct dp_stats *s = stats_get(slot);

	__u32 r = reason;

	if (!s)
		return;
	if (r >= DP_DROP_MAX)
		r = DP_DROP_UNSPEC;
	/* clang may hoist the address above the test; the mask is a bound it cannot drop. */
	s->drops[r & (DP_DROP_SLOTS - 1)]++;
}

#define STAT_ADD(slot, pk, by, len)                   \
	do {                                          \
		struct dp_stats *__s = stats_get(slot); \
		if (__s) {                            \
			__s->pk++;                    \
			__s->by += (len);             \
		}                                     \
	} while (0)

#endif /* DP_STATS_H */
