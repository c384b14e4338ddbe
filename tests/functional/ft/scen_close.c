/*
 * close: every close path, each as its own part: either side first, the
 * listen comm first or unused, deregMr after close, closing with receives
 * outstanding and with a send in flight, then a fresh connection that works.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <string.h>

#include "ft.h"

/* close: every close path, each as its own part. */
static int close_order(struct ft *ft, const void *arg)
{
	int send_first = *(const int *)arg;
	struct pair p;
	struct msg m = {.comm = 0, .size = 5000, .cap = 5000, .tag = 6, .iter = 7};

	if (pairs_open(ft, &p, 1, 0) || transfer_simple(ft, &p, &m, 1, "transfer before close")) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	/* the first closer closes, then the other */
	if ((ft->rank == 1) == send_first) {
		if (close_comm(ft, p.comm))
			return -1;
		p.comm = NULL;
		if (ft_sync(ft))
			return -1;
	} else {
		if (ft_sync(ft))
			return -1;
		if (close_comm(ft, p.comm))
			return -1;
		p.comm = NULL;
	}
	return pairs_close(ft, &p, 1); /* the listen comm, last */
}

static int close_listen_first(struct ft *ft, const void *arg)
{
	struct pair p;
	struct msg m = {.comm = 0, .size = 20000, .cap = 20000, .tag = 6, .iter = 8};

	(void)arg;
	/* pairs_open closes the listen comm right after accept */
	if (pairs_open(ft, &p, 1, 1) || transfer_simple(ft, &p, &m, 1, "transfer after closeListen")) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	return pairs_close(ft, &p, 1);
}

static int close_listen_unused(struct ft *ft, const void *arg)
{
	uint8_t h[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL;

	(void)arg;
	for (int i = 0; i < 3; i++) {
		g_step = "listen";
		CALL(ft, pl_listen(ft->net, ft->dev, h, &l), "listen");
		if (!l)
			return fail(ft, "listen returned a NULL listen comm");
		g_step = "closeListen";
		CALL(ft, pl_close_listen(ft->net, l), "closeListen of an unused listen comm");
	}
	return 0;
}

static int dereg_after_close(struct ft *ft, const void *arg)
{
	struct pair p;
	struct fbuf b;

	(void)arg;
	if (pairs_open(ft, &p, 1, 1))
		return -1;
	if (fbuf_alloc(ft, p.comm, 65536, &b)) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	if (pairs_close(ft, &p, 1)) {
		fbuf_free(ft, &b, 0);
		return -1;
	}
	return fbuf_free(ft, &b, 1); /* deregMr(closed comm, mhandle) */
}

/* close_outstanding, rank 0: posts all three irecvs, completes only the first,
 * and (in_flight) keeps testing the rest until the sender's large isend is
 * posted. */
static int close_out_receiver(struct ft *ft, struct xop *op, const struct fbuf *b,
			      const size_t *sz, int in_flight)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	uint8_t note = 0;

	for (int i = 0; i < 3; i++)
		while (!op[i].posted) {
			if (op_post(ft, &op[i]) || peer_failed(ft))
				return -1;
			if (now_ms() > deadline)
				return fail(ft, "irecv %d kept returning a NULL request", i);
		}
	if (ft_send(ft, &note, 1) || run_ops(ft, op, 1))
		return -1;
	if (check_recv(ft, "first message", &b[0], sz[0], 900, op[0].got[0]))
		return -1;
	if (in_flight) {
		/* keep progressing (not waiting for) the rest until the sender
		 * says its large isend is posted. The sender closes right after
		 * saying so: its CLOSE (the isend not sent in full) may be read
		 * before its note, and then fails these receives, as it should. */
		while (!ft->q && !ft->peer_done && !ft->peer_gone) {
			for (int i = 1; i < 3; i++) {
				int done = 0, sizes[MAX_GROUP];
				ncclResult_t r;
				if (op[i].done)
					continue;
				g_step = "test";
				r = pl_test(ft->net, op[i].req, &done, sizes);
				if (r == ncclRemoteError) {
					vnote("irecv #%d failed: the sender's CLOSE came before its note", i);
					op[i].done = 1;
					op[i].req = NULL;
				} else if (r != ncclSuccess) {
					return fail(ft, "test() on irecv #%d returned %d (%s)", i, (int)r,
						    pl_result_str(r));
				} else if (done) {
					op[i].done = 1;
					op[i].req = NULL;
				}
			}
			ctl_pump(ft, 0);
			sched_yield();
			if (now_ms() > deadline)
				return fail(ft, "the sender never reported its large isend posted");
		}
	}
	if (ft_recv(ft, &note, 1))
		return -1;
	vnote("closing the recv comm with %d receives outstanding", !op[1].done + !op[2].done);
	return 0;
}

/* close_outstanding, rank 1: sends the first message and (in_flight) posts the
 * 8 MiB isend, then tells the receiver. */
static int close_out_sender(struct ft *ft, struct xop *op, int in_flight)
{
	uint8_t note = 0;

	if (ft_recv(ft, &note, 1) || run_ops(ft, op, 1))
		return -1;
	if (in_flight) {
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		while (!op[1].posted) {
			if (op_post(ft, &op[1]) || peer_failed(ft))
				return -1;
			if (now_ms() > deadline)
				return fail(ft, "isend of the 8 MiB message kept returning a NULL "
					    "request although the receiver had posted it");
		}
		vnote("closing the send comm with the 8 MiB isend outstanding");
	}
	return ft_send(ft, &note, 1);
}

/*
 * Closing with requests outstanding. Rank 0 posts three irecvs (1000 B, 8 MiB,
 * 4 KiB); rank 1 sends the first. in_flight = 0: nothing else is sent, so
 * rank 0 closes with two irecvs pending and no data moving. in_flight = 1:
 * rank 1 also posts the 8 MiB isend and both ranks close at once while it
 * moves. Then deregMr of every buffer, after the close.
 */
static int close_outstanding(struct ft *ft, const void *arg)
{
	int in_flight = *(const int *)arg;
	struct pair p;
	struct fbuf b[3];
	size_t sz[3] = {1000, 8 * MiB, 4096};
	struct xop op[3];
	int rc = -1;

	memset(b, 0, sizeof(b));
	memset(op, 0, sizeof(op));
	memset(&p, 0, sizeof(p));
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (int i = 0; i < 3; i++) {
		if (fbuf_alloc(ft, p.comm, ft->rank == 0 ? sz[i] + CANARY_PAD : sz[i], &b[i]))
			goto out;
		if (ft->rank == 0)
			canary_fill(b[i].p, 0, b[i].cap);
		else
			pat_fill(b[i].p, sz[i], pat_key(ft->seed, sz[i], 900u + (unsigned)i));
		op[i] = (struct xop){.kind = ft->rank == 0 ? OP_RECV : OP_SEND, .comm = p.comm,
				     .n = 1, .data = {b[i].p}, .size = {sz[i]}, .tag = {8},
				     .mh = {b[i].mh}, .label = i};
	}
	if (ft->rank == 0 ? close_out_receiver(ft, op, b, sz, in_flight)
			  : close_out_sender(ft, op, in_flight))
		goto out;
	/* both ranks close now, concurrently */
	if (close_comm(ft, p.comm))
		goto out;
	p.comm = NULL;
	for (int i = 0; i < 3; i++) /* deregMr after the comm is closed */
		if (fbuf_free(ft, &b[i], 1))
			goto out;
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	for (int i = 0; i < 3; i++)
		fbuf_free(ft, &b[i], 0);
	return rc;
}

/* A fresh connection and transfer between the same two processes. */
static int still_works(struct ft *ft, const void *arg)
{
	struct pair q;
	struct msg m[2] = {{.comm = 0, .size = 4096, .cap = 4096, .tag = 9, .iter = 901},
			   {.comm = 0, .size = 300000, .cap = 300000, .tag = 9, .iter = 902}};

	(void)arg;
	if (pairs_open(ft, &q, 1, 1) || transfer_simple(ft, &q, m, 2, "new comm")) {
		pairs_close(ft, &q, 1);
		return -1;
	}
	return pairs_close(ft, &q, 1);
}

int scen_close(struct ft *ft)
{
	static const int yes = 1, no = 0;

	sub(ft, "closeSend before closeRecv", close_order, &yes);
	sub(ft, "closeRecv before closeSend", close_order, &no);
	sub(ft, "closeListen before the comms", close_listen_first, NULL);
	sub(ft, "closeListen without accept", close_listen_unused, NULL);
	sub(ft, "deregMr after close", dereg_after_close, NULL);
	sub(ft, "close with irecvs outstanding, nothing in flight", close_outstanding, &no);
	sub(ft, "new connection after closing with irecvs outstanding", still_works, NULL);
	sub(ft, "close with an 8 MiB isend in flight and irecvs outstanding",
	    close_outstanding, &yes);
	sub(ft, "new connection after closing with an isend in flight", still_works, NULL);
	return 0;
}
