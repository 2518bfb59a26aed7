/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testrun.c - BPF_PROG_TEST_RUN: run a loaded program on a buffer, as the
 * tests of bpf/ do. Returns 0 or -errno.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>

#include "dpwire.h"

int dpw_prog_test_run(int prog_fd, const uint8_t *data, uint32_t len, uint8_t *out, uint32_t out_cap,
		      const uint8_t *ctx, uint32_t ctx_len, uint8_t *ctx_out, uint32_t ctx_cap,
		      uint32_t repeat, struct dpw_test_run *res)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.test.prog_fd = (uint32_t)prog_fd;
	attr.test.data_in = (uint64_t)(uintptr_t)data;
	attr.test.data_size_in = len;
	attr.test.data_out = (uint64_t)(uintptr_t)out;
	attr.test.data_size_out = out_cap;
	attr.test.ctx_in = (uint64_t)(uintptr_t)ctx;
	attr.test.ctx_size_in = ctx ? ctx_len : 0;
	attr.test.ctx_out = (uint64_t)(uintptr_t)ctx_out;
	attr.test.ctx_size_out = ctx_out ? ctx_cap : 0;
	attr.test.repeat = repeat;
	if (syscall(__NR_bpf, BPF_PROG_TEST_RUN, &attr, sizeof(attr)) < 0)
		return -errno;
	res->retval = attr.test.retval;
	res->duration_ns = attr.test.duration;
	res->data_out_len = attr.test.data_size_out;
	res->ctx_out_len = attr.test.ctx_size_out;
	return 0;
}
