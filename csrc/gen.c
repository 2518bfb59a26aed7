/* SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE
/*
 * gen.c - packet generator and counter for the packet-rate benchmarks:
 * AF_PACKET, batches of DPW_BATCH frames per sendmmsg/recvmmsg, bypassing
 * the qdisc. Bounded by its arguments: a packet count, a duration and a rate.
 * Both return 0 or -errno and fill *st.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include "dpwire.h"

#define DPW_BATCH 64
#define DPW_FRAME_MAX 2048

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int packet_socket(int ifindex, int proto)
{
	struct sockaddr_ll sll;
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons((uint16_t)proto));

	if (fd < 0)
		return -errno;
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons((uint16_t)proto);
	sll.sll_ifindex = ifindex;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* One iovec per buffer; fill != NULL: each buffer starts as a copy of it. */
static void batch_init(struct mmsghdr *msgs, struct iovec *iov, uint8_t (*bufs)[DPW_FRAME_MAX],
		       const uint8_t *fill, uint32_t len)
{
	memset(msgs, 0, sizeof(*msgs) * DPW_BATCH);
	for (int i = 0; i < DPW_BATCH; i++) {
		if (fill)
			memcpy(bufs[i], fill, len);
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
}

/*
 * Send copies of frame (an Ethernet frame carrying IPv4/UDP) out of ifindex.
 * flows > 1 rewrites the inner UDP source port of each copy over that many
 * values (the UDP checksum must be zero), so receivers see several flows.
 */
int dpw_gen_send(int ifindex, const uint8_t *frame, uint32_t len, uint32_t flows,
		 uint64_t max_packets, uint64_t duration_ns, uint64_t rate_pps, struct dpw_gen_stats *st)
{
	static uint8_t bufs[DPW_BATCH][DPW_FRAME_MAX];
	struct mmsghdr msgs[DPW_BATCH];
	struct iovec iov[DPW_BATCH];
	uint32_t sport_off = 14 + 20;
	uint64_t start, deadline, next_flow = 0;
	int one = 1, fd;

	memset(st, 0, sizeof(*st));
	if (len < 14 || len > DPW_FRAME_MAX || !max_packets || !duration_ns)
		return -EINVAL;
	if (flows > 1 && (len < 14 + 20 + 8 || frame[23] != 17 || (frame[14] & 0xf) != 5))
		return -EINVAL;
	fd = packet_socket(ifindex, 0);  /* protocol 0: send only, receive nothing */
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	batch_init(msgs, iov, bufs, frame, len);
	start = now_ns();
	deadline = start + duration_ns;
	while (st->packets < max_packets) {
		uint64_t t = now_ns();
		unsigned int n = DPW_BATCH;
		int sent;

		if (t >= deadline)
			break;
		if (rate_pps) {
			/* Packets allowed by now; wait for the budget of one more batch. */
			uint64_t allowed = (t - start) * rate_pps / 1000000000u;

			if (allowed <= st->packets) {
				struct timespec ts = { 0, 20000 };

				nanosleep(&ts, NULL);
				continue;
			}
			if (allowed - st->packets < n)
				n = (unsigned int)(allowed - st->packets);
		}
		if (max_packets - st->packets < n)
			n = (unsigned int)(max_packets - st->packets);
		if (flows > 1) {
			for (unsigned int j = 0; j < n; j++) {
				uint16_t port = htons((uint16_t)(10000 + next_flow++ % flows));

				memcpy(bufs[j] + sport_off, &port, 2);
			}
		}
		sent = sendmmsg(fd, msgs, n, MSG_DONTWAIT);
		if (sent < 0) {
			if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR)
				st->errors++;
			continue;
		}
		st->packets += (uint64_t)sent;
		st->bytes += (uint64_t)sent * len;
	}
	st->elapsed_ns = now_ns() - start;
	close(fd);
	return 0;
}

/* Count frames arriving on ifindex for duration_ns. */
int dpw_gen_count(int ifindex, uint64_t duration_ns, struct dpw_gen_stats *st)
{
	static uint8_t bufs[DPW_BATCH][DPW_FRAME_MAX];
	struct mmsghdr msgs[DPW_BATCH];
	struct iovec iov[DPW_BATCH];
	uint64_t start, deadline;
	int fd, i, one = 1, rcvbuf = 64 << 20;

	memset(st, 0, sizeof(*st));
	fd = packet_socket(ifindex, ETH_P_ALL);
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	/* Only what arrives, not what this host sends out of the same interface. */
	setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	batch_init(msgs, iov, bufs, NULL, DPW_FRAME_MAX);
	start = now_ns();
	deadline = start + duration_ns;
	for (;;) {
		uint64_t t = now_ns();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int got;

		if (t >= deadline)
			break;
		if (poll(&p, 1, (int)((deadline - t) / 1000000u) + 1) <= 0)
			continue;
		got = recvmmsg(fd, msgs, DPW_BATCH, MSG_DONTWAIT, NULL);
		if (got <= 0)
			continue;
		st->packets += (uint64_t)got;
		for (i = 0; i < got; i++)
			st->bytes += msgs[i].msg_len;
	}
	st->elapsed_ns = now_ns() - start;
	close(fd);
	return 0;
}
