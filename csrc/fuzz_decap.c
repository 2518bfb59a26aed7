/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_decap.c - feeds dpw_decap() and dpw_flow_hash() frames read from
 * stdin (records: 4-byte little-endian length, then the bytes), each in a
 * heap buffer of exactly its length, so AddressSanitizer sees any read past
 * the end. Prints how many frames decoded, were refused and were not ours.
 * Built and run by tests/unit/test_cdecode_asan.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpwire.h"

int main(int argc, char **argv)
{
	unsigned long ok = 0, refused = 0, not_ours = 0;
	uint32_t local_ip = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 0;
	unsigned char hdr[4];

	while (fread(hdr, 1, 4, stdin) == 4) {
		uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
		struct dpw_decap_result r;
		uint8_t *buf = malloc(len ? len : 1);
		int ret;

		if (!buf || fread(buf, 1, len, stdin) != len)
			return 2;
		ret = dpw_decap(buf, len, local_ip, 4789, &r);
		if (ret == 0) {
			volatile uint8_t sink = 0;

			ok++;
			for (uint32_t i = 0; i < r.inner_len; i++)  /* touch every inner byte it claims */
				sink ^= buf[r.inner_off + i];
			(void)sink;
		} else if (ret == dpw_not_ours()) {
			not_ours++;
		} else {
			refused++;
		}
		(void)dpw_flow_hash(buf, len);
		free(buf);
	}
	printf("ok=%lu refused=%lu not_ours=%lu\n", ok, refused, not_ours);
	return 0;
}
