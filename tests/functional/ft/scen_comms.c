/*
 * Many comms: 64 comm pairs with interleaved traffic, several comms from one
 * listen comm, and whole listen/connect/accept/transfer/close lifecycles repeated.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft.h"

int scen_many_comms(struct ft *ft)
{
	static const size_t msz[] = {0, 1, 100, 4096, 9000, 65537, 150000};
	int npairs = MAX_PAIRS, rounds = 3, nmsg;
	struct pair *p = calloc(MAX_PAIRS, sizeof(*p));
	struct msg *m = calloc((size_t)MAX_PAIRS * 3, sizeof(*m));
	int rc = -1, opened = 0;

	if (!p || !m) {
		fail(ft, "out of memory");
		goto out;
	}
	if (ft->props.maxComms > 0 && ft->props.maxComms < npairs) {
		fail(ft, "the device reports maxComms=%d, fewer than %d", ft->props.maxComms, npairs);
		goto out;
	}
	opened = 1;
	if (pairs_open(ft, p, npairs, 0))
		goto out;
	nmsg = 0;
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < npairs; k++) {
			int c = ft->rank == 0 ? k : npairs - 1 - k;
			m[nmsg++] = (struct msg){
				.comm = c, .tag = 3,
				.size = msz[(size_t)(c + r * 5) % (sizeof(msz) / sizeof(msz[0]))],
				.iter = (uint64_t)(r * 1000 + c)};
		}
	for (int i = 0; i < nmsg; i++)
		m[i].cap = m[i].size;
	/* The sender walks the comms in the opposite order: message i on rank 0
	 * and message i on rank 1 are different messages, but each comm sees the
	 * same sequence on both sides. */
	if (transfer_simple(ft, p, m, nmsg, "interleaved traffic on 64 comms"))
		goto out;
	if (ft_sync(ft))
		goto out;
	if (transfer_simple(ft, p, m, nmsg, "second pass"))
		goto out;
	rc = 0;
out:
	if (opened && pairs_close(ft, p, npairs))
		rc = -1;
	free(p);
	free(m);
	return rc;
}

enum { REUSE_K = 4, REUSE_CYCLES = 20 };

/* Part 1: one listen comm, K connections made one after the other with (a
 * fresh copy of) the same handle, then traffic on all of them. */
static int reuse_one_listen(struct ft *ft, struct pair *p)
{
	enum { K = REUSE_K };
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	struct msg m[2 * K];
	void *lcomm = NULL;
	int rc = -1;

	ft->phase = "several comms from one listen comm";
	g_step = "listen";
	if (ft->rank == 0) {
		ncclResult_t r = pl_listen(ft->net, ft->dev, handle, &lcomm);
		if (r != ncclSuccess || !lcomm) {
			fail(ft, "listen returned %d (%s)", (int)r, pl_result_str(r));
			goto out;
		}
		if (ft_send(ft, handle, sizeof(handle)))
			goto out;
	} else if (ft_recv(ft, handle, sizeof(handle))) {
		goto out;
	}
	for (int k = 0; k < K; k++) {
		p[k].lcomm = lcomm;
		memcpy(p[k].handle, handle, sizeof(handle));
		if (connect_all(ft, &p[k], 1, 0))
			goto out;
		p[k].lcomm = NULL;
		if (ft_sync(ft))
			goto out;
	}
	for (int k = 0; k < K; k++) {
		m[k] = (struct msg){.comm = k, .size = 1000u * (unsigned)(k + 1) + (unsigned)k,
				    .tag = 4, .iter = (uint64_t)k};
		m[K + k] = (struct msg){.comm = k, .size = 300000 + (size_t)k, .tag = 4,
					.iter = (uint64_t)(K + k)};
	}
	for (int i = 0; i < 2 * K; i++)
		m[i].cap = m[i].size;
	if (transfer_simple(ft, p, m, 2 * K, "K comms from one listen comm"))
		goto out;
	if (pairs_close(ft, p, K))
		goto out;
	if (lcomm) {
		g_step = "closeListen";
		ncclResult_t r = pl_close_listen(ft->net, lcomm);
		lcomm = NULL;
		if (r != ncclSuccess) {
			fail(ft, "closeListen returned %d (%s)", (int)r, pl_result_str(r));
			goto out;
		}
	}
	rc = 0;
out:
	if (rc)
		pairs_close(ft, p, K); /* the comms first, then their listen comm */
	if (lcomm)
		pl_close_listen(ft->net, lcomm);
	return rc;
}

/* Part 2: whole lifecycles, repeated. */
static int reuse_cycles(struct ft *ft, struct pair *p)
{
	ft->phase = "listen/connect/accept/transfer/close cycles";
	for (int c = 0; c < REUSE_CYCLES; c++) {
		struct msg m[2] = {
			{.comm = 0, .size = (size_t)(c * 4099) % 70000 + (size_t)c, .tag = 5,
			 .iter = 500u + (uint64_t)c},
			{.comm = 0, .size = (size_t)c * 37, .tag = 5, .iter = 600u + (uint64_t)c},
		};
		char what[48];
		m[0].cap = m[0].size;
		m[1].cap = m[1].size + 10;
		snprintf(what, sizeof(what), "cycle %d", c);
		if (pairs_open(ft, p, 1, c % 2))
			return -1;
		if (transfer_simple(ft, p, m, 2, what))
			return -1;
		if (pairs_close(ft, p, 1))
			return -1;
	}
	return 0;
}

int scen_reuse(struct ft *ft)
{
	struct pair p[REUSE_K];
	int rc = -1;

	memset(p, 0, sizeof(p));
	if (!reuse_one_listen(ft, p) && !reuse_cycles(ft, p))
		rc = 0;
	pairs_close(ft, p, REUSE_K);
	return rc;
}
