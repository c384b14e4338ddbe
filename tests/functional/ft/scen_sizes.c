/*
 * Messages of every shape on one comm: sizes from 0 bytes to 64 MiB, receive
 * buffers larger than the message, 32 requests outstanding, grouped receives
 * (n = 2, 3, 8) whose messages are sent in a shuffled order.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <string.h>

#include "ft.h"

int scen_sizes(struct ft *ft)
{
	static const size_t sizes[] = {0, 1, 7, 4095, 4096, 65537, MiB, 64 * MiB + 3};
	struct pair p;
	int rc = -1;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = sizes[i], .cap = sizes[i], .tag = 1, .iter = i};
		char what[64];
		if (sizes[i] > ft->props.maxP2pBytes) {
			vnote("skipping %zu bytes: maxP2pBytes is %zu", sizes[i], ft->props.maxP2pBytes);
			continue;
		}
		snprintf(what, sizeof(what), "%zu-byte message", sizes[i]);
		if (transfer_simple(ft, &p, &m, 1, what))
			goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

int scen_larger_recv(struct ft *ft)
{
	static const struct { size_t cap, size; } c[] = {
		{MiB, 1000}, {64 * 1024, 65536 - 5}, {8192, 0}, {4096, 1},
		{MiB, MiB - 1}, {4 * MiB, 70000}, {200000, 131072},
	};
	struct msg m[sizeof(c) / sizeof(c[0])];
	struct pair p;
	int rc = -1;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		m[i] = (struct msg){.comm = 0, .size = c[i].size, .cap = c[i].cap, .tag = 2,
				    .iter = 100 + i};
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	/* one at a time, then all at once */
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char what[96];
		snprintf(what, sizeof(what), "send %zu into %zu", c[i].size, c[i].cap);
		if (transfer_simple(ft, &p, &m[i], 1, what))
			goto out;
	}
	if (transfer_simple(ft, &p, m, (int)(sizeof(c) / sizeof(c[0])), "all outstanding"))
		goto out;
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

int scen_outstanding(struct ft *ft)
{
	static const size_t mix[] = {0, 1, 512, 4096, 8192, 8193, 65536, 300000, MiB + 17,
				     2 * MiB, 33, 100000};
	struct msg m[NCCL_NET_MAX_REQUESTS];
	struct pair p;
	int rc = -1;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (int round = 0; round < 3; round++) {
		char what[64];
		for (int i = 0; i < NCCL_NET_MAX_REQUESTS; i++) {
			size_t s = mix[(size_t)(i * 5 + round) % (sizeof(mix) / sizeof(mix[0]))];
			m[i] = (struct msg){.comm = 0, .size = s, .cap = s, .tag = 1000 + i,
					    .iter = (uint64_t)(round * 100 + i)};
		}
		snprintf(what, sizeof(what), "round %d of 32 outstanding", round);
		if (transfer_simple(ft, &p, m, NCCL_NET_MAX_REQUESTS, what))
			goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

int scen_grouped(struct ft *ft)
{
	static const size_t gsz[] = {0, 5, 70000, 4096, 0, 200000, 13, MiB, 65537, 1};
	static const int ns[] = {2, 3, 8};
	struct pair p;
	int rc = -1, ran = 0;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		int n = ns[k];
		if (n > ft->props.maxRecvs) {
			vnote("skipping n=%d: maxRecvs is %d", n, ft->props.maxRecvs);
			if (ft->rank == 0)
				printf("# grouped: n=%d skipped, the device reports maxRecvs=%d\n", n,
				       ft->props.maxRecvs);
			continue;
		}
		for (int round = 0; round < 4; round++) {
			struct msg m[MAX_GROUP];
			int start = 0, order[MAX_GROUP];
			char what[64];

			for (int j = 0; j < n; j++) {
				size_t s = gsz[(size_t)(j + round * 3 + n) % (sizeof(gsz) / sizeof(gsz[0]))];
				m[j] = (struct msg){.comm = 0, .size = s,
						    .cap = s + ((j + round) % 2 ? 0 : 1000),
						    .tag = 7 + 13 * j + round, .iter = 1000u + (uint64_t)(round * 16 + j)};
			}
			shuffle(order, n, ft->seed ^ (uint64_t)(n * 100 + round));
			snprintf(what, sizeof(what), "n=%d round %d", n, round);
			if (transfer(ft, &p, m, n, &start, 1, order, what))
				goto out;
		}
		ran++;
	}
	if (!ran) {
		fail(ft, "the device reports maxRecvs=%d: no grouped receive could run",
		     ft->props.maxRecvs);
		goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}
