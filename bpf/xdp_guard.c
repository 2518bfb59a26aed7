/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */

#include "lib/all.h"
/*
 * xdp_guard.c - XDP on the uplink: drops malformed VXLAN, unknown VNIs,
 * owned MACs from the wrong VTEP and (with the peer check) unknown VTEPs
 * before an skb exists. It never forwards;
 * decapsulation stays in tc, where GRO has already merged the flow.
 */

int xdp_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct dp_config *cfg = config_get();
	__be32 owner;
	struct vx_info vx = {};
	__u32 slot = 0;
	int ret;

	if (!cfg)
		return XDP_PASS;
	ret = vxlan_parse_cfg(data, end, end - data, cfg, &vx);
	if (ret == 0)
		ret = vxlan_admit(cfg, local_gen(), fdb_gen(), &vx, &slot, &owner);
	if (ret < 0) {
		count_drop(drop_slot(slot, vx.vni), -ret);
		return XDP_DROP;
	}
	return XDP_PASS;
}
